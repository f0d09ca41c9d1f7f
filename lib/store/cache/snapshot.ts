// The cache's copy of etcd: every key under the prefix at one revision, and who waits for a later one.
import type { IKeyValue, IRangeResponse } from 'etcd3'
import { PackedEntries, entryOf } from './entries.js'

export class Snapshot {
  /** Every key under the prefix, packed (see entries.ts), named relative to it. */
  private readonly entries: PackedEntries
  /** Every change up to this revision is applied: the copy is etcd's state at this revision. */
  revision = 0
  private readonly waiters = new Set<{ revision: number, resolve: (reached: boolean) => void }>()

  /** Holds the keys under `prefix` (a latin1 string, as etcd keys are held). */
  constructor (private readonly prefix: string) {
    this.entries = new PackedEntries(prefix)
  }

  get size (): number {
    return this.entries.size
  }

  clear (): void {
    this.entries.clear()
  }

  /** Adds keys that come after every key held, in etcd's order: a load's batches. */
  append (kvs: IKeyValue[]): void {
    this.entries.append(kvs.map(kv => entryOf(kv, this.prefix)))
  }

  /** Puts or removes a key as etcd gave it. */
  put (kv: IKeyValue): void {
    this.entries.put(entryOf(kv, this.prefix))
  }

  remove (kv: IKeyValue): void {
    this.entries.remove(entryOf(kv, this.prefix).key)
  }

  /** A range read of the copy: one key without `end`, else [start, end) up to `limit` keys (latin1 strings). */
  read (start: string, end: string | undefined, limit = 0): IRangeResponse {
    let kvs: IKeyValue[] = []
    let more = false
    if (end === undefined) {
      const kv = start.startsWith(this.prefix) ? this.entries.get(start.slice(this.prefix.length)) : undefined
      if (kv !== undefined) kvs.push(kv)
    } else {
      // Every key held starts with the prefix: a bound that does not is below them all or above them all.
      const from = start.startsWith(this.prefix) ? start.slice(this.prefix.length) : start < this.prefix ? '' : undefined
      const to = end.startsWith(this.prefix) ? end.slice(this.prefix.length) : end < this.prefix ? '' : undefined
      if (from !== undefined && to !== '') ({ kvs, more } = this.entries.range(from, to, limit))
    }
    const revision = String(this.revision)
    return { header: { cluster_id: '0', member_id: '0', raft_term: '0', revision }, kvs, more, count: String(kvs.length) }
  }

  /** Every change up to `revision` is in: reads waiting for it go ahead. */
  advance (revision: number): void {
    if (revision <= this.revision) return
    this.revision = revision
    for (const waiter of this.waiters) {
      if (waiter.revision <= revision) waiter.resolve(true)
    }
  }

  /** Resolves true when the copy reaches `revision`, false after `wait` ms or at giveUp(). */
  reached (revision: number, wait: number): Promise<boolean> {
    if (wait <= 0) return Promise.resolve(false)
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

  /** The copy stopped following etcd: every read waiting on it gives up. */
  giveUp (): void {
    for (const waiter of this.waiters) waiter.resolve(false)
  }
}
