// A key as etcd holds it (its record), and how it is read back.
import type { IKeyValue, PutBuilder } from 'etcd3'
import type { ApiKey } from '../keys/schemas.js'
import { GRPC_DEFAULT_RECEIVE_BYTES } from './client-policy.js'

/** A key as etcd holds it: the resource and the SHA-256 digest of its secret. */
export interface StoredRecord extends ApiKey {
  key_sha256: string
  /** The id of the Idempotency-Key entry that made the key: it is deleted with the key. */
  idempotency_entry?: string
}

/** A key read from etcd, with the revision that last changed it. */
export interface StoredKey {
  apiKey: ApiKey
  /** etcd's mod_revision of the record: the key's version, and its ETag. */
  revision: number
  /**
   * etcd's create_revision of the record. A revocation fence of the key's username written at a
   * later revision revokes it (see revokeAllOf).
   */
  createRevision: number
  /** The lease the record is on ('0': none), when it was read from etcd: a use is recorded on it. */
  lease?: string
}

/** A record as read, with what etcd says of it and the revision it was read at. */
export interface ReadRecord {
  value: StoredRecord
  revision: number
  createRevision: number
  lease: string
  readAt: number
}

/** The most keys one etcd range read asks for (fewer when keys may be large: see readBatchFor). */
const MAX_READ_BATCH = 500

/**
 * Keys per range read, so that a read of the largest keys stays under the client's answer limit
 * (`receiveBytes`, gRPC's GRPC_DEFAULT_RECEIVE_BYTES by default): three quarters of it, for the framing and the names.
 */
export function readBatchFor (keyBytes: number, receiveBytes = GRPC_DEFAULT_RECEIVE_BYTES): number {
  return Math.max(1, Math.min(MAX_READ_BATCH, Math.floor(receiveBytes * 3 / 4 / keyBytes)))
}

export function parseRecord (kv: IKeyValue): StoredRecord {
  return JSON.parse(kv.value.toString('utf8')) as StoredRecord
}

/** The public resource: the stored record without what only the store reads. */
export function toApiKey (record: StoredRecord): ApiKey {
  const { key_sha256: _digest, idempotency_entry: _entry, ...apiKey } = record
  return apiKey
}

export function storedKey (record: ReadRecord): StoredKey {
  return { apiKey: toApiKey(record.value), revision: record.revision, createRevision: record.createRevision, lease: record.lease }
}

/** A put on `lease`, or on none. */
export function withLease (put: PutBuilder, lease: string | undefined): PutBuilder {
  return lease === undefined ? put : put.lease(lease)
}
