// `last_used_at`: each server remembers the newest use of each key it verified and writes it at
// most once an interval per key, in batched transactions, never on a request's path. The entry
// (`<root>/apikey-usage/<namespace>/<name>`) is apart from the record, so that a use changes
// neither the key's ETag nor anything that watches records; it is on the record's lease and is
// deleted with the record (transactions.ts), so it lives and dies with its key.
import { CompareResult, CompareTarget, type IKeyValue, type IRequestOp } from 'etcd3'
import type { ApiKey } from '../keys/schemas.js'
import type { StoreCore } from './core.js'
import { settleBy, type Deadline } from './calls.js'
import { quotaCounted } from './group-commit.js'
import type { StoredKey } from './records.js'

/** Keys per transaction: each is one nested transaction, and etcd takes at most 128 (--max-txn-ops). */
export const MAX_USES_PER_TXN = 100

export interface UsageLog {
  warn(obj: object, msg: string): void
}

export interface UsageOptions {
  /** Milliseconds between a key's first pending use and its write: at most one write per key and interval. */
  interval: number
  /** Milliseconds for each etcd transaction. */
  callTimeout: number
  log: UsageLog
}

/** One key's newest use not yet written, with what the write is guarded by. */
interface PendingUse {
  recordKey: string
  usageKey: string
  createRevision: number
  lease: string
  seconds: number
}

/**
 * The last use a usage entry says, for the record of `recordCreateRevision`; undefined when there
 * is none, or the entry is older than the record (a former key's of the same name: an orphan that
 * check-consistency reports). The value is Unix seconds in decimal.
 */
export function lastUseOf (kv: IKeyValue | undefined, recordCreateRevision: number): number | undefined {
  if (kv === undefined || Number(kv.create_revision) < recordCreateRevision) return undefined
  const seconds = Number(kv.value.toString('utf8'))
  return Number.isSafeInteger(seconds) && seconds > 0 ? seconds : undefined
}

/** The key as answers show it: with its last use, when there is one. */
export function withLastUse (apiKey: ApiKey, lastUsedAt: number | undefined): ApiKey {
  return lastUsedAt === undefined ? apiKey : { ...apiKey, last_used_at: lastUsedAt }
}

/**
 * The write of one key's use, as a nested transaction: only while the record is the one verified
 * (same create revision: never for a key deleted meanwhile, so no orphan comes from here) and on
 * the same lease (a PATCH that moved it revokes the old one); and only forward in time (etcd
 * compares values as bytes, which orders Unix seconds while they have 10 digits, until 2286).
 */
function usageWrite (use: PendingUse): IRequestOp {
  const usageKey = Buffer.from(use.usageKey)
  const value = Buffer.from(String(use.seconds))
  const put: IRequestOp = { request_put: { key: usageKey, value, lease: use.lease } }
  const recordKey = Buffer.from(use.recordKey)
  return {
    request_txn: {
      compare: [
        { key: recordKey, target: CompareTarget.Create, result: CompareResult.Equal, create_revision: use.createRevision },
        { key: recordKey, target: CompareTarget.Lease, result: CompareResult.Equal, lease: use.lease }
      ],
      success: [{
        request_txn: {
          compare: [{ key: usageKey, target: CompareTarget.Create, result: CompareResult.Equal, create_revision: 0 }],
          success: [put],
          failure: [{
            request_txn: { compare: [{ key: usageKey, target: CompareTarget.Value, result: CompareResult.Less, value }], success: [put], failure: [] }
          }]
        }
      }],
      failure: []
    }
  }
}

/** Remembers uses and writes them, batched, at most once an interval per key. */
export class UsageRecorder {
  private pending = new Map<string, PendingUse>()
  private timer?: NodeJS.Timeout
  private readonly flushes = new Set<Promise<void>>()
  private closed = false

  constructor (private readonly store: StoreCore, private readonly options: UsageOptions) {}

  /** A use of `key` now: remembered, written within an interval. Costs no I/O. */
  used (key: StoredKey, now = Date.now()): void {
    if (this.closed || key.lease === undefined) return
    const { namespace, name } = key.apiKey.metadata
    const recordKey = this.store.keys.record(namespace, name)
    const seconds = Math.floor(now / 1000)
    const known = this.pending.get(recordKey)
    if (known !== undefined && known.createRevision === key.createRevision && known.lease === key.lease) {
      known.seconds = Math.max(known.seconds, seconds)
      return
    }
    this.pending.set(recordKey, { recordKey, usageKey: this.store.keys.usage(namespace, name), createRevision: key.createRevision, lease: key.lease, seconds })
    this.timer ??= setTimeout(() => {
      this.timer = undefined
      this.flush()
    }, this.options.interval).unref()
  }

  /** Writes every pending use now, in transactions of MAX_USES_PER_TXN keys; resolves when they are done. */
  flush (): Promise<void> {
    const uses = [...this.pending.values()]
    this.pending = new Map()
    const batches: PendingUse[][] = []
    for (let i = 0; i < uses.length; i += MAX_USES_PER_TXN) batches.push(uses.slice(i, i + MAX_USES_PER_TXN))
    const done = Promise.all(batches.map(batch => this.write(batch))).then(() => {})
    this.flushes.add(done)
    return done.finally(() => this.flushes.delete(done))
  }

  /**
   * One transaction, which etcd's space quota counts (so no use is written during a NOSPACE alarm);
   * a failure is logged and the uses dropped (a later use writes again).
   */
  private async write (batch: PendingUse[]): Promise<void> {
    const { client } = this.store
    try {
      await this.store.call('txn', Date.now() + this.options.callTimeout, options =>
        client.kv.txn(quotaCounted(batch.map(usageWrite), Buffer.from(batch[0].usageKey)), options))
    } catch (err) {
      this.options.log.warn({ keys: batch.length, error: err instanceof Error ? err.message : String(err) },
        'apikey last use: etcd did not take the write, so last_used_at of these keys stays older until their next use (nothing to do unless etcd keeps failing)')
    }
  }

  /** Stops recording, and writes what is pending, by `deadline` at the latest (best effort). */
  async close (deadline: Deadline): Promise<void> {
    this.closed = true
    clearTimeout(this.timer)
    this.timer = undefined
    this.flush()
    try {
      await settleBy(deadline, Promise.all([...this.flushes]))
    } catch {}
  }
}
