import { isDeepStrictEqual } from 'node:util'
import { setTimeout as sleep } from 'node:timers/promises'
import {
  Etcd3, GRPCGenericError, GRPCOutOfRangeError, EtcdError, ClientClosedError, isRecoverableError, EtcdLeaseInvalidError,
  GRPCInvalidArgumentError, GRPCNotFoundError, GRPCAlreadyExistsError, GRPCFailedPreconditionError,
  GRPCNotImplementedError, GRPCUnauthenticatedError, EtcdPermissionDeniedError, GRPCResourceExhastedError,
  type IKeyValue, type IRangeResponse, type PutBuilder
} from 'etcd3'
import { isBrokenCircuitError } from 'cockatiel'
import { EtcdKeys, rangeEnd } from './key-builder.js'
import { WatchCache, type CacheStatus, type WatchCacheOptions } from './cache.js'
import { decodeContinueToken, encodeContinueToken } from './continue-token.js'
import { settleBy } from '../http/deadline.js'
import { IDEMPOTENCY_TTL_SECONDS } from '../keys/idempotency.js'
import {
  CredentialRevokedError, EtcdNoSpaceError, EtcdUnavailableError, FutureRevisionError, IdempotencyEntryExistsError, KeyExistsError,
  KeyNotFoundError, RevisionCompactedError, RevokedUsernameError
} from '../http/errors.js'
import type { ApiKey } from '../keys/schemas.js'

/** A key as etcd holds it: the resource and the SHA-256 digest of its secret. */
interface StoredRecord extends ApiKey {
  key_sha256: string
  /** The id of the Idempotency-Key entry that made the key: it is deleted with the key. */
  idempotency_entry?: string
}

/** A key read from etcd, with the revision that last changed it. */
export interface StoredKey {
  key: ApiKey
  /** etcd's mod_revision of the record: the key's version, and its ETag. */
  revision: number
  /**
   * etcd's create_revision of the record. A revocation fence of the key's username written at a
   * later revision revokes it (see revokeAllOf).
   */
  createRevision: number
}

/** A record as read, with what etcd says of it and the revision it was read at. */
interface ReadRecord {
  value: StoredRecord
  revision: number
  createRevision: number
  lease: string
  readAt: number
}

/** When one request's etcd work must be done, as `Date.now()` milliseconds. */
export interface Deadline {
  deadline: number
}

export interface ListOptions extends Deadline {
  /** Page size; 0 reads the whole namespace. */
  limit: number
  /** The `continue` token of the previous page. */
  continueToken?: string
  /** Keeps a key in the answer (the caller's authorization); absent keeps every key. */
  filter?: (key: ApiKey) => boolean | Promise<boolean>
}

export interface ListPage {
  items: ApiKey[]
  /** Present when more keys may remain. */
  continueToken?: string
}

/** The most keys read from etcd to fill one filtered page. */
export const MAX_KEYS_SCANNED_PER_PAGE = 10_000
/** The most keys one etcd range read asks for (fewer when keys may be large: see readBatch). */
const MAX_READ_BATCH = 500
/** The largest answer a client takes by default (gRPC's): range reads stay well under it. */
const DEFAULT_RECEIVE_BYTES = 4 * 1024 * 1024

/** The largest key (its JSON) the plugin stores: a body's worth, and room for the fields the server sets. */
export function maxKeyBytes (bodyLimit: number): number {
  return bodyLimit + 1024
}
/**
 * Keys per range read, so that a read of the largest keys stays under the client's answer limit
 * (`receiveBytes`, gRPC's 4 MiB by default): three quarters of it, for the framing and the names.
 */
export function readBatchFor (keyBytes: number, receiveBytes = DEFAULT_RECEIVE_BYTES): number {
  return Math.max(1, Math.min(MAX_READ_BATCH, Math.floor(receiveBytes * 3 / 4 / keyBytes)))
}

/** Keys deleted at once by revokeAllOf. */
const REVOKE_CONCURRENCY = 8
/** Applying a patch retries on a conflicting write this many times at most, deadline allowing. */
const MAX_UPDATE_ATTEMPTS = 100

/**
 * Idempotency entries share a lease granted at most this often (as the Kubernetes API server
 * shares leases among events): one lease grant a minute, not one a create. An entry lives
 * 24 hours, or up to this much longer.
 */
const IDEMPOTENCY_LEASE_REUSE_SECONDS = 60

/** A retry gets at least this many milliseconds, or is not made. */
const MIN_ATTEMPT = 100
/** The pause between two attempts of one call. */
const RETRY_PAUSE = 50
/** The pause before trying again when every member's circuit is open. */
const OPEN_CIRCUIT_PAUSE = 100
/** How long past an attempt's deadline the store waits for the client to end the call itself. */
const SAFETY_MARGIN = 100

/** The client's circuit breaker refused the call: cockatiel's BrokenCircuitError. */
function isOpenCircuit (err: unknown): boolean {
  return isBrokenCircuitError(err)
}

/**
 * etcd's NOSPACE: a write refused because its database reached its quota (etcd then raises the
 * NOSPACE alarm and refuses writes until an operator disarms it). gRPC's RESOURCE_EXHAUSTED,
 * which etcd3 counts as recoverable; retrying cannot help.
 */
export function isNoSpace (err: unknown): boolean {
  return err instanceof GRPCResourceExhastedError && /database space exceeded/.test(err.message)
}

/** etcd errors that mean "etcd cannot answer now", as opposed to a bug in the request. */
function isUnavailable (err: unknown): boolean {
  // gRPC's own refusal of an answer too large to receive is no outage: retrying cannot help.
  if (err instanceof GRPCResourceExhastedError && /larger than max/i.test(err.message)) return false
  if (err instanceof EtcdUnavailableError || err instanceof ClientClosedError || isOpenCircuit(err)) return true
  if (err instanceof Error && isRecoverableError(err)) return true
  if (err instanceof GRPCGenericError) {
    return !(err instanceof GRPCInvalidArgumentError || err instanceof GRPCNotFoundError ||
      err instanceof GRPCAlreadyExistsError || err instanceof GRPCFailedPreconditionError ||
      err instanceof GRPCNotImplementedError || err instanceof GRPCUnauthenticatedError ||
      err instanceof GRPCOutOfRangeError)
  }
  // Raft's own transient answers: no leader, leader changed, request timed out, too many requests.
  return err instanceof EtcdError && !(err instanceof EtcdPermissionDeniedError) &&
    /leader|timed out|timeout|too many requests|unhealthy/i.test(err.message)
}

/** etcd's error as one of the store's: compaction, a future revision, no space, unavailability, or as it is. */
function translateEtcdError (err: unknown): unknown {
  if (err instanceof GRPCOutOfRangeError) {
    return /compacted/.test(err.message) ? new RevisionCompactedError(err.message) : new FutureRevisionError(err.message)
  }
  if (err instanceof EtcdUnavailableError) return err
  if (isNoSpace(err)) return new EtcdNoSpaceError('etcd is out of space', { cause: err })
  if (isUnavailable(err)) return new EtcdUnavailableError('etcd unavailable', { cause: err })
  return err
}

/**
 * Every etcd access of the plugin. Keys live at `<root>/apikeys/<namespace>/<name>` as JSON, and a
 * digest index at `<root>/apikey-digests/<sha256>` points at `<namespace>/<name>`; the two are
 * always written and deleted in one transaction.
 */
export class ApiKeyStore {
  readonly client: Etcd3
  readonly keys: EtcdKeys

  /** The longest one attempt of a call may take; the request's deadline bounds them all. */
  private readonly attemptTimeout: number

  /** Keys per range read, so that a read of the largest keys stays under gRPC's message limit. */
  private readonly readBatch: number

  /** The largest key (its JSON) that may be written: reads of whole batches depend on it. */
  readonly maxKeyBytes: number

  /** The lease idempotency entries are put on now, and until when it is handed out. */
  private idempotencyLease?: { id: string, reuseUntil: number }

  /** Where reads are served from when it can (see cache.ts); absent, every read goes to etcd. */
  private readonly cache?: WatchCache

  constructor (client: Etcd3, root: string, options: {
    attemptTimeout?: number
    maxKeyBytes?: number
    /** The largest answer the client takes (its grpc.max_receive_message_length); default gRPC's 4 MiB. */
    receiveBytes?: number
    /** Serve reads from a watch-fed cache; each etcd call it makes has `callTimeout` ms. */
    cache?: { callTimeout: number, log: WatchCacheOptions['log'] }
  } = {}) {
    this.client = client
    this.keys = new EtcdKeys(root)
    this.attemptTimeout = options.attemptTimeout ?? Infinity
    this.maxKeyBytes = options.maxKeyBytes ?? maxKeyBytes(64 * 1024)
    this.readBatch = readBatchFor(this.maxKeyBytes, options.receiveBytes)
    if (options.cache !== undefined) {
      const { callTimeout, log } = options.cache
      this.cache = new WatchCache(client, {
        range: request => this.rangeEtcd(request, { deadline: Date.now() + callTimeout })
      }, { prefix: this.keys.plugin, ranged: this.keys.records, readBatch: this.readBatch, log })
    }
  }

  /** What the cache is doing; null without one. */
  cacheStatus (): CacheStatus | null {
    return this.cache?.status() ?? null
  }

  /** Starts filling the cache, if there is one; reads go to etcd until it follows etcd. */
  startCache (): void {
    this.cache?.start()
  }

  close (): void {
    this.cache?.close()
  }

  /**
   * Runs one etcd call within the request's deadline. With `attemptTimeout` below the deadline,
   * a call that etcd cannot answer in time (a member that died: its connection hangs) is made
   * again, and the client sends it to another member, while time is left; a timer answers for
   * any call the client does not end itself. Every write here is safe to repeat (see create,
   * update, delete).
   */
  private async withDeadline<T> ({ deadline }: Deadline, call: (options: { deadline: Date }) => Promise<T>): Promise<T> {
    for (;;) {
      const now = Date.now()
      if (now >= deadline) throw new EtcdUnavailableError('request deadline exceeded')
      const attemptDeadline = Math.min(deadline, now + this.attemptTimeout)
      try {
        // The client's own deadline ends the call first, so that its circuit breaker counts the
        // failure before the next attempt picks a member; the timer is the safety net.
        return await settleBy(attemptDeadline + SAFETY_MARGIN, call({ deadline: new Date(attemptDeadline) }))
      } catch (err) {
        const error = translateEtcdError(err)
        // Every circuit open (a cluster electing a leader makes its live members time out too):
        // wait for one to half-open, within the deadline, rather than answer 503 at once.
        const pause = isOpenCircuit(err) ? OPEN_CIRCUIT_PAUSE : RETRY_PAUSE
        const retry = error instanceof EtcdUnavailableError && deadline - Date.now() >= MIN_ATTEMPT + pause
        if (!retry) throw error
        // A member that refuses at once must not make this a busy loop (a host's client may have no breaker).
        await sleep(pause)
      }
    }
  }

  /**
   * A range read, from the cache when it can serve it, else from etcd. A revision from a client's
   * continue token (`fromToken`) is served from the cache only if the cache is still at it, and
   * only after a one-key read in etcd at that revision: only etcd knows whether it was compacted
   * (a 410) or not reached (a 400), and a one-key read says so without walking the range.
   */
  private async range (request: { key: string, end?: Buffer, limit?: number, revision?: number, fromToken?: boolean }, deadline: Deadline): Promise<IRangeResponse> {
    const cache = this.cache
    if (cache !== undefined) {
      let cached
      try {
        if (request.fromToken !== true) {
          cached = await cache.range(request, deadline.deadline)
        } else if (request.revision !== undefined && cache.holds(request.revision)) {
          await this.rangeEtcd({ key: this.keys.plugin, revision: request.revision }, deadline)
          cached = await cache.range(request, deadline.deadline)
        }
      } catch (err) {
        throw translateEtcdError(err)
      }
      if (cached !== undefined) return cached
    }
    return await this.rangeEtcd(request, deadline)
  }

  private rangeEtcd (request: { key: string | Buffer, end?: Buffer, limit?: number, revision?: number }, deadline: Deadline): Promise<IRangeResponse> {
    return this.withDeadline(deadline, options => this.client.kv.range({
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

  /** The key, or null when there is none or it was revoked. */
  async get (namespace: string, name: string, deadline: Deadline): Promise<StoredKey | null> {
    const record = await this.getLiveRecord(this.keys.record(namespace, name), deadline)
    return record && storedKey(record)
  }

  /** The record at `etcdKey`, now or at `revision`, revoked or not. */
  private async getRecord (etcdKey: string, deadline: Deadline, revision?: number): Promise<ReadRecord | null> {
    const res = await this.range({ key: etcdKey, revision }, deadline)
    const kv = res.kvs[0]
    return kv
      ? { value: parseRecord(kv), revision: Number(kv.mod_revision), createRevision: Number(kv.create_revision), lease: String(kv.lease), readAt: Number(res.header.revision) }
      : null
  }

  /** The record at `etcdKey`, or null when there is none or a revocation fence revokes it. */
  private async getLiveRecord (etcdKey: string, deadline: Deadline, revision?: number): Promise<ReadRecord | null> {
    const record = await this.getRecord(etcdKey, deadline, revision)
    if (record === null) return null
    const fence = await this.fenceRevision(record.value.username, deadline, record.readAt)
    return record.createRevision < fence ? null : record
  }

  /**
   * The revision of `username`'s revocation fence (0 when it has none), now or at `revision`:
   * every key of that username created before it is revoked.
   */
  private async fenceRevision (username: string, deadline: Deadline, revision?: number): Promise<number> {
    const res = await this.range({ key: this.keys.fence(username), revision }, deadline)
    const kv = res.kvs[0]
    return kv === undefined ? 0 : Number(kv.mod_revision)
  }

  /**
   * For one walk read at `revision`: is a record revoked? One fence read per username met, within
   * the deadline `deadline()` gives when that username is first met.
   */
  private revocationsAt (revision: number, deadline: () => Deadline): (kv: IKeyValue, record: StoredRecord) => Promise<boolean> {
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
  private revokeLease (lease: string | undefined): void {
    if (lease === undefined || lease === '0') return
    this.client.leaseClient.leaseRevoke({ ID: lease }, { deadline: new Date(Date.now() + 5000) }).catch(() => {})
  }

  /**
   * Creates a key and its digest index entry in one transaction guarded by "neither exists". A
   * retried create whose first attempt etcd applied finds its own record (same digest): success.
   * With `idempotency`, the same transaction writes that entry too, guarded by "it does not
   * exist": if another request with the same Idempotency-Key wrote it first, nothing is written
   * and IdempotencyEntryExistsError carries the entry. With `minter`, the API key the request
   * authenticated with, the transaction is also guarded by "that key still exists and no
   * revocation fence of its username came after it": a leaked key cannot mint past a revoke-all
   * (CredentialRevokedError).
   */
  async create (key: ApiKey, digest: string, deadline: Deadline, options: {
    idempotency?: { entryId: string, entry: string }
    minter?: StoredKey
  } = {}): Promise<StoredKey> {
    const { idempotency, minter } = options
    const recordKey = this.keys.record(key.metadata.namespace, key.metadata.name)
    const digestKey = this.keys.digest(digest)
    const record: StoredRecord = { ...key, key_sha256: digest, ...(idempotency !== undefined && { idempotency_entry: idempotency.entryId }) }
    const lease = await this.leaseUntil(key.expires_at, deadline)
    const entryKey = idempotency && this.keys.idempotency(idempotency.entryId)
    const minterKey = minter && this.keys.record(minter.key.metadata.namespace, minter.key.metadata.name)
    const minterFence = minter && this.keys.fence(minter.key.username)
    for (let attempt = 1; ; attempt++) {
      // The entry lives and dies with a key that expires before it would.
      const entryLease = idempotency && (lease !== undefined && outlivedByIdempotency(key.expires_at)
        ? lease
        : await this.leaseForIdempotency(deadline))
      let res
      try {
        res = await this.withDeadline(deadline, options => {
          const txn = this.client
            .if(recordKey, 'Create', '==', 0)
            .and(digestKey, 'Create', '==', 0)
          const puts = [
            withLease(this.client.put(recordKey).value(JSON.stringify(record)), lease),
            withLease(this.client.put(digestKey).value(EtcdKeys.digestTarget(key.metadata.namespace, key.metadata.name)), lease)
          ]
          const reads = [this.client.get(recordKey)]
          if (entryKey !== undefined && idempotency !== undefined) {
            txn.and(entryKey, 'Create', '==', 0)
            puts.push(withLease(this.client.put(entryKey).value(idempotency.entry), entryLease))
            reads.push(this.client.get(entryKey))
          }
          if (minterKey !== undefined && minterFence !== undefined && minter !== undefined) {
            txn.and(minterKey, 'Create', '==', minter.createRevision).and(minterFence, 'Mod', '<', minter.createRevision)
          }
          return txn.then(...puts).else(...reads).options(options).commit()
        })
      } catch (err) {
        // The shared lease was revoked or lost (etcd restored from a backup): grant another, once.
        if (err instanceof EtcdLeaseInvalidError && entryLease !== undefined && entryLease !== lease && attempt === 1) {
          this.idempotencyLease = undefined
          continue
        }
        // Not the key's lease: etcd may have applied the write whose answer failed.
        throw err
      }
      if (res.succeeded) {
        const revision = Number(res.header.revision)
        return { key, revision, createRevision: revision }
      }
      // Our own write, applied by an attempt whose answer was lost (entry included): success. Its
      // lease now holds the key, so it must not be revoked as a lease nothing uses.
      const existing = res.responses[0]?.response_range?.kvs[0]
      if (existing && parseRecord(existing).key_sha256 === digest) {
        return { key, revision: Number(existing.mod_revision), createRevision: Number(existing.create_revision) }
      }
      this.revokeLease(lease)
      const entry = entryKey === undefined ? undefined : res.responses[1]?.response_range?.kvs[0]
      if (entry) throw new IdempotencyEntryExistsError(entry.value.toString('utf8'))
      if (existing) throw new KeyExistsError(`apikey ${key.metadata.name} already exists`)
      // Neither the record nor the entry was in the way, and a digest is never shared: the minter's guard failed.
      throw new CredentialRevokedError('the apikey that made this request was revoked')
    }
  }

  /** The idempotency entry with this id, as stored, or null. */
  async getIdempotencyEntry (entryId: string, deadline: Deadline): Promise<string | null> {
    const res = await this.range({ key: this.keys.idempotency(entryId) }, deadline)
    return res.kvs[0]?.value.toString('utf8') ?? null
  }

  /** A lease that outlives an entry put on it now by IDEMPOTENCY_TTL_SECONDS; granted once a minute. */
  private async leaseForIdempotency (deadline: Deadline): Promise<string> {
    const current = this.idempotencyLease
    if (current !== undefined && current.reuseUntil > Date.now()) return current.id
    const reuseUntil = Date.now() + IDEMPOTENCY_LEASE_REUSE_SECONDS * 1000
    const res = await this.withDeadline(deadline, options => this.client.leaseClient.leaseGrant({
      TTL: IDEMPOTENCY_TTL_SECONDS + IDEMPOTENCY_LEASE_REUSE_SECONDS, ID: 0
    }, options))
    this.idempotencyLease = { id: String(res.ID), reuseUntil }
    return this.idempotencyLease.id
  }

  /**
   * Applies `change` to the stored key with compare-and-swap on its revision, and retries on a
   * conflicting write, as the Kubernetes API server does: concurrent updates all apply. `change`
   * may throw to refuse the update. A revoked key is not found, and a revocation fence written
   * between the read and the write fails the write (the retry then finds the key revoked).
   */
  async update (
    namespace: string, name: string,
    change: (current: StoredKey) => ApiKey | Promise<ApiKey>,
    deadline: Deadline
  ): Promise<StoredKey> {
    const recordKey = this.keys.record(namespace, name)
    let written: string | undefined
    for (let attempt = 1; ; attempt++) {
      const current = await this.getLiveRecord(recordKey, deadline)
      if (!current) throw new KeyNotFoundError(`apikey ${name} not found`)
      // A retried write that etcd applied before its answer was lost: what we wrote is there.
      if (written !== undefined && JSON.stringify(current.value) === written) return storedKey(current)
      const before = toApiKey(current.value)
      const after = await change(storedKey(current))
      if (isDeepStrictEqual(after, before)) return storedKey(current)
      // A key older than its new username's revocation would be revoked the moment it got it.
      if (after.username !== before.username && current.createRevision < await this.fenceRevision(after.username, deadline)) {
        throw new RevokedUsernameError(after.username)
      }
      // An unchanged expiry keeps the lease; a changed one moves the record and its digest entry to
      // a new lease (or to none), and ends the key's Idempotency-Key entry, which cannot follow.
      const keepLease = after.expires_at === before.expires_at
      const { key_sha256: digest, idempotency_entry: entryId } = current.value
      written = JSON.stringify({ ...after, key_sha256: digest, ...(keepLease && entryId !== undefined && { idempotency_entry: entryId }) })
      const value = written
      const lease = keepLease ? undefined : await this.leaseUntil(after.expires_at, deadline)
      const digestKey = this.keys.digest(digest)
      const res = await this.withDeadline(deadline, callOptions => this.client
        .if(recordKey, 'Mod', '==', current.revision)
        .and(this.keys.fence(before.username), 'Mod', '<', current.createRevision)
        .and(this.keys.fence(after.username), 'Mod', '<', current.createRevision)
        .then(...keepLease
          ? [this.client.put(recordKey).value(value).ignoreLease()]
          : [
              withLease(this.client.put(recordKey).value(value), lease),
              withLease(this.client.put(digestKey).value(EtcdKeys.digestTarget(namespace, name)), lease),
              ...entryId === undefined ? [] : [this.client.delete().key(this.keys.idempotency(entryId))]
            ])
        .options(callOptions)
        .commit())
      if (res.succeeded) {
        // The record and its digest entry moved off their old lease: nothing holds it any more.
        if (!keepLease) this.revokeLease(current.lease)
        return { key: after, revision: Number(res.header.revision), createRevision: current.createRevision }
      }
      this.revokeLease(lease)
      if (attempt >= MAX_UPDATE_ATTEMPTS) throw new EtcdUnavailableError('too many conflicting writes')
    }
  }

  /**
   * Deletes a key with its digest index entry and its Idempotency-Key entry in one transaction
   * guarded by the revision read. `check` may throw to refuse the delete. A key that vanished
   * after a conflicting attempt was deleted (by this call's own retried write, or by a concurrent
   * delete): the goal holds. A revoked key is not found.
   */
  async delete (namespace: string, name: string, check: (current: StoredKey) => void | Promise<void>, deadline: Deadline): Promise<void> {
    const recordKey = this.keys.record(namespace, name)
    for (let attempt = 1; ; attempt++) {
      const current = await this.getLiveRecord(recordKey, deadline)
      if (!current) {
        if (attempt === 1) throw new KeyNotFoundError(`apikey ${name} not found`)
        return
      }
      await check(storedKey(current))
      if (await this.deleteRecord(recordKey, current, deadline)) return
      if (attempt >= MAX_UPDATE_ATTEMPTS) throw new EtcdUnavailableError('too many conflicting writes')
    }
  }

  /**
   * Deletes the record as read, with its digest entry and Idempotency-Key entry, unless it changed
   * since; true when it did. Its lease, if any, holds nothing any more and is revoked.
   */
  private async deleteRecord (recordKey: string, current: ReadRecord, deadline: Deadline): Promise<boolean> {
    const { key_sha256: digest, idempotency_entry: entryId } = current.value
    const res = await this.withDeadline(deadline, options => this.client
      .if(recordKey, 'Mod', '==', current.revision)
      .then(
        this.client.delete().key(recordKey),
        this.client.delete().key(this.keys.digest(digest)),
        ...entryId === undefined ? [] : [this.client.delete().key(this.keys.idempotency(entryId))]
      )
      .options(options)
      .commit())
    if (res.succeeded) this.revokeLease(current.lease)
    return res.succeeded
  }

  /**
   * A lease that etcd lets expire at `expiresAt` (Unix seconds), so that it removes an expiring
   * key and its digest entry by itself; undefined for a key that never expires. etcd may keep a
   * lease a little longer (across leader changes), which is why verify checks expires_at itself.
   */
  private async leaseUntil (expiresAt: number | undefined, deadline: Deadline): Promise<string | undefined> {
    if (expiresAt === undefined) return undefined
    const ttl = Math.max(1, expiresAt - Math.floor(Date.now() / 1000))
    const res = await this.withDeadline(deadline, options => this.client.leaseClient.leaseGrant({ TTL: ttl, ID: 0 }, options))
    return String(res.ID)
  }

  /** The key whose secret has this digest, or null (none, or revoked). */
  async findByDigest (digest: string, deadline: Deadline): Promise<StoredKey | null> {
    const res = await this.range({ key: this.keys.digest(digest) }, deadline)
    const target = res.kvs[0]?.value.toString('utf8')
    if (!target) return null
    const slash = target.indexOf('/')
    // At the index entry's revision: the reads see one snapshot (and one check of the cache).
    const record = await this.getLiveRecord(this.keys.record(target.slice(0, slash), target.slice(slash + 1)), deadline, Number(res.header.revision))
    // The record must point back at the digest: an index entry never authenticates on its own.
    return record && record.value.key_sha256 === digest ? storedKey(record) : null
  }

  /**
   * One page of a namespace, in name order. The first page reads etcd's newest revision; the
   * token pins every later page to it, so a walk sees one snapshot. A filtered page reads on
   * until it is full or the namespace is done, at most MAX_KEYS_SCANNED_PER_PAGE keys.
   */
  async listPage (namespace: string, options: ListOptions): Promise<ListPage> {
    const { limit, filter } = options
    const end = rangeEnd(this.keys.namespace(namespace))
    let { start, revision } = this.walkStart(namespace, options.continueToken)
    const fromToken = revision !== undefined
    const items: ApiKey[] = []
    let scanned = 0
    let lastKey = ''
    let lastShown = false
    let more = false
    let revoked: ((kv: IKeyValue, record: StoredRecord) => Promise<boolean>) | undefined
    while (items.length < limit) {
      const want = limit - items.length
      const batch = Math.min(filter ? Math.min(Math.max(want, 100), 1000, MAX_KEYS_SCANNED_PER_PAGE - scanned) : want, this.readBatch)
      const res = await this.range({ key: start, end, limit: batch, revision, fromToken }, options)
      revision ??= Number(res.header.revision)
      revoked ??= this.revocationsAt(revision, () => options)
      more = res.more
      for (const [i, kv] of res.kvs.entries()) {
        scanned++
        lastKey = kv.key.toString('utf8')
        const record = parseRecord(kv)
        const key = toApiKey(record)
        lastShown = !await revoked(kv, record) && (!filter || await filter(key))
        if (lastShown) items.push(key)
        if (items.length === limit) {
          more ||= i < res.kvs.length - 1
          break
        }
      }
      if (!more || scanned >= MAX_KEYS_SCANNED_PER_PAGE) break
      start = lastKey + '\0'
    }
    if (!more) return { items }
    let next = lastKey + '\0'
    if (!lastShown) {
      // The scan cap cut the page on a key the caller may not see: the token must not name it
      // (another user's key is a 404, so that its existence is not revealed). It names the
      // shortest prefix of the next key that sorts after it instead: past every key scanned.
      const after = await this.range({ key: next, end, limit: 1, revision, fromToken }, options)
      const nextKey = after.kvs[0]?.key
      if (nextKey === undefined) return { items }
      next = separator(Buffer.from(lastKey), nextKey)
    }
    return {
      items,
      continueToken: encodeContinueToken({ rev: revision ?? 0, start: this.keys.relativeToRecords(next) })
    }
  }

  /**
   * The whole namespace (from the token on, if any), read in bounded batches at one revision.
   * The first batch is read before this resolves, so a failing etcd fails the call, not the
   * stream; each later batch has `batchTimeout` milliseconds of its own.
   */
  async listAll (namespace: string, options: Omit<ListOptions, 'limit'> & { batchTimeout: number }): Promise<AsyncIterable<ApiKey>> {
    const { filter, batchTimeout } = options
    const { start, revision } = this.walkStart(namespace, options.continueToken)
    const batches = this.batches(start, rangeEnd(this.keys.namespace(namespace)), {
      revision, pin: true, first: options, later: () => ({ deadline: Date.now() + batchTimeout })
    })
    const first = await batches.next()
    if (first.done === true) return (async function * () {})()
    // Every batch is read at the first one's revision: so are the fences.
    const revoked = this.revocationsAt(Number(first.value.header.revision), () => ({ deadline: Date.now() + batchTimeout }))
    return (async function * () {
      for (let batch: IteratorResult<IRangeResponse> = first; batch.done !== true; batch = await batches.next()) {
        for (const kv of batch.value.kvs) {
          const record = parseRecord(kv)
          if (await revoked(kv, record)) continue
          const key = toApiKey(record)
          if (!filter || await filter(key)) yield key
        }
      }
    })()
  }

  /**
   * How many keys `username` holds, in all namespaces, counted up to `stopAt` (reading stops
   * there); revoked keys do not count. All within the request's deadline.
   */
  async countKeysOf (username: string, stopAt: number, deadline: Deadline): Promise<number> {
    // Fences only move forward: one read before the scan revokes at least what it says.
    const fence = await this.fenceRevision(username, deadline)
    let count = 0
    for await (const batch of this.batches(this.keys.records, rangeEnd(this.keys.records), { first: deadline, later: () => deadline })) {
      for (const kv of batch.kvs) {
        if (Number(kv.create_revision) >= fence && parseRecord(kv).username === username && ++count >= stopAt) return count
      }
    }
    return count
  }

  /**
   * Revokes every key of `username`, in all namespaces, at once and for good: first a revocation
   * fence, one etcd key whose revision revokes every key of that username created before it (at
   * verify, on every server, and in reads and counts), and which a create made with a key so
   * revoked can never pass (see create's `minter`): so a leaked key minting more loses. Then the
   * revoked records are deleted, each with its digest entry and Idempotency-Key entry; every
   * one of them is already there for the scan to find, since nothing can be created before the
   * fence any more. Reads the records in bounded batches, the first within the request's
   * deadline, each later one (and each delete) with `batchTimeout` ms. Resolves with how many
   * keys it deleted.
   */
  async revokeAllOf (username: string, options: Deadline & { batchTimeout: number }): Promise<number> {
    const fenceKey = this.keys.fence(username)
    const value = JSON.stringify({ username, revoked_at: Math.floor(Date.now() / 1000) })
    const written = await this.withDeadline(options, callOptions => this.client.put(fenceKey).value(value).options(callOptions).exec())
    const fence = Number(written.header.revision)
    let deleted = 0
    const batches = this.batches(this.keys.records, rangeEnd(this.keys.records), {
      first: options, later: () => ({ deadline: Date.now() + options.batchTimeout })
    })
    for await (const batch of batches) {
      const theirs = batch.kvs.filter(kv => Number(kv.create_revision) < fence && parseRecord(kv).username === username)
      const done = await inParallel(theirs, REVOKE_CONCURRENCY, kv => this.removeRevoked(kv, { deadline: Date.now() + options.batchTimeout }))
      deleted += done.filter(Boolean).length
    }
    return deleted
  }

  /** Deletes a revoked record found by a scan, whatever was changed in it since; true when this call deleted it. */
  private async removeRevoked (kv: IKeyValue, deadline: Deadline): Promise<boolean> {
    const recordKey = kv.key.toString('utf8')
    for (let attempt = 1; attempt <= MAX_UPDATE_ATTEMPTS; attempt++) {
      const current = await this.getRecord(recordKey, deadline)
      if (current === null || current.createRevision !== Number(kv.create_revision)) return false
      if (await this.deleteRecord(recordKey, current, deadline)) return true
    }
    throw new EtcdUnavailableError('too many conflicting writes')
  }

  /**
   * The records of [start, end) in batches small enough for gRPC's message limit. The first batch
   * is read within `first`'s deadline, each later one within `later()`'s. With `pin`, every batch
   * reads at `revision`, or at the revision of the first batch: one snapshot for a walk.
   */
  private async * batches (start: string, end: Buffer, options: { revision?: number, pin?: boolean, first: Deadline, later: () => Deadline }): AsyncGenerator<IRangeResponse> {
    let { revision } = options
    const fromToken = revision !== undefined
    let budget = options.first
    for (;;) {
      const res = await this.range({ key: start, end, limit: this.readBatch, revision, fromToken }, budget)
      if (options.pin === true) revision ??= Number(res.header.revision)
      yield res
      if (!res.more || res.kvs.length === 0) return
      start = res.kvs[res.kvs.length - 1].key.toString('utf8') + '\0'
      budget = options.later()
    }
  }

  private walkStart (namespace: string, continueToken: string | undefined): { start: string, revision?: number } {
    if (!continueToken) return { start: this.keys.namespace(namespace) }
    const token = decodeContinueToken(continueToken, namespace)
    return { start: this.keys.records + token.start, revision: token.rev }
  }
}

/** Does a key expiring at `expiresAt` (Unix seconds) end before an Idempotency-Key entry made now would? */
function outlivedByIdempotency (expiresAt: number | undefined): boolean {
  return expiresAt !== undefined && expiresAt < Date.now() / 1000 + IDEMPOTENCY_TTL_SECONDS
}

/** A put on `lease`, or on none. */
function withLease (put: PutBuilder, lease: string | undefined): PutBuilder {
  return lease === undefined ? put : put.lease(lease)
}

/** The shortest prefix of `b` that sorts after `a` (given a < b): `b` up to its first byte unlike `a`'s. */
function separator (a: Buffer, b: Buffer): string {
  let i = 0
  while (i < a.length && a[i] === b[i]) i++
  return b.subarray(0, i + 1).toString('utf8')
}

function parseRecord (kv: IKeyValue): StoredRecord {
  return JSON.parse(kv.value.toString('utf8')) as StoredRecord
}

/** The public resource: the stored record without what only the store reads. */
function toApiKey (record: StoredRecord): ApiKey {
  const { key_sha256: _digest, idempotency_entry: _entry, ...key } = record
  return key
}

function storedKey (record: ReadRecord): StoredKey {
  return { key: toApiKey(record.value), revision: record.revision, createRevision: record.createRevision }
}

/** `work` on every item, at most `concurrency` at a time, answers in the items' order. */
async function inParallel<T, R> (items: T[], concurrency: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = []
  for (let i = 0; i < items.length; i += concurrency) {
    results.push(...await Promise.all(items.slice(i, i + concurrency).map(work)))
  }
  return results
}
