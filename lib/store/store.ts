import type { Etcd3, IKeyValue, IRangeResponse } from 'etcd3'
import { maxKeyBytes } from '../keys/strategy.js'
import { IDEMPOTENCY_TTL_SECONDS } from '../keys/idempotency.js'
import { parseQualifiedName } from '../keys/names.js'
import type { ApiKey } from '../keys/schemas.js'
import { EtcdKeys } from './key-builder.js'
import { LOAD_CALL_TIMEOUT, WatchCache, type CacheStatus, type CacheLog } from './cache/watch-cache.js'
import { keyPageFor } from './cache/reflector.js'
import { callWithin, translateEtcdError, type Deadline } from './calls.js'
import { namesDigest, parseRecord, readBatchFor, storedKey, type ReadRecord, type StoredKey, type StoredRecord } from './records.js'
import { createKey, deleteKey, updateKey, type CreateOptions, type Minter } from './transactions.js'
import { rotateKey, type RotateOptions } from './rotation.js'
import { countKeysOf, listAll, listPage, type ListOptions, type ListPage, type ListScope } from './list.js'
import { revokeAllOf } from './revoke.js'
import type { RangeRequest, StoreCore } from './core.js'
import { unobserved, type EtcdOperation, type StoreObserver } from './observer.js'
import { UsageRecorder, lastUseOf, withLastUse, type UsageLog } from './usage.js'
import { GroupCommit, type GroupedResult, type GroupedTxn } from './group-commit.js'

/**
 * Idempotency entries share a lease granted at most this often (as the Kubernetes API server
 * shares leases among events): one lease grant a minute, not one a create. An entry lives
 * 24 hours, or up to this much longer.
 */
const IDEMPOTENCY_LEASE_REUSE_SECONDS = 60

export interface StoreOptions {
  attemptTimeout?: number
  maxKeyBytes?: number
  /** The largest answer the client takes (its grpc.max_receive_message_length); default gRPC's (GRPC_DEFAULT_RECEIVE_BYTES). */
  receiveBytes?: number
  /** Serve reads from a watch-fed cache; each etcd call it makes has `callTimeout` ms. */
  cache?: { callTimeout: number, log: CacheLog }
  /** Told of every etcd call, and of the keys created and revoked (the plugin's metrics). */
  observer?: StoreObserver
  /** Record each key's last use (`last_used_at`, see usage.ts), written at most once an `interval` (ms) per key; absent, uses are not recorded. */
  usage?: { interval: number, callTimeout: number, log: UsageLog }
}

/** What a digest leads to: a live key, or why there is none that verifies. */
export type DigestLookup =
  | { key: StoredKey }
  | { key: null, why: 'unknown' | 'revoked' }

/**
 * Every etcd access of the plugin. Keys live at `<root>/apikeys/<namespace>/<name>` as JSON, and a
 * digest index at `<root>/apikey-digests/<sha256>` points at `<namespace>/<name>`; the two are
 * always written and deleted in one transaction. The writes are in transactions.ts, the walks in
 * list.ts, revoke-all in revoke.ts; here are the reads they share.
 */
/** `then` of a value that may come at once or later: at once stays at once (no promise on the cache's path). */
function whenRead<T, R> (value: T | Promise<T>, then: (value: T) => R): R | Promise<R> {
  return value instanceof Promise ? value.then(then) : then(value)
}

export class ApiKeyStore implements StoreCore {
  readonly client: Etcd3
  readonly keys: EtcdKeys
  /** The longest one attempt of a call may take; the request's deadline bounds them all. */
  private readonly attemptTimeout: number
  /** Keys per range read, so that a read of the largest keys stays under gRPC's message limit. */
  readonly readBatch: number
  /** The largest key (its JSON) that may be written: reads of whole batches depend on it. */
  readonly maxKeyBytes: number
  /** The lease idempotency entries are put on now, and until when it is handed out. */
  private idempotencyLease?: { id: string, reuseUntil: number }
  /** Where reads are served from when it can (see cache/); absent, every read goes to etcd. */
  private readonly cache?: WatchCache
  private readonly observer: StoreObserver
  private readonly usage?: UsageRecorder
  /** Creates, patches and deletes that arrive together share one etcd transaction. */
  private readonly writes: GroupCommit

  constructor (client: Etcd3, root: string, options: StoreOptions = {}) {
    this.client = client
    this.keys = new EtcdKeys(root)
    this.attemptTimeout = options.attemptTimeout ?? Infinity
    this.maxKeyBytes = options.maxKeyBytes ?? maxKeyBytes(64 * 1024)
    this.readBatch = readBatchFor(this.maxKeyBytes, options.receiveBytes)
    this.observer = options.observer ?? unobserved
    this.writes = new GroupCommit((request, deadline) => this.call('txn', deadline, callOptions => this.client.kv.txn(request, callOptions)))
    if (options.cache !== undefined) {
      const { callTimeout, log } = options.cache
      this.cache = new WatchCache(client, {
        range: request => this.rangeEtcd(request, Date.now() + callTimeout),
        load: request => this.client.kv.range({
          key: request.key, range_end: request.end, limit: request.limit, revision: request.revision, keys_only: request.keysOnly
        }, { deadline: new Date(Date.now() + LOAD_CALL_TIMEOUT) })
      }, { prefix: this.keys.plugin, ranged: [this.keys.records, this.keys.usageEntries], readBatch: this.readBatch, keyPage: keyPageFor(options.receiveBytes), log })
    }
    if (options.usage !== undefined) this.usage = new UsageRecorder(this, options.usage)
  }

  /** What the cache is doing; null without one. */
  cacheStatus (): CacheStatus | null {
    return this.cache?.status() ?? null
  }

  /** Starts filling the cache, if there is one; reads go to etcd until it follows etcd. */
  startCache (): void {
    this.cache?.start()
  }

  /** Writes the pending uses (by `deadline` at the latest), and stops the cache. */
  async close (deadline: Deadline): Promise<void> {
    await this.usage?.close(deadline)
    this.cache?.close()
  }

  /** A key authenticated now: its last use is written within the usage interval, not on this path. */
  recordUse (key: StoredKey): void {
    this.usage?.used(key)
  }

  /** Writes the pending uses now; for tests and shutdown. */
  async flushUses (): Promise<void> {
    await this.usage?.flush()
  }

  /** One etcd call within the request's deadline, with retries (see callWithin); the observer times each attempt. */
  call<T> (operation: EtcdOperation, deadline: Deadline, call: (options: { deadline: Date }) => Promise<T>): Promise<T> {
    return callWithin(deadline, this.attemptTimeout, call, (seconds, failed) => this.observer.etcdCall(operation, seconds, failed))
  }

  commitGrouped (txn: GroupedTxn, deadline: Deadline): Promise<GroupedResult> {
    return this.writes.commit(txn, deadline)
  }

  /**
   * A range read, from the cache when it can serve it, else from etcd. A revision from a client's
   * continue token (`fromToken`) is served from the cache only if the cache is still at it, and
   * only after a one-key read in etcd at that revision: only etcd knows whether it was compacted
   * (a 410) or not reached (a 400), and a one-key read says so without walking the range.
   */
  async range (request: RangeRequest, deadline: Deadline): Promise<IRangeResponse> {
    const cache = this.cache
    if (cache !== undefined) {
      let cached
      try {
        if (request.fromToken !== true) {
          cached = await cache.range(request, deadline)
        } else if (request.revision !== undefined && cache.holds(request.revision)) {
          await this.rangeEtcd({ key: this.keys.plugin, revision: request.revision }, deadline)
          cached = await cache.range(request, deadline)
        } else {
          cache.bypassed()
        }
      } catch (err) {
        throw translateEtcdError(err)
      }
      if (cached !== undefined) return cached
    }
    return await this.rangeEtcd(request, deadline)
  }

  private rangeEtcd (request: { key: string | Buffer, end?: Buffer, limit?: number, revision?: number }, deadline: Deadline): Promise<IRangeResponse> {
    return this.call('range', deadline, options => this.client.kv.range({
      key: Buffer.from(request.key),
      range_end: request.end,
      limit: request.limit,
      revision: request.revision
    }, options))
  }

  /** Checks that etcd answers at all; the plugin calls it at boot. */
  async ping (deadline: Deadline): Promise<void> {
    await this.rangeEtcd({ key: this.keys.records, limit: 1 }, deadline)
  }

  /** The key with its last use, or null when there is none or it was revoked. */
  async get (namespace: string, name: string, deadline: Deadline): Promise<StoredKey | null> {
    const record = await this.getLiveRecord(this.keys.record(namespace, name), deadline)
    if (record === null) return null
    const stored = storedKey(record)
    const lastUse = this.lastUse(record, deadline)
    return { ...stored, apiKey: withLastUse(stored.apiKey, typeof lastUse === 'object' ? await lastUse : lastUse) }
  }

  /** The record's last use, as etcd was when the record was read; undefined before its first. */
  private lastUse (record: ReadRecord, deadline: Deadline): number | undefined | Promise<number | undefined> {
    const { namespace, name } = record.value.metadata
    return whenRead(this.keyAsOf(this.keys.usage(namespace, name), record, deadline), kv => lastUseOf(kv, record.createRevision))
  }

  /**
   * One key as etcd held it when `record` was read (undefined: none). At once, with no promise,
   * while the cache is still at that revision (the record was read from it a moment ago); else
   * from etcd at that revision.
   */
  keyAsOf (key: string, record: ReadRecord, deadline: Deadline): IKeyValue | undefined | Promise<IKeyValue | undefined> {
    const cached = this.cache?.readAt(key, record.readAt)
    if (cached !== undefined) return cached ?? undefined
    return this.range({ key, revision: record.readAt }, deadline).then(res => res.kvs[0])
  }

  /** The record at `etcdKey`, now or at `revision`, revoked or not. */
  async getRecord (etcdKey: string, deadline: Deadline, revision?: number): Promise<ReadRecord | null> {
    const res = await this.range({ key: etcdKey, revision }, deadline)
    const kv = res.kvs[0]
    return kv
      ? { value: parseRecord(kv), revision: Number(kv.mod_revision), createRevision: Number(kv.create_revision), lease: String(kv.lease), readAt: Number(res.header.revision) }
      : null
  }

  /** The record at `etcdKey`, or null when there is none or a revocation fence revokes it. */
  async getLiveRecord (etcdKey: string, deadline: Deadline, revision?: number): Promise<ReadRecord | null> {
    const record = await this.getRecord(etcdKey, deadline, revision)
    if (record === null) return null
    const revoked = this.isRevoked(record, deadline)
    return (revoked === true || (revoked !== false && await revoked)) ? null : record
  }

  /**
   * Whether a revocation fence of the record's username, as etcd was when the record was read,
   * revokes it. At once (no promise) when the cache still holds that revision: the record was
   * read from it, a moment ago.
   */
  private isRevoked (record: ReadRecord, deadline: Deadline): boolean | Promise<boolean> {
    return whenRead(this.keyAsOf(this.keys.fence(record.value.username), record, deadline), fence => fence !== undefined && record.createRevision < Number(fence.mod_revision))
  }

  /**
   * The revision of `username`'s revocation fence (0 when it has none), now or at `revision`:
   * every key of that username created before it is revoked.
   */
  async fenceRevision (username: string, deadline: Deadline, revision?: number): Promise<number> {
    const res = await this.range({ key: this.keys.fence(username), revision }, deadline)
    const kv = res.kvs[0]
    return kv === undefined ? 0 : Number(kv.mod_revision)
  }

  /**
   * For one walk read at `revision`: is a record revoked? One fence read per username met, within
   * the deadline `deadline()` gives when that username is first met.
   */
  revocationsAt (revision: number, deadline: () => Deadline): (kv: IKeyValue, record: StoredRecord) => Promise<boolean> {
    const fences = new Map<string, Promise<number>>()
    return async (kv, record) => {
      let fence = fences.get(record.username)
      if (fence === undefined) {
        fence = this.fenceRevision(record.username, deadline(), revision)
        fences.set(record.username, fence)
      }
      return Number(kv.create_revision) < await fence
    }
  }

  /**
   * Revokes a lease nothing is attached to any more. Best effort and not awaited: it must not hold
   * an answer past its deadline, and an orphan lease only lingers until its TTL.
   */
  revokeLease (lease: string | undefined): void {
    if (lease === undefined || lease === '0') return
    const started = performance.now()
    const observe = (failed: boolean) => () => this.observer.etcdCall('lease_revoke', (performance.now() - started) / 1000, failed)
    this.client.leaseClient.leaseRevoke({ ID: lease }, { deadline: new Date(Date.now() + 5000) }).then(observe(false), observe(true))
  }

  /**
   * A lease that etcd lets expire at `expiresAt` (Unix seconds), so that it removes an expiring
   * key and its digest entry by itself; undefined for a key that never expires. etcd may keep a
   * lease a little longer (across leader changes), which is why verify checks expires_at itself.
   */
  async leaseUntil (expiresAt: number | undefined, deadline: Deadline): Promise<string | undefined> {
    if (expiresAt === undefined) return undefined
    const ttl = Math.max(1, expiresAt - Math.floor(Date.now() / 1000))
    const res = await this.call('lease_grant', deadline, options => this.client.leaseClient.leaseGrant({ TTL: ttl, ID: 0 }, options))
    return String(res.ID)
  }

  /** A lease that outlives an entry put on it now by IDEMPOTENCY_TTL_SECONDS; granted once a minute. */
  async leaseForIdempotency (deadline: Deadline): Promise<string> {
    const current = this.idempotencyLease
    if (current !== undefined && current.reuseUntil > Date.now()) return current.id
    const reuseUntil = Date.now() + IDEMPOTENCY_LEASE_REUSE_SECONDS * 1000
    const res = await this.call('lease_grant', deadline, options => this.client.leaseClient.leaseGrant({
      TTL: IDEMPOTENCY_TTL_SECONDS + IDEMPOTENCY_LEASE_REUSE_SECONDS, ID: 0
    }, options))
    this.idempotencyLease = { id: String(res.ID), reuseUntil }
    return this.idempotencyLease.id
  }

  /** The shared idempotency lease is gone (revoked, or etcd restored): the next entry gets a new one. */
  forgetIdempotencyLease (): void {
    this.idempotencyLease = undefined
  }

  /**
   * The key whose secret has this digest, or why there is none: `unknown` (no such key, a deleted
   * one, or an old secret whose rotation's grace is over), `revoked` (a revocation fence revokes
   * it; revoke-all deletes it soon after). The old secret of a rotation is refused from the
   * second its grace ends, even while etcd has not yet removed its digest entry.
   */
  async findByDigest (digest: string, deadline: Deadline): Promise<DigestLookup> {
    const res = await this.range({ key: this.keys.digest(digest) }, deadline)
    const target = res.kvs[0]?.value.toString('utf8')
    if (!target) return { key: null, why: 'unknown' }
    const { namespace, name } = parseQualifiedName(target)
    // At the index entry's revision: the reads see one snapshot (and one check of the cache).
    const readAt = Number(res.header.revision)
    const record = await this.getRecord(this.keys.record(namespace, name), deadline, readAt)
    // The record must name the digest: an index entry never authenticates on its own.
    if (record === null || !namesDigest(record.value, digest)) return { key: null, why: 'unknown' }
    const revoked = this.isRevoked(record, deadline)
    return (revoked === true || (revoked !== false && await revoked)) ? { key: null, why: 'revoked' } : { key: storedKey(record) }
  }

  /** The idempotency entry with this id, as stored, or null. */
  async getIdempotencyEntry (entryId: string, deadline: Deadline): Promise<string | null> {
    const res = await this.range({ key: this.keys.idempotency(entryId) }, deadline)
    return res.kvs[0]?.value.toString('utf8') ?? null
  }

  /** See transactions.ts. */
  async create (apiKey: ApiKey, digest: string, deadline: Deadline, options: CreateOptions = {}): Promise<StoredKey> {
    const created = await createKey(this, apiKey, digest, deadline, options)
    this.observer.keysCreated(1)
    return created
  }

  update (namespace: string, name: string, change: (current: StoredKey) => ApiKey | Promise<ApiKey>, deadline: Deadline, minter?: Minter): Promise<StoredKey> {
    return updateKey(this, namespace, name, change, deadline, minter)
  }

  /** See rotation.ts. */
  rotate (namespace: string, name: string, change: (current: StoredKey) => ApiKey | Promise<ApiKey>, digest: string, options: RotateOptions, deadline: Deadline): Promise<StoredKey> {
    return rotateKey(this, namespace, name, change, digest, options, deadline)
  }

  async delete (namespace: string, name: string, check: (current: StoredKey) => void | Promise<void>, deadline: Deadline, minter?: Minter): Promise<void> {
    await deleteKey(this, namespace, name, check, deadline, minter)
    this.observer.keysRevoked(1)
  }

  /** A page of `namespace`, or of every namespace when it is undefined (see list.ts). */
  listPage (namespace: ListScope, options: ListOptions): Promise<ListPage> {
    return listPage(this, namespace, options)
  }

  /** The whole of `namespace`, or of every namespace when it is undefined, as a stream. */
  listAll (namespace: ListScope, options: Omit<ListOptions, 'limit'> & { batchTimeout: number }): Promise<AsyncIterable<ApiKey>> {
    return listAll(this, namespace, options)
  }

  countKeysOf (username: string, stopAt: number, deadline: Deadline): Promise<number> {
    return countKeysOf(this, username, stopAt, deadline)
  }

  /** See revoke.ts. */
  async revokeAllOf (username: string, options: { deadline: Deadline, batchTimeout: number }): Promise<number> {
    const deleted = await revokeAllOf(this, username, options)
    this.observer.keysRevoked(deleted)
    return deleted
  }
}

export type { StoredKey } from './records.js'
export type { RotateOptions } from './rotation.js'
export type { ListOptions, ListPage } from './list.js'
export type { Deadline } from './calls.js'
