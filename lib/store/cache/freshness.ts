// When the cache may answer: etcd's current revision (one linearizable read shared by the reads
// that wait for it), and whether etcd still has the history the cache copied.

/** What a linearizable read says of etcd, and what the cache held when it was sent. */
export interface Current {
  revision: number
  clusterId: string
  /** The cache's revision when the read was sent: etcd had reached it, so the read's must be at least that. */
  held: number
  /** The cache's load count then: a load since makes `held` moot. */
  loads: number
}

/** How long a read waits for the watch to deliver a revision before it reads etcd instead. */
export const CATCH_UP_WAIT = 25

/** One call at a time, shared by every caller that arrives before it is sent (never by a later one). */
export class Coalescer<T> {
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

export interface HistoryLog { warn(obj: object, msg: string): void }

/**
 * Whether etcd still has the history the cache copied from cluster `clusterId` up to
 * `cacheRevision`: the same cluster, and a revision no lower than one it had already reached (a
 * restore from a snapshot takes it back; etcd accepts a watch from a revision it has not reached
 * and waits, so the watch alone would never tell). If not, that is logged, once, and the caller
 * drops its copy. A restore that etcd has written past the cache's revision before this server
 * looks again cannot be told by revision: the operator restores with `--bump-revision` and
 * `--mark-compacted`, whose compaction cancels the watch.
 */
export function sameHistory (current: Current, copied: { clusterId?: string, revision: number }, log: HistoryLog): boolean {
  const { revision, clusterId, held } = current
  if (clusterId === copied.clusterId && revision >= held) return true
  if (clusterId !== copied.clusterId) {
    log.warn({ from: copied.clusterId, to: clusterId, cacheRevision: copied.revision },
      `etcd's cluster id changed from ${copied.clusterId} to ${clusterId} (another cluster, or restored from a snapshot?); reloading the cache`)
  } else {
    log.warn({ from: held, to: revision },
      `etcd went back from revision ${held} to ${revision} (restored from a snapshot?); reloading the cache`)
  }
  return false
}
