// Group commit: creates, patches and deletes that arrive together share one etcd transaction,
// each as a nested transaction with its own guards, so that one write's conflict never fails
// another's.
import { CompareResult, CompareTarget, type IRequestOp, type IResponseOp, type ITxnRequest, type ITxnResponse } from 'etcd3'
import { EtcdUnavailableError } from './errors.js'
import { MIN_ATTEMPT, settleBy, type Deadline } from './calls.js'

/**
 * etcd's default `--max-txn-ops`. etcd (3.4 and 3.5) checks each transaction's longest list
 * (compares, success or failure operations) against it, and each nested transaction's against
 * what its parent left: a batch of n writes whose longest list holds m operations needs n + m
 * at most this.
 */
export const MAX_TXN_OPS = 128

/**
 * The most bytes of keys and values one batch carries: etcd refuses a request over its
 * `--max-request-bytes` (1.5 MiB by default); the rest is left for protobuf's framing.
 */
export const MAX_BATCH_BYTES = 1024 * 1024

/**
 * Batches sent at once. With one, writes that arrive while a batch is in flight wait for it and
 * go together in the next; a second batch in flight did not raise the rate (bench/RESULTS.md).
 */
export const MAX_IN_FLIGHT = 1

/** Why a write that waited for its batch got a 503: for the log line of that 503. */
export const NOT_SENT = 'etcd did not finish the writes before this one in time, so this write was not sent (nothing was written); etcd is slow or unavailable'

/** Bytes counted for each operation and compare beside its key and value. */
const OP_OVERHEAD_BYTES = 16

export interface BatchLimits {
  maxTxnOps: number
  maxBatchBytes: number
  maxInFlight: number
}

const DEFAULT_LIMITS: BatchLimits = { maxTxnOps: MAX_TXN_OPS, maxBatchBytes: MAX_BATCH_BYTES, maxInFlight: MAX_IN_FLIGHT }

/** One write's transaction (a create, a patch or a delete): what it compares, writes and reads, and the keys it puts or deletes. */
export interface GroupedTxn {
  request: ITxnRequest
  /** The etcd keys it puts: etcd refuses a transaction that puts one key twice, even in two nested ones. */
  puts: string[]
}

/** A nested transaction's outcome, at the revision of the batch that carried it. */
export interface GroupedResult {
  succeeded: boolean
  responses: IResponseOp[]
  revision: number
}

/** Sends one etcd transaction within a deadline (ApiKeyStore.call: attempts and retries). */
export type SendTxn = (request: ITxnRequest, deadline: Deadline) => Promise<ITxnResponse>

interface Member {
  txn: GroupedTxn
  deadline: Deadline
  /** Its longest list, and its size in bytes: what it takes of a batch's limits. */
  ops: number
  bytes: number
  /** Sent in a batch of its own: a batch that held it failed as a whole. */
  alone: boolean
  /** Its request got its answer (a deadline passed): it must not be sent any more. */
  abandoned: boolean
  /** It was not sent when it arrived: it waited for a batch in flight. */
  waited: boolean
  /** It was in a batch sent to etcd: etcd may have made its key, whatever the batch's answer. */
  sent: boolean
  resolve: (result: GroupedResult) => void
  reject: (err: unknown) => void
}

const opBytes = (op: IRequestOp): number => OP_OVERHEAD_BYTES +
  (op.request_put?.key?.length ?? 0) + (op.request_put?.value?.length ?? 0) +
  (op.request_range?.key?.length ?? 0) + (op.request_delete_range?.key?.length ?? 0)

function sizeOf (request: ITxnRequest): { ops: number, bytes: number } {
  const { compare = [], success = [], failure = [] } = request
  const bytes = compare.reduce((sum, c) => sum + OP_OVERHEAD_BYTES + (c.key?.length ?? 0), 0) +
    success.reduce((sum, op) => sum + opBytes(op), 0) + failure.reduce((sum, op) => sum + opBytes(op), 0)
  return { ops: Math.max(compare.length, success.length, failure.length), bytes }
}

/**
 * The next batch, taken from `queue` in order: members that fit etcd's limits beside those taken
 * and put no key another one puts (a later, smaller one may still fit). What is left stays queued,
 * in order; the first member always goes, so none waits for ever, and one too large for any batch
 * goes alone (as it would without group commit).
 */
export function takeBatch<T extends Pick<Member, 'ops' | 'bytes' | 'alone'> & { txn: Pick<GroupedTxn, 'puts'> }> (queue: T[], limits: Pick<BatchLimits, 'maxTxnOps' | 'maxBatchBytes'>): { batch: T[], rest: T[] } {
  const batch: T[] = []
  const rest: T[] = []
  const puts = new Set<string>()
  let ops = 0
  let bytes = 0
  for (const member of queue) {
    const fits = batch.length === 0 ||
      (!member.alone && !batch[0].alone &&
        batch.length + 1 + Math.max(ops, member.ops) <= limits.maxTxnOps &&
        bytes + member.bytes <= limits.maxBatchBytes &&
        !member.txn.puts.some(key => puts.has(key)))
    if (!fits) {
      rest.push(member)
      continue
    }
    batch.push(member)
    ops = Math.max(ops, member.ops)
    bytes += member.bytes
    for (const key of member.txn.puts) puts.add(key)
  }
  return { batch, rest }
}

/**
 * A transaction of nested writes that etcd's space quota counts. etcd 3.4 counts no put nested in
 * a transaction against its quota, so nested puts alone would pass its NOSPACE alarm (a leaked
 * key could fill etcd past it). The transaction therefore compares "version > -1" of `key` (true
 * of every key, present or not) and holds a put of it in its failure branch, never applied, that
 * etcd counts: with the alarm raised, it refuses the transaction as it refuses any put.
 */
export function quotaCounted (success: IRequestOp[], key: Buffer): ITxnRequest {
  return {
    compare: [{ key, target: CompareTarget.Version, result: CompareResult.Greater, version: -1 }],
    success,
    failure: [{ request_put: { key, value: Buffer.alloc(0) } }]
  }
}

/** The batch's transaction: each write nested in its success branch, counted by the quota. */
function batchTxn (txns: GroupedTxn[]): ITxnRequest {
  return quotaCounted(txns.map(txn => ({ request_txn: txn.request })), Buffer.from(txns[0].puts[0]))
}

/**
 * Writes share etcd transactions: one sent at once when none is in flight, and those that arrive
 * meanwhile together in the next (as etcd's own raft batches proposals). Each write is a nested
 * transaction of the batch's, with its own compares and its own success and failure operations:
 * its outcome is its own. A batch is sent within its earliest deadline, with the store's retries
 * (a create is guarded by "absent", a patch or delete by the record's revision, and a retried one
 * that finds its own write counts it as made). A write that waited and whose deadline is too near when its batch is taken gets its 503
 * and is never sent; one whose deadline passes while it is queued, the same.
 */
export class GroupCommit {
  private queue: Member[] = []
  private inFlight = 0

  constructor (private readonly send: SendTxn, private readonly limits: BatchLimits = DEFAULT_LIMITS) {}

  /** Commits `txn` in the next batch; its outcome, or the batch's error, by `deadline`. */
  async commit (txn: GroupedTxn, deadline: Deadline): Promise<GroupedResult> {
    let member!: Member
    const result = new Promise<GroupedResult>((resolve, reject) => {
      member = { txn, deadline, ...sizeOf(txn.request), alone: false, abandoned: false, waited: false, sent: false, resolve, reject }
    })
    this.queue.push(member)
    this.pump()
    member.waited = true
    try {
      return await settleBy(deadline, result)
    } catch (err) {
      // Still queued: it is dropped when its batch is taken. Already sent: its batch's call ends by this deadline too.
      member.abandoned = true
      throw member.sent || !(err instanceof EtcdUnavailableError) ? err : new EtcdUnavailableError(NOT_SENT)
    }
  }

  private pump (): void {
    while (this.inFlight < this.limits.maxInFlight && this.queue.length > 0) {
      const now = Date.now()
      const live = this.queue.filter(member => {
        if (member.abandoned) return false
        // One that waited is sent only with time for an attempt (as a retry is, see callWithin):
        // else its 503 could not tell whether etcd made the key. Unsent, it made nothing.
        if (member.deadline - now >= (member.waited ? MIN_ATTEMPT : 0)) return true
        member.reject(new EtcdUnavailableError(NOT_SENT))
        return false
      })
      const { batch, rest } = takeBatch(live, this.limits)
      this.queue = rest
      if (batch.length === 0) return
      this.inFlight++
      this.sendBatch(batch).finally(() => {
        this.inFlight--
        this.pump()
      })
    }
  }

  private async sendBatch (batch: Member[]): Promise<void> {
    const deadline = Math.min(...batch.map(member => member.deadline))
    for (const member of batch) member.sent = true
    // A batch of one is its write's own transaction, as without group commit.
    const alone = batch.length === 1
    let res: ITxnResponse
    try {
      res = await this.send(alone ? batch[0].txn.request : batchTxn(batch.map(member => member.txn)), deadline)
    } catch (err) {
      this.failed(batch, err, deadline)
      return
    }
    const revision = Number(res.header.revision)
    batch.forEach((member, i) => {
      const nested = alone ? res : res.responses[i]?.response_txn
      if (nested === undefined) member.reject(new Error('etcd answered a batch of writes without the outcome of each'))
      else member.resolve({ succeeded: nested.succeeded, responses: nested.responses, revision })
    })
  }

  /**
   * A batch failed as a whole. etcd refused it (one write's lease is gone, a limit lower than
   * etcd's defaults, its NOSPACE alarm): each of its writes goes again in a batch of its own, so that one write's
   * fault is its alone. etcd did not answer by the batch's deadline (the earliest of its
   * writes'): those with a later one go again (etcd may have applied the batch; each write then
   * finds its own write), the others get the error.
   */
  private failed (batch: Member[], err: unknown, deadline: Deadline): void {
    const split = batch.length > 1 && !(err instanceof EtcdUnavailableError)
    const again: Member[] = []
    for (const member of batch) {
      if (split) {
        member.alone = true
        again.push(member)
      } else if (err instanceof EtcdUnavailableError && !member.abandoned && member.deadline > deadline) {
        // Time the batch's call did not have: its write goes again (pump() checks that it is enough).
        again.push(member)
      } else {
        member.reject(err)
      }
    }
    this.queue.unshift(...again)
  }
}
