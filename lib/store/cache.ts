import sortedBtree from 'sorted-btree'
import type { Etcd3, IDuplexStream, IKeyValue, IRangeResponse, IWatchRequest, IWatchResponse } from 'etcd3'
import { rangeEnd } from './key-builder.js'
import { settleBy } from '../http/deadline.js'

/**
 * An in-process copy of every key under the plugin's prefix, kept exact by an etcd watch, from
 * which reads are served as the Kubernetes API server serves them ("consistent reads from cache"):
 * a read first learns etcd's current revision (one request shared by every read that arrives
 * while the previous one is out) and waits until the watch has delivered the cache up to it. So a
 * read never answers something older than a write acknowledged anywhere before it began, and a
 * key deleted through another server is refused at once. While the watch is down, or the cache
 * cannot show it has caught up, reads go to etcd. If etcd no longer has the history the cache
 * copied (restored from a snapshot: its revision went back; or another cluster), the cache drops
 * its copy and loads afresh (see sameHistory).
 */

/** A key as the cache holds it: strings and numbers, not the Buffers etcd3 hands out. */
interface Entry {
  value: string
  create: string
  mod: string
  version: string
  lease: string
}

export interface CacheStatus {
  /** The watch is up and reads are served from the cache. */
  live: boolean
  /** The etcd revision the cache holds. */
  revision: number
  /** etcd keys held (records, digest entries, idempotency entries). */
  keys: number
  /** Range reads served from the cache, and those that went to etcd (cache down, behind, or a token's revision). */
  reads: { cache: number, etcd: number }
  /** Times the cache dropped its copy and loaded afresh: etcd compacted past it, went back (a restore), or is another cluster. */
  reloads: number
}

/** A range the cache may serve: keys are strings, as the store builds them. */
export interface CacheRange {
  key: string
  end?: Buffer
  limit?: number
  revision?: number
}

/** The etcd calls the cache makes, each within its own budget (the store's, with its retries). */
export interface CacheSource {
  range(request: { key: Buffer, end?: Buffer, limit?: number, revision?: number }): Promise<IRangeResponse>
}

export interface WatchCacheOptions {
  /** Everything under this prefix is cached. */
  prefix: string
  /** The part of `prefix` that is read in ranges (the records); the rest only by single key. */
  ranged: string
  /** Keys per range read while loading (small enough for gRPC's message limit). */
  readBatch: number
  /** Reports the watch going down and coming back; not the reads. */
  log: { info(obj: object, msg: string): void, warn(obj: object, msg: string): void }
}

/** How long a read waits for the watch to deliver a revision before it reads etcd instead. */
const CATCH_UP_WAIT = 25
/** The least time between two checks that the watch is alive (see checkAlive). */
const HEARTBEAT_INTERVAL = 1000
/** How long the watch may take to answer a check. */
const HEARTBEAT_TIMEOUT = 2000
/** How long the watch may take to be created; etcd3's issue #154: a create can hang. */
const WATCH_CREATE_TIMEOUT = 5000
const RESTART_BACKOFF_MIN = 250
const RESTART_BACKOFF_MAX = 5000

/** Keys the cache serves: ASCII, where JavaScript's string order is etcd's byte order. */
const isAscii = (text: string) => Buffer.byteLength(text, 'utf8') === text.length

/** What a linearizable read says of etcd, and what the cache held when it was sent. */
interface Current {
  revision: number
  clusterId: string
  /** The cache's revision when the read was sent: etcd had reached it, so the read's must be at least that. */
  held: number
  /** The cache's load count then: a load since makes `held` moot. */
  loads: number
}

// A CommonJS module whose class is its `default` export.
const BTree = sortedBtree.default

/** One call at a time, shared by every caller that arrives before it is sent (never by a later one). */
class Coalescer<T> {
  private waiting?: { promise: Promise<T>, resolve: (value: T) => void, reject: (err: unknown) => void }
  private busy = false

  constructor (private readonly call: () => Promise<T>) {}

  run (): Promise<T> {
    if (this.waiting !== undefined) return this.waiting.promise
    let settle!: { resolve: (value: T) => void, reject: (err: unknown) => void }
    const promise = new Promise<T>((resolve, reject) => { settle = { resolve, reject } })
    this.waiting = { promise, ...settle }
    if (!this.busy) this.send()
    return promise
  }

  private send () {
    const batch = this.waiting
    if (batch === undefined) return
    this.waiting = undefined
    this.busy = true
    this.call().then(batch.resolve, batch.reject).finally(() => {
      this.busy = false
      this.send()
    })
  }
}

export class WatchCache {
  private readonly entries = new Map<string, Entry>()
  /**
   * Every cached key under `ranged`, in etcd's (byte) order (keys are held as latin1 strings, whose
   * order is their bytes'). A B+ tree: 100,000 keys arriving through the watch must not cost an
   * array splice each. Digest and idempotency entries are only read one by one: not in it.
   */
  private readonly sorted = new BTree<string, undefined>(undefined, (a, b) => a < b ? -1 : a > b ? 1 : 0)
  /** Every change up to this revision is applied: the cache is etcd's state at this revision. */
  private revision = 0
  /** The watch is up and the cache follows it. */
  private live = false
  private closed = false
  private stream?: IDuplexStream<IWatchRequest, IWatchResponse>
  private restartTimer?: NodeJS.Timeout
  private backoff = RESTART_BACKOFF_MIN
  private readonly waiters = new Set<{ revision: number, resolve: (reached: boolean) => void }>()
  /** The cluster the copy was loaded from (every response header names it). */
  private clusterId?: string
  /** Loads so far; all but the first are reloads. */
  private loads = 0
  private readonly current: Coalescer<Current>
  private readonly counts = { cache: 0, etcd: 0 }
  /** When the watch was last asked to show it is alive, and when it last said anything. */
  private askedAt = 0
  private heardAt = 0

  /** The end of the ranged keys, as a latin1 string. */
  private readonly rangedEnd: string

  /** `client` carries the watch; `source` makes the other calls. */
  constructor (private readonly client: Etcd3, private readonly source: CacheSource, private readonly options: WatchCacheOptions) {
    this.rangedEnd = rangeEnd(options.ranged).toString('latin1')
    const prefix = Buffer.from(options.prefix)
    // A linearizable read of one key (the prefix itself, which no key is): its header is etcd's current revision.
    this.current = new Coalescer(async () => {
      const { revision: held, loads } = this
      const { header } = await source.range({ key: prefix })
      return { revision: Number(header.revision), clusterId: header.cluster_id, held, loads }
    })
  }

  /** Loads the cache and starts the watch, in the background; reads go to etcd until it is live. */
  start (): void {
    this.restart(0)
  }

  close (): void {
    this.closed = true
    this.goDown()
    clearTimeout(this.restartTimer)
  }

  /**
   * The range from the cache, or undefined when the cache cannot serve it (then the caller reads
   * etcd). Without `revision`, a consistent read: the answer is at least as new as etcd was when
   * the call began. With one, only when the cache is at exactly that revision.
   */
  async range (request: CacheRange, deadline: number): Promise<IRangeResponse | undefined> {
    const end = request.end?.toString('latin1')
    const { ranged } = this.options
    const inRange = end === undefined || (request.key.startsWith(ranged) && isAscii(end) && end <= this.rangedEnd)
    const servable = this.live && isAscii(request.key) && inRange &&
      (request.revision === undefined ? await this.catchUp(deadline) : request.revision === this.revision)
    if (!servable) {
      this.counts.etcd++
      return undefined
    }
    this.counts.cache++
    return this.read(request.key, end, request.limit)
  }

  /** True while the cache is etcd's state at `revision` (no change since). */
  holds (revision: number): boolean {
    return this.live && revision === this.revision
  }

  /** What the cache is doing, for operators (`apiKeys.cacheStatus()`). */
  status (): CacheStatus {
    return { live: this.live, revision: this.revision, keys: this.entries.size, reads: { ...this.counts }, reloads: Math.max(0, this.loads - 1) }
  }

  /** True once the cache holds every change etcd had made when this was called. */
  private async catchUp (deadline: number): Promise<boolean> {
    const current = await settleBy(deadline, this.current.run())
    // Down meanwhile (whatever restarts the watch checks etcd's history itself), or loaded afresh
    // since the read was sent (it may predate the new copy).
    if (!this.live || current.loads !== this.loads) return false
    if (!this.sameHistory(current)) {
      this.goDown()
      this.restart(0)
      return false
    }
    const target = current.revision
    if (this.revision >= target) return true
    if (await this.reached(target, Math.min(CATCH_UP_WAIT, deadline - Date.now()))) return true
    // Nothing of ours came up to that revision: etcd's later revisions may all be other keys'
    // (a root shared with Sensu), or the watch may have gone silent. This read goes to etcd, and
    // the watch is asked to show it is alive. (etcd's progress notifications would say how far
    // the watch has come, but etcd 3.4 and 3.5 before 3.5.8 may send one ahead of the events it
    // covers: they are never taken as a revision here.)
    this.checkAlive()
    return false
  }

  /**
   * Whether etcd still has the history the cache copied: the same cluster, and a revision no lower
   * than one it had already reached (a restore from a snapshot takes it back; etcd accepts a watch
   * from a revision it has not reached and waits, so the watch alone would never tell). If not,
   * the copy is dropped (the next follow() loads afresh) and that is logged, once: the caller
   * has the cache down. A restore that etcd has written past the cache's revision before this
   * server looks again cannot be told by revision: the README says to restore with
   * `--bump-revision` and `--mark-compacted`, whose compaction cancels the watch.
   */
  private sameHistory (current: Current): boolean {
    const { revision, clusterId, held } = current
    if (clusterId === this.clusterId && revision >= held) return true
    if (clusterId !== this.clusterId) {
      this.options.log.warn({ from: this.clusterId, to: clusterId, cacheRevision: this.revision },
        `etcd's cluster id changed from ${this.clusterId} to ${clusterId} (another cluster, or restored from a snapshot?); reloading the cache`)
    } else {
      this.options.log.warn({ from: held, to: revision },
        `etcd went back from revision ${held} to ${revision} (restored from a snapshot?); reloading the cache`)
    }
    this.revision = 0
    return false
  }

  /** Asks etcd for a progress notification, at most once a second; a watch that stays silent is restarted. */
  private checkAlive () {
    const stream = this.stream
    const asked = Date.now()
    if (stream === undefined || !this.live || asked - this.askedAt < HEARTBEAT_INTERVAL) return
    this.askedAt = asked
    stream.write({ progress_request: {} })
    setTimeout(() => {
      if (this.stream !== stream || !this.live || this.heardAt >= asked) return
      this.options.log.warn({ cacheRevision: this.revision }, 'apikey cache: the watch stopped answering; restarting it')
      this.goDown()
      this.restart(0)
    }, HEARTBEAT_TIMEOUT).unref()
  }

  /** Resolves true when the cache reaches `revision`, false after `wait` ms or when the watch goes down. */
  private reached (revision: number, wait: number): Promise<boolean> {
    if (this.revision >= revision) return Promise.resolve(this.live)
    if (wait <= 0 || !this.live) return Promise.resolve(false)
    return new Promise(resolve => {
      const waiter = {
        revision,
        resolve: (reached: boolean) => {
          clearTimeout(timer)
          this.waiters.delete(waiter)
          resolve(reached)
        }
      }
      const timer = setTimeout(() => waiter.resolve(false), wait)
      this.waiters.add(waiter)
    })
  }

  private read (start: string, end: string | undefined, limit = 0): IRangeResponse {
    const kvs: IKeyValue[] = []
    let more = false
    if (end === undefined) {
      const entry = this.entries.get(start)
      if (entry !== undefined) kvs.push(toKeyValue(start, entry))
    } else {
      for (const key of this.sorted.keys(start)) {
        if (key >= end) break
        if (limit > 0 && kvs.length === limit) {
          more = true
          break
        }
        kvs.push(toKeyValue(key, this.entries.get(key) as Entry))
      }
    }
    const revision = String(this.revision)
    return { header: { cluster_id: '0', member_id: '0', raft_term: '0', revision }, kvs, more, count: String(kvs.length) }
  }

  private put (key: string, entry: Entry) {
    if (!this.entries.has(key) && key.startsWith(this.options.ranged)) this.sorted.set(key, undefined)
    this.entries.set(key, entry)
  }

  private remove (key: string) {
    if (this.entries.delete(key)) this.sorted.delete(key)
  }

  private advance (revision: number) {
    if (revision <= this.revision) return
    this.revision = revision
    for (const waiter of this.waiters) {
      if (waiter.revision <= revision) waiter.resolve(true)
    }
  }

  /** The watch is down: reads go to etcd, and every read waiting on the watch gives up. */
  private goDown () {
    this.live = false
    const stream = this.stream
    this.stream = undefined
    // Its handlers check that it is still the stream, so whatever it says now goes unheard.
    stream?.cancel()
    for (const waiter of this.waiters) waiter.resolve(false)
  }

  private restart (delay: number) {
    if (this.closed) return
    clearTimeout(this.restartTimer)
    this.restartTimer = setTimeout(() => {
      this.follow().catch(err => {
        if (this.closed) return
        this.goDown()
        this.options.log.warn({ err, retryInMs: this.backoff }, 'apikey cache: watch down, reads go to etcd')
        const wait = this.backoff
        this.backoff = Math.min(this.backoff * 2, RESTART_BACKOFF_MAX)
        this.restart(wait)
      })
    }, delay)
  }

  /** (Re)loads when needed, then watches from the cache's revision on; resolves once the watch is up. */
  private async follow (): Promise<void> {
    if (this.revision > 0) this.sameHistory(await this.current.run())
    if (this.revision === 0) await this.load()
    const { prefix } = this.options
    const stream = await this.client.watchClient.watch()
    this.stream = stream
    const failed = new Promise<never>((_resolve, reject) => {
      stream.on('error', reject)
      stream.on('end', () => reject(new Error('watch stream ended')))
    })
    /** The watch, once up, broke or was canceled: reads go to etcd until it is back. */
    const broken = (err: unknown, delay: number) => {
      if (this.stream !== stream || this.closed) return
      this.goDown()
      this.options.log.warn({ err }, 'apikey cache: watch down, reads go to etcd')
      this.restart(delay)
    }
    failed.catch(err => broken(err, this.backoff))
    let up = false
    const created = new Promise<void>((resolve, reject) => {
      // Before the watch is up, a failure fails follow(); after, it restarts the watch.
      const fail = (err: unknown) => up ? broken(err, 0) : reject(err)
      stream.on('data', res => {
        if (this.stream !== stream) return
        this.heardAt = Date.now()
        if (res.created === true && res.canceled !== true) {
          up = true
          this.live = true
          this.backoff = RESTART_BACKOFF_MIN
          resolve()
          return
        }
        if (res.canceled === true) {
          // Compacted past our revision: the history to replay is gone; load afresh.
          if (Number(res.compact_revision) > 0) this.revision = 0
          fail(new Error(`watch canceled: ${res.cancel_reason !== '' ? res.cancel_reason : 'compacted'}`))
          return
        }
        try {
          this.apply(res)
        } catch (err) {
          fail(err)
        }
      })
    })
    stream.write({
      create_request: { key: Buffer.from(prefix), range_end: rangeEnd(prefix), start_revision: this.revision + 1 }
    })
    let timer: NodeJS.Timeout | undefined
    try {
      await Promise.race([created, failed, new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error('watch not created in time')), WATCH_CREATE_TIMEOUT)
      })])
    } finally {
      clearTimeout(timer)
    }
    this.options.log.info({ revision: this.revision, keys: this.entries.size }, 'apikey cache: following etcd')
  }

  private apply (res: IWatchResponse) {
    let revision = 0
    for (const event of res.events ?? []) {
      const { kv } = event
      const key = kv.key.toString('latin1')
      if (String(event.type).toUpperCase() === 'DELETE') this.remove(key)
      else this.put(key, entryOf(kv))
      revision = Math.max(revision, Number(kv.mod_revision))
    }
    // The events of one revision come in one response, in revision order: all up to here are in.
    this.advance(revision)
  }

  /** Reads every key under the prefix in batches at one revision. */
  private async load (): Promise<void> {
    this.entries.clear()
    this.sorted.clear()
    const { prefix, readBatch } = this.options
    const end = rangeEnd(prefix)
    let start = Buffer.from(prefix)
    let revision: number | undefined
    for (;;) {
      const res = await this.source.range({ key: start, end, limit: readBatch, revision })
      revision ??= Number(res.header.revision)
      this.clusterId = res.header.cluster_id
      for (const kv of res.kvs) {
        const key = kv.key.toString('latin1')
        this.put(key, entryOf(kv))
      }
      if (!res.more || res.kvs.length === 0) break
      start = Buffer.concat([res.kvs[res.kvs.length - 1].key, Buffer.from([0])])
    }
    this.revision = revision ?? 0
    this.loads++
  }
}

function entryOf (kv: IKeyValue): Entry {
  return { value: kv.value.toString('utf8'), create: String(kv.create_revision), mod: String(kv.mod_revision), version: String(kv.version), lease: String(kv.lease) }
}

function toKeyValue (key: string, entry: Entry): IKeyValue {
  return {
    key: Buffer.from(key, 'latin1'),
    value: Buffer.from(entry.value, 'utf8'),
    create_revision: entry.create,
    mod_revision: entry.mod,
    version: entry.version,
    lease: entry.lease
  }
}
