// Listing: pages of a namespace, the whole of one, and the count of a username's keys.
import type { IKeyValue, IRangeResponse } from 'etcd3'
import type { ApiKey } from '../keys/schemas.js'
import { keyAfter, rangeEnd } from './key-builder.js'
import { decodeContinueToken, encodeContinueToken } from './continue-token.js'
import { scanBatches } from './scan.js'
import type { Deadline } from './calls.js'
import type { StoreCore } from './core.js'
import { parseRecord, toApiKey, type StoredRecord } from './records.js'
import { lastUseOf, withLastUse } from './usage.js'

export interface ListOptions {
  deadline: Deadline
  /** Page size; 0 reads the whole namespace. */
  limit: number
  /** The `continue` token of the previous page. */
  continueToken?: string
  /** Keeps a key in the answer (the caller's authorization); absent keeps every key. */
  filter?: (apiKey: ApiKey) => boolean | Promise<boolean>
}

export interface ListPage {
  items: ApiKey[]
  /** Present when more keys may remain. */
  continueToken?: string
}

/** The most keys read from etcd to fill one filtered page. */
export const MAX_KEYS_SCANNED_PER_PAGE = 10_000

/** The shortest prefix of `b` that sorts after `a` (given a < b): `b` up to its first byte unlike `a`'s. */
export function separator (a: Buffer, b: Buffer): string {
  let i = 0
  while (i < a.length && a[i] === b[i]) i++
  return b.subarray(0, i + 1).toString('utf8')
}

/** What a list walks: one namespace, or every namespace when `namespace` is undefined. */
export type ListScope = string | undefined

/** The prefix a scope's keys share: `<root>/apikeys/<namespace>/`, or `<root>/apikeys/`. */
function scopePrefix (store: StoreCore, namespace: ListScope): string {
  return namespace === undefined ? store.keys.records : store.keys.namespace(namespace)
}

/** Where a walk starts: the scope's first key, or the token's start at the token's revision. */
function walkStart (store: StoreCore, namespace: ListScope, continueToken: string | undefined): { start: string, revision?: number } {
  if (!continueToken) return { start: scopePrefix(store, namespace) }
  const token = decodeContinueToken(continueToken, namespace)
  return { start: store.keys.recordAt(token.start), revision: token.rev }
}

/**
 * A range scan through the store's reads (the cache when it can), every batch after the first
 * within `later()`'s deadline.
 */
function storeBatches (store: StoreCore, start: string, end: Buffer, options: { revision?: number, pin?: boolean, first: Deadline, later: () => Deadline }): AsyncGenerator<IRangeResponse> {
  const fromToken = options.revision !== undefined
  let deadline: Deadline | undefined
  return scanBatches(request => {
    deadline = deadline === undefined ? options.first : options.later()
    return store.range({ key: request.key.toString('utf8'), end: request.end, limit: request.limit, revision: request.revision, fromToken }, deadline)
  }, { start, end }, { limit: store.readBatch, revision: options.revision, pin: options.pin })
}

/** A key a list shows, with the etcd key and create revision of its record. */
interface Shown {
  apiKey: ApiKey
  recordKey: string
  createRevision: number
}

/**
 * The keys with their last use: one range read of the usage entries from the first key's to the
 * last one's (they sort as the records do), at the revision the records were read at.
 */
async function withLastUses (store: StoreCore, shown: Shown[], revision: number | undefined, deadline: Deadline): Promise<ApiKey[]> {
  const first = shown[0]
  const last = shown[shown.length - 1]
  if (first === undefined || last === undefined) return []
  const { keys } = store
  const res = await store.range({ key: keys.usageOfRecord(first.recordKey), end: keyAfter(Buffer.from(keys.usageOfRecord(last.recordKey))), revision }, deadline)
  const uses = new Map(res.kvs.map(kv => [keys.recordOfUsage(kv.key.toString('utf8')), kv]))
  return shown.map(({ apiKey, recordKey, createRevision }) => withLastUse(apiKey, lastUseOf(uses.get(recordKey), createRevision)))
}

/** What a page read gathered so far. */
interface PageScan {
  items: Shown[]
  scanned: number
  lastKey: string
  lastShown: boolean
  more: boolean
  revision?: number
}

/** Reads keys into `scan` until the page is full, the namespace done, or the scan cap reached. */
async function fillPage (store: StoreCore, scan: PageScan, range: { start: string, end: Buffer, fromToken: boolean }, options: ListOptions): Promise<void> {
  const { limit, filter } = options
  let start = range.start
  let revoked: ((kv: IKeyValue, record: StoredRecord) => Promise<boolean>) | undefined
  while (scan.items.length < limit) {
    const want = limit - scan.items.length
    const batch = Math.min(filter ? Math.min(Math.max(want, 100), 1000, MAX_KEYS_SCANNED_PER_PAGE - scan.scanned) : want, store.readBatch)
    const res = await store.range({ key: start, end: range.end, limit: batch, revision: scan.revision, fromToken: range.fromToken }, options.deadline)
    scan.revision ??= Number(res.header.revision)
    revoked ??= store.revocationsAt(scan.revision, () => options.deadline)
    scan.more = res.more
    for (const [i, kv] of res.kvs.entries()) {
      scan.scanned++
      scan.lastKey = kv.key.toString('utf8')
      const record = parseRecord(kv)
      const apiKey = toApiKey(record)
      scan.lastShown = !await revoked(kv, record) && (!filter || await filter(apiKey))
      if (scan.lastShown) scan.items.push({ apiKey, recordKey: scan.lastKey, createRevision: Number(kv.create_revision) })
      if (scan.items.length === limit) {
        scan.more ||= i < res.kvs.length - 1
        break
      }
    }
    if (!scan.more || scan.scanned >= MAX_KEYS_SCANNED_PER_PAGE) break
    start = scan.lastKey + '\0'
  }
}

/**
 * One page of a namespace (or of every namespace), in etcd key order. The first page reads etcd's
 * newest revision; the token pins every later page to it, so a walk sees one snapshot. A filtered
 * page reads on until it is full or the scope is done, at most MAX_KEYS_SCANNED_PER_PAGE keys.
 */
export async function listPage (store: StoreCore, namespace: ListScope, options: ListOptions): Promise<ListPage> {
  const end = rangeEnd(scopePrefix(store, namespace))
  const { start, revision } = walkStart(store, namespace, options.continueToken)
  const fromToken = revision !== undefined
  const scan: PageScan = { items: [], scanned: 0, lastKey: '', lastShown: false, more: false, revision }
  await fillPage(store, scan, { start, end, fromToken }, options)
  const items = await withLastUses(store, scan.items, scan.revision, options.deadline)
  const { lastKey } = scan
  if (!scan.more) return { items }
  let next = lastKey + '\0'
  if (!scan.lastShown) {
    // The scan cap cut the page on a key the caller may not see: the token must not name it
    // (another user's key is a 404, so that its existence is not revealed). It names the
    // shortest prefix of the next key that sorts after it instead: past every key scanned.
    const after = await store.range({ key: next, end, limit: 1, revision: scan.revision, fromToken }, options.deadline)
    const nextKey = after.kvs[0]?.key
    if (nextKey === undefined) return { items }
    next = separator(Buffer.from(lastKey), nextKey)
  }
  return {
    items,
    continueToken: encodeContinueToken({ rev: scan.revision ?? 0, start: store.keys.relativeToRecords(next) })
  }
}

/**
 * The whole namespace, or every namespace (from the token on, if any), read in bounded batches at one revision.
 * The first batch is read before this resolves, so a failing etcd fails the call, not the
 * stream; each later batch has `batchTimeout` milliseconds of its own.
 */
export async function listAll (store: StoreCore, namespace: ListScope, options: Omit<ListOptions, 'limit'> & { batchTimeout: number }): Promise<AsyncIterable<ApiKey>> {
  const { filter, batchTimeout } = options
  const { start, revision } = walkStart(store, namespace, options.continueToken)
  const batches = storeBatches(store, start, rangeEnd(scopePrefix(store, namespace)), {
    revision, pin: true, first: options.deadline, later: () => Date.now() + batchTimeout
  })
  const first = await batches.next()
  if (first.done === true) return (async function * () {})()
  // Every batch is read at the first one's revision: so are the fences.
  const revoked = store.revocationsAt(Number(first.value.header.revision), () => Date.now() + batchTimeout)
  return (async function * () {
    for (let batch: IteratorResult<IRangeResponse> = first; batch.done !== true; batch = await batches.next()) {
      const shown: Shown[] = []
      for (const kv of batch.value.kvs) {
        const record = parseRecord(kv)
        if (await revoked(kv, record)) continue
        const apiKey = toApiKey(record)
        if (!filter || await filter(apiKey)) shown.push({ apiKey, recordKey: kv.key.toString('utf8'), createRevision: Number(kv.create_revision) })
      }
      yield * await withLastUses(store, shown, Number(batch.value.header.revision), Date.now() + batchTimeout)
    }
  })()
}

/** Every record, all namespaces, in batches: the first within `first`, each later one within `later()`. */
export function allRecords (store: StoreCore, first: Deadline, later: () => Deadline): AsyncGenerator<IRangeResponse> {
  return storeBatches(store, store.keys.records, rangeEnd(store.keys.records), { first, later })
}

/**
 * How many keys `username` holds, in all namespaces, counted up to `stopAt` (reading stops
 * there); revoked keys do not count. All within the request's deadline.
 */
export async function countKeysOf (store: StoreCore, username: string, stopAt: number, deadline: Deadline): Promise<number> {
  // Fences only move forward: one read before the scan revokes at least what it says.
  const fence = await store.fenceRevision(username, deadline)
  let count = 0
  for await (const batch of allRecords(store, deadline, () => deadline)) {
    for (const kv of batch.kvs) {
      if (Number(kv.create_revision) >= fence && parseRecord(kv).username === username && ++count >= stopAt) return count
    }
  }
  return count
}
