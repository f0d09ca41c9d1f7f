// Create, update and delete: each one etcd transaction guarded by what was read before it.
import { isDeepStrictEqual } from 'node:util'
import { CompareResult, CompareTarget, EtcdLeaseInvalidError, type ICompare, type IKeyValue, type IRequestOp } from 'etcd3'
import { IDEMPOTENCY_TTL_SECONDS } from '../keys/idempotency.js'
import type { ApiKey } from '../keys/schemas.js'
import { EtcdKeys } from './key-builder.js'
import type { Deadline } from './calls.js'
import type { StoreCore } from './core.js'
import type { GroupedTxn } from './group-commit.js'
import {
  idempotencyEntriesOf, inGrace, parseRecord, storedKey, toApiKey, type ReadRecord, type StoredKey, type StoredRecord
} from './records.js'
import { lastUseOf, withLastUse } from './usage.js'
import {
  CredentialRevokedError, EtcdUnavailableError, IdempotencyEntryExistsError, KeyExistsError, KeyNotFoundError, RevokedUsernameError
} from './errors.js'

/** Applying a patch retries on a conflicting write this many times at most, deadline allowing. */
export const MAX_UPDATE_ATTEMPTS = 100

/** The API key a request authenticated with, as it was verified, and how to verify it again. */
export interface Minter {
  key: StoredKey
  /**
   * The key as it authenticates now, or null when it no longer does (deleted, revoked, disabled,
   * expired, or its secret rotated away): asked when the key changed after it was verified.
   */
  recheck: (deadline: Deadline) => Promise<StoredKey | null>
}

export interface CreateOptions {
  /** The Idempotency-Key entry to write with the key: its id, and the sealed entry. */
  idempotency?: { entryId: string, entry: string }
  /** The API key the request authenticated with: the create holds only while it still authenticates. */
  minter?: Minter
}

/** What a write made by an API key is guarded by: that key's record unchanged since it was verified, and its username's fence. */
export interface MinterGuard {
  recordKey: string
  fenceKey: string
  /** The record's etcd revision when the key was verified (any change since fails the guard). */
  revision: number
  createRevision: number
}

export function minterGuard (keys: EtcdKeys, minter: StoredKey): MinterGuard {
  const { namespace, name } = minter.apiKey.metadata
  return { recordKey: keys.record(namespace, name), fenceKey: keys.fence(minter.apiKey.username), revision: minter.revision, createRevision: minter.createRevision }
}

/**
 * The guard of a write made by an API key: its record exactly as verified (so that disabling,
 * rotating or deleting it stops a write already under way) and no revocation fence of its
 * username after it (so that revoke-all does).
 */
export function minterCompares (guard: MinterGuard): ICompare[] {
  return [revisionIs(guard.recordKey, guard.revision), noFenceAfter(guard.fenceKey, guard.createRevision)]
}

/**
 * After a write's minter guard failed: the minter as it authenticates now, to guard the next
 * attempt with; a CredentialRevokedError when it no longer authenticates.
 */
export async function recheckMinter (minter: Minter | undefined, deadline: Deadline): Promise<StoredKey> {
  const again = minter === undefined ? null : await minter.recheck(deadline)
  if (again === null) throw new CredentialRevokedError('the apikey that made this request no longer authenticates (revoked, deleted, disabled, expired or rotated)')
  return again
}

/** Does a key expiring at `expiresAt` (Unix seconds) end before an Idempotency-Key entry made now would? */
export function outlivedByIdempotency (expiresAt: number | undefined): boolean {
  return expiresAt !== undefined && expiresAt < Date.now() / 1000 + IDEMPOTENCY_TTL_SECONDS
}

/** The etcd keys one create writes or guards. */
interface CreateTargets {
  recordKey: string
  digestKey: string
  entryKey?: string
  minter?: MinterGuard
}

// The parts of etcd transactions, as etcd's request (not the client's builder: group commit nests them).
export const absent = (key: string): ICompare => ({ key: Buffer.from(key), target: CompareTarget.Create, result: CompareResult.Equal, create_revision: 0 })
export const range = (key: string): IRequestOp => ({ request_range: { key: Buffer.from(key) } })
export const remove = (key: string): IRequestOp => ({ request_delete_range: { key: Buffer.from(key) } })
export const revisionIs = (key: string, revision: number): ICompare => ({ key: Buffer.from(key), target: CompareTarget.Mod, result: CompareResult.Equal, mod_revision: revision })
/** No revocation fence at `fenceKey` written after `createRevision` (a key created then is not revoked by it). */
export const noFenceAfter = (fenceKey: string, createRevision: number): ICompare =>
  ({ key: Buffer.from(fenceKey), target: CompareTarget.Mod, result: CompareResult.Less, mod_revision: createRevision })
/** The keys a transaction's operations write or delete: no two writes of a batch may touch one key. */
const keysOf = (ops: IRequestOp[]): string[] => ops.flatMap(op => {
  const key = op.request_put?.key ?? op.request_delete_range?.key
  return key === undefined ? [] : [key.toString()]
})
export const put = (key: string, value: string, lease: string | undefined): IRequestOp =>
  ({ request_put: { key: Buffer.from(key), value: Buffer.from(value), ...(lease !== undefined && { lease }) } })
/** A put that keeps the key's lease, whatever it is. */
export const putKeepingLease = (key: string, value: string): IRequestOp =>
  ({ request_put: { key: Buffer.from(key), value: Buffer.from(value), ignore_lease: true } })

/**
 * The create's transaction: every put guarded by "absent", and reads of what was in the way.
 * Built as etcd's request, not with the client's builder: group commit sends it nested in a batch's.
 */
function createTxn (targets: CreateTargets, puts: { record: string, digestTarget: string, entry?: string }, leases: { key?: string, entry?: string }): GroupedTxn {
  const { recordKey, digestKey, entryKey, minter } = targets
  const compare = [absent(recordKey), absent(digestKey)]
  const success = [put(recordKey, puts.record, leases.key), put(digestKey, puts.digestTarget, leases.key)]
  const failure = [range(recordKey)]
  const written = [recordKey, digestKey]
  if (entryKey !== undefined && puts.entry !== undefined) {
    compare.push(absent(entryKey))
    success.push(put(entryKey, puts.entry, leases.entry))
    failure.push(range(entryKey))
    written.push(entryKey)
  }
  if (minter !== undefined) compare.push(...minterCompares(minter))
  return { request: { compare, success, failure }, puts: written }
}

/**
 * Creates a key and its digest index entry in one transaction guarded by "neither exists". A
 * retried create whose first attempt etcd applied finds its own record (same digest): success.
 * With `idempotency`, the same transaction writes that entry too, guarded by "it does not
 * exist": if another request with the same Idempotency-Key wrote it first, nothing is written
 * and IdempotencyEntryExistsError carries the entry. With `minter`, the API key the request
 * authenticated with, the transaction is also guarded by "that key is as it was verified and no
 * revocation fence of its username came after it": a leaked key cannot mint past a revoke-all,
 * nor after it was deleted, disabled or rotated away (CredentialRevokedError). A key changed
 * otherwise meanwhile (a label) is verified again, and the create tried again. The transaction
 * goes through group commit (group-commit.ts): it may share an etcd transaction with other
 * creates, its guards and its outcome its own.
 */
export async function createKey (store: StoreCore, apiKey: ApiKey, digest: string, deadline: Deadline, options: CreateOptions = {}): Promise<StoredKey> {
  const { idempotency, minter } = options
  const { keys } = store
  const { namespace, name } = apiKey.metadata
  const targets: CreateTargets = {
    recordKey: keys.record(namespace, name),
    digestKey: keys.digest(digest),
    entryKey: idempotency && keys.idempotency(idempotency.entryId),
    minter: minter && minterGuard(keys, minter.key)
  }
  const record: StoredRecord = { ...apiKey, key_sha256: digest, ...(idempotency !== undefined && { idempotency_entry: idempotency.entryId }) }
  const puts = { record: JSON.stringify(record), digestTarget: EtcdKeys.digestTarget(namespace, name), entry: idempotency?.entry }
  const lease = await store.leaseUntil(apiKey.expires_at, deadline)
  for (let attempt = 1; ; attempt++) {
    // The entry lives and dies with a key that expires before it would.
    const entryLease = idempotency && (lease !== undefined && outlivedByIdempotency(apiKey.expires_at)
      ? lease
      : await store.leaseForIdempotency(deadline))
    let res
    try {
      res = await store.commitGrouped(createTxn(targets, puts, { key: lease, entry: entryLease }), deadline)
    } catch (err) {
      // The shared lease was revoked or lost (etcd restored from a backup): grant another, once.
      if (err instanceof EtcdLeaseInvalidError && entryLease !== undefined && entryLease !== lease && attempt === 1) {
        store.forgetIdempotencyLease()
        continue
      }
      // Not the key's lease: etcd may have applied the write whose answer failed.
      throw err
    }
    if (res.succeeded) return { apiKey, revision: res.revision, createRevision: res.revision }
    // Our own write, applied by an attempt whose answer was lost (entry included): success. Its
    // lease now holds the key, so it must not be revoked as a lease nothing uses.
    const existing = res.responses[0]?.response_range?.kvs[0]
    if (existing && parseRecord(existing).key_sha256 === digest) {
      return { apiKey, revision: Number(existing.mod_revision), createRevision: Number(existing.create_revision) }
    }
    const entry = targets.entryKey === undefined ? undefined : res.responses[1]?.response_range?.kvs[0]
    // Neither the record nor the entry was in the way, and a digest is never shared: the minter's
    // guard failed. If the minter still authenticates, the create goes again, guarded by it as it is now.
    const minterNow = entry || existing || attempt >= MAX_UPDATE_ATTEMPTS ? undefined : await recheckMinter(minter, deadline).catch(err => { store.revokeLease(lease); throw err })
    if (minterNow !== undefined) {
      targets.minter = minterGuard(keys, minterNow)
      continue
    }
    store.revokeLease(lease)
    if (entry) throw new IdempotencyEntryExistsError(entry.value.toString('utf8'))
    if (existing) throw new KeyExistsError(`apikey ${name} already exists`)
    throw new EtcdUnavailableError('too many conflicting writes')
  }
}

/** A record's usage entry as read with it (see usage.ts): its etcd key, and what etcd held there. */
interface UsageRead {
  key: string
  kv?: IKeyValue
}

/**
 * The lease for a previous digest's entry during a rotation's grace: the key's own when the key
 * ends first (they go together), else one that ends at `until`, the second the grace ends
 * (`granted`: a new lease, to revoke if the write fails). Granted after `until` was computed, it
 * never ends before it.
 */
export async function previousDigestLease (
  store: StoreCore, until: number, key: { expiresAt: number | undefined, lease: string | undefined }, deadline: Deadline
): Promise<{ lease: string | undefined, granted: boolean }> {
  if (key.expiresAt !== undefined && key.expiresAt <= until) return { lease: key.lease, granted: false }
  return { lease: await store.leaseUntil(until, deadline), granted: true }
}

/**
 * One compare-and-swap of a record from `current` to `after`, guarded by its revision and by both
 * usernames' fences (and, for a change made with an API key, by that key: see minterCompares). An unchanged expiry keeps the lease; a changed one moves the record, its
 * digest entry and its usage entry (guarded by its revision as read) to a new lease (or to none),
 * and ends the key's Idempotency-Key entries, which cannot follow; a previous digest still in its
 * grace moves to a lease that ends with the grace (or the key). Resolves with the written
 * revision, or undefined when the guard failed.
 */
async function swapRecord (
  store: StoreCore, recordKey: string, current: ReadRecord, usage: UsageRead, after: StoredRecord, deadline: Deadline, minter?: MinterGuard
): Promise<number | undefined> {
  const { keys } = store
  const before = current.value
  const written = JSON.stringify(after)
  const keepLease = after.expires_at === before.expires_at
  const digest = before.key_sha256
  const lease = keepLease ? undefined : await store.leaseUntil(after.expires_at, deadline)
  const previous = keepLease || after.previous_sha256 === undefined || after.previous_until === undefined
    ? undefined
    : { digest: after.previous_sha256, ...await previousDigestLease(store, after.previous_until, { expiresAt: after.expires_at, lease }, deadline) }
  const { namespace, name } = before.metadata
  const target = EtcdKeys.digestTarget(namespace, name)
  const compare = [
    revisionIs(recordKey, current.revision),
    noFenceAfter(keys.fence(before.username), current.createRevision),
    noFenceAfter(keys.fence(after.username), current.createRevision)
  ]
  const success = keepLease
    ? [putKeepingLease(recordKey, written)]
    : [
        put(recordKey, written, lease),
        put(keys.digest(digest), target, lease),
        ...previous === undefined ? [] : [put(keys.digest(previous.digest), target, previous.lease)],
        ...idempotencyEntriesOf(before).map(entryId => remove(keys.idempotency(entryId))),
        ...usage.kv === undefined ? [] : [put(usage.key, usage.kv.value.toString('utf8'), lease)]
      ]
  // The usage entry must not stay on the old lease, which is revoked below: it moves too.
  if (!keepLease) compare.push(revisionIs(usage.key, Number(usage.kv?.mod_revision ?? 0)))
  if (minter !== undefined) compare.push(...minterCompares(minter))
  // Sent with the writes that arrive together (group commit), guarded on its own.
  const res = await store.commitGrouped({ request: { compare, success, failure: [] }, puts: keysOf(success) }, deadline)
  if (res.succeeded) {
    // The record and its digest entries moved off their old lease: nothing holds it any more.
    if (!keepLease) store.revokeLease(current.lease)
    return res.revision
  }
  store.revokeLease(lease)
  if (previous?.granted === true) store.revokeLease(previous.lease)
  return undefined
}

/**
 * The record `after` makes of the stored one: the resource, the digest, the previous digest while
 * its grace lasts, and the Idempotency-Key entries unless a changed expiry ends them (swapRecord).
 */
function updatedRecord (stored: StoredRecord, { last_used_at: _lastUse, ...after }: ApiKey): StoredRecord {
  const keepEntries = after.expires_at === stored.expires_at
  const previous = stored.previous_sha256
  return {
    ...after,
    key_sha256: stored.key_sha256,
    ...(keepEntries && stored.idempotency_entry !== undefined && { idempotency_entry: stored.idempotency_entry }),
    ...(previous !== undefined && inGrace(stored, previous) && { previous_sha256: previous, previous_until: stored.previous_until }),
    ...(keepEntries && stored.rotation_entries !== undefined && { rotation_entries: stored.rotation_entries })
  }
}

/**
 * Applies `change` to the stored key with compare-and-swap on its revision, and retries on a
 * conflicting write, as the Kubernetes API server does: concurrent updates all apply. `change`
 * may throw to refuse the update. A revoked key is not found, and a revocation fence written
 * between the read and the write fails the write (the retry then finds the key revoked). With
 * `minter`, the API key the request authenticated with, the write holds only while that key
 * still authenticates (CredentialRevokedError): a leaked key's PATCH under way cannot switch it
 * back on after an admin disabled it.
 */
export async function updateKey (
  store: StoreCore, namespace: string, name: string,
  change: (current: StoredKey) => ApiKey | Promise<ApiKey>,
  deadline: Deadline, minter?: Minter
): Promise<StoredKey> {
  const recordKey = store.keys.record(namespace, name)
  let guard = minter && minterGuard(store.keys, minter.key)
  let written: string | undefined
  for (let attempt = 1; ; attempt++) {
    const current = await store.getLiveRecord(recordKey, deadline)
    if (!current) throw new KeyNotFoundError(`apikey ${name} not found`)
    // A retried write that etcd applied before its answer was lost: what we wrote is there.
    if (written !== undefined && JSON.stringify(current.value) === written) return storedKey(current)
    // The change sees the key as a GET shows it, last use included (which a patch may only repeat).
    const usage = await readUsage(store, recordKey, current, deadline)
    const before = withLastUse(toApiKey(current.value), lastUseOf(usage.kv, current.createRevision))
    const stored = { ...storedKey(current), apiKey: before }
    const after = await change(stored)
    if (isDeepStrictEqual(after, before)) return stored
    // A key older than its new username's revocation would be revoked the moment it got it.
    if (after.username !== before.username && current.createRevision < await store.fenceRevision(after.username, deadline)) {
      throw new RevokedUsernameError(after.username)
    }
    const record = updatedRecord(current.value, after)
    written = JSON.stringify(record)
    const revision = await swapRecord(store, recordKey, current, usage, record, deadline, guard)
    if (revision !== undefined) return { apiKey: after, revision, createRevision: current.createRevision }
    if (attempt >= MAX_UPDATE_ATTEMPTS) throw new EtcdUnavailableError('too many conflicting writes')
    // The key, a fence or the minter changed: a minter that no longer authenticates ends it here.
    if (minter !== undefined) guard = minterGuard(store.keys, await recheckMinter(minter, deadline))
  }
}

/** The usage entry of a record, at the revision the record was read at. */
async function readUsage (store: StoreCore, recordKey: string, current: ReadRecord, deadline: Deadline): Promise<UsageRead> {
  const key = store.keys.usageOfRecord(recordKey)
  return { key, kv: await store.keyAsOf(key, current, deadline) }
}

/**
 * Deletes a key with its digest index entry and its Idempotency-Key entry in one transaction
 * guarded by the revision read. `check` may throw to refuse the delete. A key that vanished
 * after a conflicting attempt was deleted (by this call's own retried write, or by a concurrent
 * delete): the goal holds. A revoked key is not found. With `minter`, as updateKey.
 */
export async function deleteKey (
  store: StoreCore, namespace: string, name: string, check: (current: StoredKey) => void | Promise<void>, deadline: Deadline, minter?: Minter
): Promise<void> {
  const recordKey = store.keys.record(namespace, name)
  let guard = minter && minterGuard(store.keys, minter.key)
  for (let attempt = 1; ; attempt++) {
    const current = await store.getLiveRecord(recordKey, deadline)
    if (!current) {
      if (attempt === 1) throw new KeyNotFoundError(`apikey ${name} not found`)
      return
    }
    await check(storedKey(current))
    if (await deleteRecord(store, recordKey, current, deadline, guard)) return
    if (attempt >= MAX_UPDATE_ATTEMPTS) throw new EtcdUnavailableError('too many conflicting writes')
    if (minter !== undefined) guard = minterGuard(store.keys, await recheckMinter(minter, deadline))
  }
}

/**
 * Deletes the record as read, with its digest entries (a previous one in a grace too),
 * Idempotency-Key entries and usage entry, unless it changed since; true when it did. Its lease,
 * if any, holds nothing any more and is revoked.
 */
export async function deleteRecord (store: StoreCore, recordKey: string, current: ReadRecord, deadline: Deadline, minter?: MinterGuard): Promise<boolean> {
  const { keys } = store
  const { key_sha256: digest, previous_sha256: previous } = current.value
  const success = [
    remove(recordKey),
    remove(keys.digest(digest)),
    ...previous === undefined ? [] : [remove(keys.digest(previous))],
    ...idempotencyEntriesOf(current.value).map(entryId => remove(keys.idempotency(entryId))),
    remove(keys.usageOfRecord(recordKey))
  ]
  // Sent with the writes that arrive together (group commit), guarded on its own.
  const compare = [revisionIs(recordKey, current.revision), ...minter === undefined ? [] : minterCompares(minter)]
  const res = await store.commitGrouped({ request: { compare, success, failure: [] }, puts: keysOf(success) }, deadline)
  if (res.succeeded) store.revokeLease(current.lease)
  return res.succeeded
}
