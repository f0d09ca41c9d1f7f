// The cache's copy of etcd: every key under the prefix at one revision, and who waits for a later one.
import sortedBtree from 'sorted-btree'
import type { IKeyValue, IRangeResponse } from 'etcd3'

/** A key as the cache holds it: strings and numbers, not the Buffers etcd3 hands out. */
interface Entry {
  value: string
  create: string
  mod: string
  version: string
  lease: string
}

// A CommonJS module whose class is its `default` export.
const BTree = sortedBtree.default

export class Snapshot {
  private readonly entries = new Map<string, Entry>()
  /**
   * Every cached key under one of `ranged`, in etcd's (byte) order (keys are held as latin1 strings, whose
   * order is their bytes'). A B+ tree: 100,000 keys arriving through the watch must not cost an
   * array splice each. Digest and idempotency entries are only read one by one: not in it.
   */
  private readonly sorted = new BTree<string, undefined>(undefined, (a, b) => a < b ? -1 : a > b ? 1 : 0)
  /** Every change up to this revision is applied: the copy is etcd's state at this revision. */
  revision = 0
  private readonly waiters = new Set<{ revision: number, resolve: (reached: boolean) => void }>()

  constructor (private readonly ranged: string[]) {}

  get size (): number {
    return this.entries.size
  }

  clear (): void {
    this.entries.clear()
    this.sorted.clear()
  }

  /** Puts or removes a key as etcd gave it (latin1 names, as the cache keeps them). */
  put (kv: IKeyValue): void {
    const key = kv.key.toString('latin1')
    if (!this.entries.has(key) && this.ranged.some(prefix => key.startsWith(prefix))) this.sorted.set(key, undefined)
    this.entries.set(key, entryOf(kv))
  }

  remove (kv: IKeyValue): void {
    const key = kv.key.toString('latin1')
    if (this.entries.delete(key)) this.sorted.delete(key)
  }

  /** A range read of the copy: one key without `end`, else [start, end) up to `limit` keys. */
  read (start: string, end: string | undefined, limit = 0): IRangeResponse {
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
