// When the cache may answer: etcd's current revision (one linearizable read shared by the reads
// that wait for it), and whether etcd still has the history the cache copied.
import { EtcdUnavailableError } from '../errors.js'

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

interface Waiter<T> {
  deadline: number
  resolve: (value: T) => void
  reject: (err: unknown) => void
}

/**
 * The callers that share one call, each until its own deadline: one timer for the batch (at its
 * earliest deadline), not one a caller.
 */
class Batch<T> {
  private waiters: Array<Waiter<T>> = []
  private timer?: NodeJS.Timeout
  private timerAt = Infinity

  join (deadline: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (deadline <= Date.now()) return reject(tooLate())
      this.waiters.push({ deadline, resolve, reject })
      if (deadline < this.timerAt) this.arm(deadline)
    })
  }

  resolve (value: T): void {
    clearTimeout(this.timer)
    for (const waiter of this.waiters) waiter.resolve(value)
  }

  reject (err: unknown): void {
    clearTimeout(this.timer)
    for (const waiter of this.waiters) waiter.reject(err)
  }

  private arm (at: number): void {
    clearTimeout(this.timer)
    this.timerAt = at
    // Infinity (a caller without a deadline) needs no timer.
    if (at !== Infinity) this.timer = setTimeout(() => this.expire(), Math.max(1, at - Date.now()))
  }

  /** The callers whose deadline has come get an EtcdUnavailableError; the others wait on. */
  private expire (): void {
    const now = Date.now()
    const left: Array<Waiter<T>> = []
    let next = Infinity
    for (const waiter of this.waiters) {
      if (waiter.deadline <= now) {
        waiter.reject(tooLate())
      } else {
        left.push(waiter)
        next = Math.min(next, waiter.deadline)
      }
    }
    this.waiters = left
    this.timerAt = Infinity
    this.timer = undefined
    this.arm(next)
  }
}

const tooLate = () => new EtcdUnavailableError('etcd did not answer in time')

/**
 * One call at a time, shared by every caller that arrives before it is sent (never by a later
 * one). A call is sent at the end of the event loop's current turn (setImmediate), so that every
 * read that arrived in that turn shares it: under load, several times fewer calls than sending at
 * the first caller, for a few microseconds more latency.
 */
export class Coalescer<T> {
  private waiting?: Batch<T>
  private busy = false

  constructor (private readonly call: () => Promise<T>) {}

  /** The next call's answer; rejects with an EtcdUnavailableError at `deadline` if it has not come by then. */
  run (deadline = Infinity): Promise<T> {
    let batch = this.waiting
    if (batch === undefined) {
      batch = this.waiting = new Batch()
      if (!this.busy) {
        this.busy = true
        setImmediate(this.send)
      }
    }
    return batch.join(deadline)
  }

  /** Sends the call for the callers waiting now, if any; the next one once it is answered. */
  private readonly send = (): void => {
    const batch = this.waiting
    if (batch === undefined) {
      this.busy = false
      return
    }
    this.waiting = undefined
    this.call().then(value => batch.resolve(value), err => batch.reject(err)).finally(() => setImmediate(this.send))
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
