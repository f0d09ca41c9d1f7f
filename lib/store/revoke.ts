// Revoke-all: a revocation fence, then the revoked records deleted.
import type { IKeyValue } from 'etcd3'
import type { Deadline } from './calls.js'
import type { StoreCore } from './core.js'
import { EtcdNoSpaceError, EtcdUnavailableError } from './errors.js'
import { inParallel } from './concurrency.js'
import { allRecords } from './list.js'
import { parseRecord } from './records.js'
import { MAX_UPDATE_ATTEMPTS, deleteRecord } from './transactions.js'

/** Keys deleted at once by revokeAllOf. */
const REVOKE_CONCURRENCY = 8

/**
 * Revokes every key of `username`, in all namespaces, at once and for good: first a revocation
 * fence, one etcd key whose revision revokes every key of that username created before it (at
 * verify, on every server, and in reads and counts), and which a create made with a key so
 * revoked can never pass (see createKey's `minter`): so a leaked key minting more loses. Then the
 * revoked records are deleted, each with its digest entry and Idempotency-Key entry; every
 * one of them is already there for the scan to find, since nothing can be created before the
 * fence any more. Reads the records in bounded batches, the first within the request's
 * deadline, each later one (and each delete) with `batchTimeout` ms. Resolves with how many
 * keys it deleted.
 */
export async function revokeAllOf (store: StoreCore, username: string, options: { deadline: Deadline, batchTimeout: number }): Promise<number> {
  const fence = await writeFence(store, username, options.deadline)
  let deleted = 0
  for await (const batch of allRecords(store, options.deadline, () => Date.now() + options.batchTimeout)) {
    const theirs = batch.kvs.filter(kv => Number(kv.create_revision) < fence && parseRecord(kv).username === username)
    const done = await inParallel(theirs, REVOKE_CONCURRENCY, kv => removeRevoked(store, kv, Date.now() + options.batchTimeout))
    deleted += done.filter(Boolean).length
  }
  return deleted
}

/**
 * Writes `username`'s revocation fence; its etcd revision. When etcd is out of space (its NOSPACE
 * alarm: a leaked key filling etcd is just when a revoke-all is needed) no fence can be written,
 * but no key can be created either, while etcd still takes deletes: then every record of the user
 * is revoked by deleting it (Infinity: all of them).
 */
async function writeFence (store: StoreCore, username: string, deadline: Deadline): Promise<number> {
  const value = JSON.stringify({ username, revoked_at: Math.floor(Date.now() / 1000) })
  try {
    const written = await store.call('put', deadline, callOptions => store.client.put(store.keys.fence(username)).value(value).options(callOptions).exec())
    return Number(written.header.revision)
  } catch (err) {
    if (err instanceof EtcdNoSpaceError) return Infinity
    throw err
  }
}

/** Deletes a revoked record found by a scan, whatever was changed in it since; true when this call deleted it. */
async function removeRevoked (store: StoreCore, kv: IKeyValue, deadline: Deadline): Promise<boolean> {
  const recordKey = kv.key.toString('utf8')
  for (let attempt = 1; attempt <= MAX_UPDATE_ATTEMPTS; attempt++) {
    const current = await store.getRecord(recordKey, deadline)
    if (current === null || current.createRevision !== Number(kv.create_revision)) return false
    if (await deleteRecord(store, recordKey, current, deadline)) return true
  }
  throw new EtcdUnavailableError('too many conflicting writes')
}
