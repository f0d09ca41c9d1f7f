// A key as etcd holds it (its record), and how it is read back.
import type { IKeyValue } from 'etcd3'
import type { ApiKey } from '../keys/schemas.js'
import { GRPC_DEFAULT_RECEIVE_BYTES } from './client-policy.js'

/** A key as etcd holds it: the resource and the SHA-256 digest of its secret. */
export interface StoredRecord extends ApiKey {
  key_sha256: string
  /** The id of the Idempotency-Key entry that made the key: it is deleted with the key. */
  idempotency_entry?: string
  /**
   * During a rotation's grace: the digest of the secret before it, which authenticates until
   * `previous_until` (Unix seconds, excluded). Its digest entry is on a lease that ends then.
   */
  previous_sha256?: string
  previous_until?: number
  /**
   * The ids of the Idempotency-Key entries of the key's latest rotations (at most
   * MAX_ROTATION_ENTRIES, oldest first): they are deleted with the key.
   */
  rotation_entries?: string[]
}

/** What a record keeps of rotations' Idempotency-Key entries: a retry is recognised for the last few. */
export const MAX_ROTATION_ENTRIES = 4

/** Does the record name `digest` as a secret that authenticates at `nowSeconds`: its own, or the previous one during the grace? */
export function namesDigest (record: StoredRecord, digest: string, nowSeconds = Date.now() / 1000): boolean {
  return record.key_sha256 === digest || inGrace(record, digest, nowSeconds)
}

/** Is `digest` the record's previous digest, its grace not yet over at `nowSeconds`? */
export function inGrace (record: StoredRecord, digest: string, nowSeconds = Date.now() / 1000): boolean {
  return record.previous_sha256 === digest && record.previous_until !== undefined && nowSeconds < record.previous_until
}

/** The etcd ids of every entry of the record's Idempotency-Keys (its create's, its rotations'). */
export function idempotencyEntriesOf (record: StoredRecord): string[] {
  return [...record.idempotency_entry === undefined ? [] : [record.idempotency_entry], ...record.rotation_entries ?? []]
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
  const {
    key_sha256: _digest, idempotency_entry: _entry, previous_sha256: _previous, previous_until: _until, rotation_entries: _rotations,
    ...apiKey
  } = record
  return apiKey
}

export function storedKey (record: ReadRecord): StoredKey {
  return { apiKey: toApiKey(record.value), revision: record.revision, createRevision: record.createRevision, lease: record.lease }
}
