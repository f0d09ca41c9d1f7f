import type { Etcd3, IKeyValue, IRangeResponse } from 'etcd3'
import type { EtcdKeys } from './key-builder.js'
import type { Deadline } from './calls.js'
import type { EtcdOperation } from './observer.js'
import type { ReadRecord, StoredRecord } from './records.js'
import type { GroupedResult, GroupedTxn } from './group-commit.js'

/** A range read as the store makes it: keys are strings, as the key builder makes them. */
export interface RangeRequest {
  key: string
  end?: Buffer
  limit?: number
  revision?: number
  /** The revision comes from a client's continue token (see ApiKeyStore.range). */
  fromToken?: boolean
}

/**
 * What the writes (transactions.ts), the walks (list.ts) and revoke-all (revoke.ts) use of the
 * store: its client and key builder, its calls and reads. ApiKeyStore is it.
 */
export interface StoreCore {
  readonly client: Etcd3
  readonly keys: EtcdKeys
  readonly readBatch: number
  call<T>(operation: EtcdOperation, deadline: Deadline, call: (options: { deadline: Date }) => Promise<T>): Promise<T>
  /** A create's, patch's or delete's transaction, in the next batch of writes (see group-commit.ts). */
  commitGrouped(txn: GroupedTxn, deadline: Deadline): Promise<GroupedResult>
  range(request: RangeRequest, deadline: Deadline): Promise<IRangeResponse>
  getRecord(etcdKey: string, deadline: Deadline, revision?: number): Promise<ReadRecord | null>
  getLiveRecord(etcdKey: string, deadline: Deadline, revision?: number): Promise<ReadRecord | null>
  keyAsOf(key: string, record: ReadRecord, deadline: Deadline): IKeyValue | undefined | Promise<IKeyValue | undefined>
  fenceRevision(username: string, deadline: Deadline, revision?: number): Promise<number>
  revocationsAt(revision: number, deadline: () => Deadline): (kv: IKeyValue, record: StoredRecord) => Promise<boolean>
  revokeLease(lease: string | undefined): void
  leaseUntil(expiresAt: number | undefined, deadline: Deadline): Promise<string | undefined>
  leaseForIdempotency(deadline: Deadline): Promise<string>
  forgetIdempotencyLease(): void
}
