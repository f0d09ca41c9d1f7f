// The reflector: loads the snapshot and keeps it following etcd through one watch, restarting it
// (and loading afresh when the history it needs is gone) while the cache is open.
import type { Etcd3, IDuplexStream, IRangeResponse, IWatchRequest, IWatchResponse } from 'etcd3'
import { keyAfter, rangeEnd } from '../key-builder.js'
import { GRPC_DEFAULT_RECEIVE_BYTES } from '../client-policy.js'
import type { Snapshot } from './snapshot.js'
import { sameHistory, type Coalescer, type Current, type HistoryLog } from './freshness.js'

/** The least time between two checks that the watch is alive (see checkAlive). */
const HEARTBEAT_INTERVAL = 1000
/** How long the watch may take to answer a check. */
const HEARTBEAT_TIMEOUT = 2000
/** How long the watch may take to be created; etcd3's issue #154: a create can hang. */
const WATCH_CREATE_TIMEOUT = 5000
const RESTART_BACKOFF_MIN = 250
const RESTART_BACKOFF_MAX = 5000
/** The most names one keys-only read of a load asks for. */
const MAX_KEY_PAGE = 65_536
/** What one name may take in a keys-only answer, on average: the plugin's are a few hundred bytes. */
const NAME_BYTES = 1024

/**
 * Names per keys-only read while loading: three quarters of the client's answer limit, at
 * NAME_BYTES a name (a load that meets larger ones halves it).
 */
export function keyPageFor (receiveBytes = GRPC_DEFAULT_RECEIVE_BYTES): number {
  return Math.max(1, Math.min(MAX_KEY_PAGE, Math.floor(receiveBytes * 3 / 4 / NAME_BYTES)))
}

/** One range read of a load: [key, end) at most `limit`, at `revision` if given, names only with `keysOnly`. */
export interface LoadRead {
  key: Buffer
  end?: Buffer
  limit?: number
  revision?: number
  keysOnly?: boolean
}

export interface ReflectorOptions {
  /** Everything under this prefix is followed. */
  prefix: string
  /** Keys per range read while loading (small enough for gRPC's message limit). */
  readBatch: number
  /** Names per keys-only read while loading (see keyPageFor). */
  keyPage: number
  /** Reports the watch going down and coming back; not the reads. */
  log: HistoryLog & { info(obj: object, msg: string): void }
}

export class Reflector {
  /** The watch is up and the snapshot follows it. */
  live = false
  /** The cluster the copy was loaded from (every response header names it). */
  clusterId?: string
  /** Loads so far; all but the first are reloads. */
  loads = 0
  /** etcd's revision in the last answer heard from it (see heard). */
  etcdRevision = 0
  private closed = false
  private stream?: IDuplexStream<IWatchRequest, IWatchResponse>
  private restartTimer?: NodeJS.Timeout
  private backoff = RESTART_BACKOFF_MIN
  /** When the watch was last asked to show it is alive, and when it last said anything. */
  private askedAt = 0
  private heardAt = 0

  constructor (
    private readonly client: Etcd3,
    private readonly snapshot: Snapshot,
    private readonly read: (request: LoadRead) => Promise<IRangeResponse>,
    private readonly current: Coalescer<Current>,
    private readonly options: ReflectorOptions
  ) {}

  close (): void {
    this.closed = true
    this.goDown()
    clearTimeout(this.restartTimer)
  }

  /** Whether etcd still has the copied history; if not, the copy is dropped and loaded afresh. */
  recheck (current: Current): boolean {
    if (sameHistory(current, { clusterId: this.clusterId, revision: this.snapshot.revision }, this.options.log)) return true
    this.snapshot.revision = 0
    this.goDown()
    this.restart(0)
    return false
  }

  /** Notes etcd's revision from an answer's header: the newest heard, for the revision lag (a restore may take it back). */
  heard (header: { revision: string } | undefined): void {
    if (header !== undefined) this.etcdRevision = Number(header.revision)
  }

  /** Asks etcd for a progress notification, at most once a second; a watch that stays silent is restarted. */
  checkAlive (): void {
    const stream = this.stream
    const asked = Date.now()
    if (stream === undefined || !this.live || asked - this.askedAt < HEARTBEAT_INTERVAL) return
    this.askedAt = asked
    stream.write({ progress_request: {} })
    setTimeout(() => {
      if (this.stream !== stream || !this.live || this.heardAt >= asked) return
      this.options.log.warn({ cacheRevision: this.snapshot.revision }, 'apikey cache: the watch stopped answering; restarting it')
      this.goDown()
      this.restart(0)
    }, HEARTBEAT_TIMEOUT).unref()
  }

  /** The watch is down: reads go to etcd, and every read waiting on the watch gives up. */
  private goDown () {
    this.live = false
    const stream = this.stream
    this.stream = undefined
    // Its handlers check that it is still the stream, so whatever it says now goes unheard.
    stream?.cancel()
    this.snapshot.giveUp()
  }

  restart (delay: number): void {
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

  /** (Re)loads when needed, then watches from the snapshot's revision on; resolves once the watch is up. */
  private async follow (): Promise<void> {
    if (this.snapshot.revision > 0 && !sameHistory(await this.current.run(), { clusterId: this.clusterId, revision: this.snapshot.revision }, this.options.log)) {
      this.snapshot.revision = 0
    }
    if (this.snapshot.revision === 0) await this.load()
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
    const created = this.created(stream, broken)
    stream.write({
      create_request: { key: Buffer.from(prefix), range_end: rangeEnd(prefix), start_revision: this.snapshot.revision + 1 }
    })
    let timer: NodeJS.Timeout | undefined
    try {
      await Promise.race([created, failed, new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error('watch not created in time')), WATCH_CREATE_TIMEOUT)
      })])
    } finally {
      clearTimeout(timer)
    }
    this.options.log.info({ revision: this.snapshot.revision, keys: this.snapshot.size }, 'apikey cache: following etcd')
  }

  /**
   * Resolves once etcd says the watch is created; from then on applies its events. Before the
   * watch is up, a failure rejects; after, it restarts the watch (`broken`).
   */
  private created (stream: IDuplexStream<IWatchRequest, IWatchResponse>, broken: (err: unknown, delay: number) => void): Promise<void> {
    let up = false
    return new Promise<void>((resolve, reject) => {
      const fail = (err: unknown) => up ? broken(err, 0) : reject(err)
      stream.on('data', res => {
        if (this.stream !== stream) return
        this.heardAt = Date.now()
        this.heard(res.header)
        if (res.created === true && res.canceled !== true) {
          up = true
          this.live = true
          this.backoff = RESTART_BACKOFF_MIN
          resolve()
          return
        }
        if (res.canceled === true) {
          // Compacted past our revision: the history to replay is gone; load afresh.
          if (Number(res.compact_revision) > 0) this.snapshot.revision = 0
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
  }

  private apply (res: IWatchResponse) {
    let revision = 0
    for (const event of res.events ?? []) {
      const { kv } = event
      if (String(event.type).toUpperCase() === 'DELETE') this.snapshot.remove(kv)
      else this.snapshot.put(kv)
      revision = Math.max(revision, Number(kv.mod_revision))
    }
    // The events of one revision come in one response, in revision order: all up to here are in.
    this.snapshot.advance(revision)
  }

  /**
   * Reads every key under the prefix at one revision. etcd (3.4, 3.5) walks the whole rest of a
   * range for each read of it, whatever its limit: in batches of 500 over [last key, end of the
   * prefix), a million keys took hours, each read longer than the next. So a load reads the names
   * first, a large page of them at a time (keys only, a few MiB), then the values in windows that
   * end just after a batch's last name: each of those reads walks its own batch only.
   */
  private async load (): Promise<void> {
    this.snapshot.clear()
    const { prefix, readBatch } = this.options
    const end = rangeEnd(prefix)
    let keyPage = this.options.keyPage
    let revision: number | undefined
    let start: Buffer = Buffer.from(prefix)
    for (;;) {
      let names: IRangeResponse
      try {
        names = await this.read({ key: start, end, limit: keyPage, revision, keysOnly: true })
      } catch (err) {
        // Names larger than NAME_BYTES on average: the answer went over the client's limit.
        if (keyPage <= readBatch || !/RESOURCE_EXHAUSTED|larger than max/i.test((err as Error).message)) throw err
        keyPage = Math.max(readBatch, keyPage >> 1)
        continue
      }
      revision ??= Number(names.header.revision)
      this.heard(names.header)
      this.clusterId = names.header.cluster_id
      for (let i = 0; i < names.kvs.length; i += readBatch) {
        const batch = names.kvs.slice(i, i + readBatch)
        const res = await this.read({ key: batch[0].key, end: keyAfter(batch[batch.length - 1].key), limit: batch.length, revision })
        this.snapshot.append(res.kvs)
      }
      if (!names.more || names.kvs.length === 0) break
      start = keyAfter(names.kvs[names.kvs.length - 1].key)
    }
    this.snapshot.revision = revision ?? 0
    this.loads++
  }
}
