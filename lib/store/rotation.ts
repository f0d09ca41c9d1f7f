// Rotation: a key's new secret, and the old one's end, in one etcd transaction with the record.
import { EtcdLeaseInvalidError, type ITxnRequest } from 'etcd3'
import type { ApiKey } from '../keys/schemas.js'
import { EtcdKeys } from './key-builder.js'
import type { Deadline } from './calls.js'
import type { StoreCore } from './core.js'
import {
  MAX_UPDATE_ATTEMPTS, absent, minterCompares, minterGuard, noFenceAfter, outlivedByIdempotency, previousDigestLease, put, putKeepingLease,
  range, recheckMinter, remove, revisionIs, type CreateOptions
} from './transactions.js'
import { MAX_ROTATION_ENTRIES, parseRecord, storedKey, type ReadRecord, type StoredKey, type StoredRecord } from './records.js'
import { EtcdUnavailableError, IdempotencyEntryExistsError, KeyNotFoundError } from './errors.js'

export interface RotateOptions extends CreateOptions {
  /** How long the old secret keeps working, in seconds; 0: it stops at once. */
  graceSeconds: number
}

/**
 * What the stored record becomes: the new digest; the old one kept with the second its grace
 * ends (none with a grace of 0, and never the one before it); the rotation's Idempotency-Key entry
 * remembered, the oldest forgotten past MAX_ROTATION_ENTRIES (`dropped`: to delete).
 */
function rotatedRecord (stored: StoredRecord, after: ApiKey, digest: string, graceUntil: number | undefined, entryId: string | undefined) {
  const entries = [...stored.rotation_entries ?? [], ...entryId === undefined ? [] : [entryId]]
  const dropped = entries.splice(0, Math.max(0, entries.length - MAX_ROTATION_ENTRIES))
  const record: StoredRecord = {
    ...after,
    key_sha256: digest,
    ...(stored.idempotency_entry !== undefined && { idempotency_entry: stored.idempotency_entry }),
    ...(graceUntil !== undefined && { previous_sha256: stored.key_sha256, previous_until: graceUntil }),
    ...(entries.length > 0 && { rotation_entries: entries })
  }
  return { record, dropped }
}

/** What one attempt writes besides the record, and the leases it was given. */
interface Attempt {
  record: StoredRecord
  dropped: string[]
  keyLease: string | undefined
  /** The old digest's lease during a grace (granted: to revoke if the write fails). */
  previous?: { lease: string | undefined, granted: boolean }
  entryLease?: string
}

/**
 * The rotation's transaction, guarded as swapRecord is, and by "the new digest and the entry are
 * new" and by the minter (`minter`: as last verified).
 */
function rotateTxn (store: StoreCore, current: ReadRecord, attempt: Attempt, options: RotateOptions, minter: StoredKey | undefined): ITxnRequest {
  const { keys } = store
  const before = current.value
  const { record, dropped, keyLease, previous, entryLease } = attempt
  const { namespace, name } = before.metadata
  const recordKey = keys.record(namespace, name)
  const target = EtcdKeys.digestTarget(namespace, name)
  const newDigestKey = keys.digest(record.key_sha256)
  const oldDigestKey = keys.digest(before.key_sha256)
  const entry = options.idempotency && { key: keys.idempotency(options.idempotency.entryId), value: options.idempotency.entry }
  const compare = [
    revisionIs(recordKey, current.revision),
    noFenceAfter(keys.fence(before.username), current.createRevision),
    absent(newDigestKey),
    ...entry === undefined ? [] : [absent(entry.key)],
    ...minter === undefined ? [] : minterCompares(minterGuard(keys, minter))
  ]
  const success = [
    putKeepingLease(recordKey, JSON.stringify(record)),
    put(newDigestKey, target, keyLease),
    // The old digest: gone now, or put again on a lease that etcd ends with the grace.
    previous === undefined ? remove(oldDigestKey) : put(oldDigestKey, target, previous.lease),
    // Only one previous digest at a time: one still in an earlier grace ends now.
    ...before.previous_sha256 === undefined ? [] : [remove(keys.digest(before.previous_sha256))],
    ...dropped.map(entryId => remove(keys.idempotency(entryId))),
    ...entry === undefined ? [] : [put(entry.key, entry.value, entryLease)]
  ]
  const failure = [range(recordKey), ...entry === undefined ? [] : [range(entry.key)]]
  return { compare, success, failure }
}

/** The leases one attempt needs: the key's own (kept), the old digest's during a grace, the entry's. */
async function leasesFor (store: StoreCore, current: ReadRecord, graceUntil: number | undefined, options: RotateOptions, deadline: Deadline) {
  const expiresAt = current.value.expires_at
  const keyLease = current.lease === '0' ? undefined : current.lease
  const previous = graceUntil === undefined ? undefined : await previousDigestLease(store, graceUntil, { expiresAt, lease: keyLease }, deadline)
  // The entry lives and dies with a key that expires before it would.
  const entryLease = options.idempotency && (keyLease !== undefined && outlivedByIdempotency(expiresAt)
    ? keyLease
    : await store.leaseForIdempotency(deadline))
  return { keyLease, previous, entryLease }
}

/**
 * Gives the key the secret whose digest is `digest`: one transaction puts the record (the new
 * digest, `rotated_at`, the old digest with the second its grace ends), the new digest entry on
 * the key's lease, and ends the old digest entry (deleted, or put on a lease of the grace), so
 * that there is never a moment with neither secret valid nor one with the old valid past its
 * grace. Guarded as an update is (the record's revision, its username's fence: a rotation never
 * revives a revoked key), and as a create is (the Idempotency-Key entry, the minter). An expired
 * key is not found. `change` makes the key as rotated, and may throw to refuse the rotation
 * (visibility, If-Match, authorization); a conflicting write makes it run again on the new read.
 */
export async function rotateKey (
  store: StoreCore, namespace: string, name: string,
  change: (current: StoredKey) => ApiKey | Promise<ApiKey>,
  digest: string, options: RotateOptions, deadline: Deadline
): Promise<StoredKey> {
  const recordKey = store.keys.record(namespace, name)
  let minter = options.minter?.key
  for (let attempt = 1; ; attempt++) {
    const current = await store.getLiveRecord(recordKey, deadline)
    const now = Date.now()
    // A retried write that etcd applied before its answer was lost: what we wrote is there.
    if (current !== null && current.value.key_sha256 === digest) return storedKey(current)
    const expiresAt = current?.value.expires_at
    if (current === null || (expiresAt !== undefined && now / 1000 >= expiresAt)) throw new KeyNotFoundError(`apikey ${name} not found`)
    const after = await change(storedKey(current))
    const graceUntil = options.graceSeconds > 0 ? Math.floor(now / 1000) + options.graceSeconds : undefined
    const { record, dropped } = rotatedRecord(current.value, after, digest, graceUntil, options.idempotency?.entryId)
    const leases = await leasesFor(store, current, graceUntil, options, deadline)
    let res
    try {
      res = await store.call('txn', deadline, callOptions => store.client.kv.txn(rotateTxn(store, current, { record, dropped, ...leases }, options, minter), callOptions))
    } catch (err) {
      if (leases.previous?.granted === true) store.revokeLease(leases.previous.lease)
      // A lease that ended meanwhile: the key's (it expired: the next read says so) or the shared idempotency one.
      if (!(err instanceof EtcdLeaseInvalidError) || attempt >= MAX_UPDATE_ATTEMPTS) throw err
      store.forgetIdempotencyLease()
      continue
    }
    if (res.succeeded) return { apiKey: after, revision: Number(res.header.revision), createRevision: current.createRevision }
    if (leases.previous?.granted === true) store.revokeLease(leases.previous.lease)
    const entry = options.idempotency === undefined ? undefined : res.responses[1]?.response_range?.kvs[0]
    if (entry) throw new IdempotencyEntryExistsError(entry.value.toString('utf8'))
    const seen = res.responses[0]?.response_range?.kvs[0]
    if (seen !== undefined && Number(seen.mod_revision) === current.revision && parseRecord(seen).key_sha256 === current.value.key_sha256) {
      // The record is as read, so a fence failed the guard (the key's: the next read finds it
      // revoked), or the minter's guard did. A minter that still authenticates guards the next attempt as it is now.
      if (current.createRevision < await store.fenceRevision(current.value.username, deadline)) throw new KeyNotFoundError(`apikey ${name} not found`)
      minter = await recheckMinter(options.minter, deadline)
    }
    if (attempt >= MAX_UPDATE_ATTEMPTS) throw new EtcdUnavailableError('too many conflicting writes')
  }
}
