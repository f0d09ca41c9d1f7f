import type { Etcd3, IKeyValue, IRangeResponse } from 'etcd3'
import { rangeEnd } from '../key-builder.js'
import type { Deadline } from '../calls.js'
import { Snapshot } from './snapshot.js'
import { Reflector, type LoadRead, type ReflectorOptions } from './reflector.js'
import { CATCH_UP_WAIT, Coalescer, type Current } from './freshness.js'

/**
 * An in-process copy of every key under the plugin's prefix, kept exact by an etcd watch, from
 * which reads are served as the Kubernetes API server serves them ("consistent reads from cache"):
 * a read first learns etcd's current revision (one request shared by every read that arrives
 * while the previous one is out) and waits until the watch has delivered the cache up to it. So a
 * read never answers something older than a write acknowledged anywhere before it began, and a
 * key deleted through another server is refused at once. While the watch is down, or the cache
 * cannot show it has caught up, reads go to etcd. If etcd no longer has the history the cache
 * copied (restored from a snapshot: its revision went back; or another cluster), the cache drops
 * its copy and loads afresh (see freshness.ts, sameHistory).
 *
 * As the Kubernetes cacher: snapshot.ts holds the copy, reflector.ts follows the watch,
 * freshness.ts says when the copy may answer; this file is the cache the store reads through.
 */

export interface CacheStatus {
  /** The watch is up and reads are served from the cache. */
  live: boolean
  /** The etcd revision the cache holds. */
  revision: number
  /**
   * etcd's revision as last heard (a linearizable read's answer, a watch response's header, a
   * load); above `revision` while the cache is behind, or while etcd's later revisions are other
   * keys' (a root shared with Sensu).
   */
  etcdRevision: number
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
  range(request: { key: Buffer }): Promise<IRangeResponse>
  /**
   * A read of a load: one attempt with a long budget (LOAD_CALL_TIMEOUT). etcd walks the whole rest
   * of a range for each read of it: with a million keys, a read can take seconds, which a
   * request's budget (and its shorter attempts) would cut, and the load would never end.
   */
  load(request: LoadRead): Promise<IRangeResponse>
}

/** How long one read of a load may take (see CacheSource.load). */
export const LOAD_CALL_TIMEOUT = 60_000

export type CacheLog = ReflectorOptions['log']

export interface WatchCacheOptions extends ReflectorOptions {
  /** The parts of `prefix` that are read in ranges (the records, the usage entries); the rest only by single key. */
  ranged: string[]
}

/** Keys the cache serves: ASCII, where JavaScript's string order is etcd's byte order. */
const isAscii = (text: string) => Buffer.byteLength(text, 'utf8') === text.length

export class WatchCache {
  private readonly snapshot: Snapshot
  private readonly reflector: Reflector
  private readonly current: Coalescer<Current>
  private readonly counts = { cache: 0, etcd: 0 }
  /** Each ranged prefix with its range's end, as a latin1 string. */
  private readonly rangedParts: Array<{ prefix: string, end: string }>

  /** `client` carries the watch; `source` makes the other calls. */
  constructor (client: Etcd3, source: CacheSource, private readonly options: WatchCacheOptions) {
    this.rangedParts = options.ranged.map(prefix => ({ prefix, end: rangeEnd(prefix).toString('latin1') }))
    this.snapshot = new Snapshot(options.prefix)
    const prefix = Buffer.from(options.prefix)
    // A linearizable read of one key (the prefix itself, which no key is): its header is etcd's current revision.
    this.current = new Coalescer(async () => {
      const held = this.snapshot.revision
      const loads = this.reflector.loads
      const { header } = await source.range({ key: prefix })
      this.reflector.heard(header)
      return { revision: Number(header.revision), clusterId: header.cluster_id, held, loads }
    })
    this.reflector = new Reflector(client, this.snapshot, request => source.load(request), this.current, options)
  }

  /** Loads the cache and starts the watch, in the background; reads go to etcd until it is live. */
  start (): void {
    this.reflector.restart(0)
  }

  close (): void {
    this.reflector.close()
  }

  /**
   * The range from the cache, or undefined when the cache cannot serve it (then the caller reads
   * etcd). Without `revision`, a consistent read: the answer is at least as new as etcd was when
   * the call began. With one, only when the cache is at exactly that revision.
   */
  async range (request: CacheRange, deadline: Deadline): Promise<IRangeResponse | undefined> {
    const end = request.end?.toString('latin1')
    const inRange = end === undefined || (isAscii(end) && this.rangedParts.some(part => request.key.startsWith(part.prefix) && end <= part.end))
    const servable = this.reflector.live && isAscii(request.key) && inRange &&
      (request.revision === undefined ? await this.catchUp(deadline) : request.revision === this.snapshot.revision)
    if (!servable) {
      this.counts.etcd++
      return undefined
    }
    this.counts.cache++
    return this.snapshot.read(request.key, end, request.limit)
  }

  /**
   * One key as the cache holds it at `revision` (null: none), without waiting: for a second read
   * at the revision a first one was just served at (a record's revocation fence). undefined when
   * the cache is no longer at that revision, or is down: then the caller reads etcd.
   */
  readAt (key: string, revision: number): IKeyValue | null | undefined {
    if (!this.reflector.live || revision !== this.snapshot.revision || !isAscii(key)) return undefined
    this.counts.cache++
    return this.snapshot.read(key, undefined).kvs[0] ?? null
  }

  /** A read the cache was not asked to serve (a continue token's revision it no longer holds): it went to etcd. */
  bypassed (): void {
    this.counts.etcd++
  }

  /** True while the cache is etcd's state at `revision` (no change since). */
  holds (revision: number): boolean {
    return this.reflector.live && revision === this.snapshot.revision
  }

  /** What the cache is doing, for operators (`apiKeys.cacheStatus()`). */
  status (): CacheStatus {
    const { live, loads, etcdRevision } = this.reflector
    return { live, revision: this.snapshot.revision, etcdRevision, keys: this.snapshot.size, reads: { ...this.counts }, reloads: Math.max(0, loads - 1) }
  }

  /** True once the cache holds every change etcd had made when this was called. */
  private async catchUp (deadline: Deadline): Promise<boolean> {
    const current = await this.current.run(deadline)
    // Down meanwhile (whatever restarts the watch checks etcd's history itself), or loaded afresh
    // since the read was sent (it may predate the new copy).
    if (!this.reflector.live || current.loads !== this.reflector.loads) return false
    if (!this.reflector.recheck(current)) return false
    const target = current.revision
    if (this.snapshot.revision >= target) return true
    if (await this.reached(target, Math.min(CATCH_UP_WAIT, deadline - Date.now()))) return true
    // Nothing of ours came up to that revision: etcd's later revisions may all be other keys'
    // (a root shared with Sensu), or the watch may have gone silent. This read goes to etcd, and
    // the watch is asked to show it is alive. (etcd's progress notifications would say how far
    // the watch has come, but etcd 3.4 and 3.5 before 3.5.8 may send one ahead of the events it
    // covers: they are never taken as a revision here.)
    this.reflector.checkAlive()
    return false
  }

  /** Resolves true when the cache reaches `revision`, false after `wait` ms or when the watch goes down. */
  private reached (revision: number, wait: number): Promise<boolean> {
    if (this.snapshot.revision >= revision) return Promise.resolve(this.reflector.live)
    if (!this.reflector.live) return Promise.resolve(false)
    return this.snapshot.reached(revision, wait)
  }
}
