// The consistency check of the key layout (`npm run check-consistency`): records whose digest
// entry is missing or points elsewhere, digest entries whose record is missing or carries another
// digest (a rotation's old digest is the record's during its grace), usage entries (last_used_at) whose key is gone. The plugin never makes them (a record and its entry change in one transaction); a hand
// edit, a partial restore or a bug can.
import { GRPCOutOfRangeError, type Etcd3, type IKeyValue, type IRangeResponse } from 'etcd3'
import { EtcdKeys, rangeEnd } from '../store/key-builder.js'
import { readBatchFor } from '../store/records.js'
import { scanBatches } from '../store/scan.js'
import { inParallel } from '../store/concurrency.js'
import { maxKeyBytes } from '../keys/strategy.js'
import { parseQualifiedName } from '../keys/names.js'
import { defaults } from '../options.js'

export type OrphanKind =
  /** A record whose digest entry is missing. Repaired: the entry is written again. */
  | 'record-without-digest'
  /** A record whose digest entry points at another record, which does not carry the digest. Repaired: the entry points back. */
  | 'digest-points-elsewhere'
  /** A digest entry whose record is missing. Repaired: the entry is deleted. */
  | 'digest-without-record'
  /** A digest entry whose record carries another digest (neither its own nor, in a grace, its previous one). Repaired: the entry is deleted. */
  | 'digest-of-other-record'
  /**
   * A rotation's old digest entry whose grace ended over GRACE_LEASE_SLACK_SECONDS ago, which its
   * lease should have removed (it no longer authenticates either way). Repaired: the entry is deleted.
   */
  | 'digest-past-grace'
  /** Several records carry one digest: which one the secret belongs to is a human's call. Not repaired. */
  | 'shared-digest'
  /** A record that is not a key's JSON with its digest. Not repaired. */
  | 'unreadable-record'
  /** A usage entry (last_used_at) whose record is missing, or is a later key of the same name. Repaired: the entry is deleted. */
  | 'usage-without-record'

/** One etcd key as the scan read it: a repair applies only if it is unchanged (revision 0: absent). */
export interface ReadKey {
  key: string
  revision: number
}

export interface Orphan {
  kind: OrphanKind
  /** The SHA-256 hex digest involved; never to be shown whole (see abbreviateDigest). Empty for an unreadable record. */
  digest: string
  /** `<namespace>/<name>` of the record involved: the one that carries the digest, or the unreadable one. */
  record?: string
  /** Where the digest entry points (`<namespace>/<name>` as stored), when it exists. */
  target?: string
  /** For a shared digest: every record that carries it. */
  records?: string[]
  /** The repair, when there is one: applied in a transaction guarded by `read`. */
  fix?: { put: { key: string, value: string, lease: string } } | { delete: string }
  read: ReadKey[]
}

export interface ConsistencyReport {
  root: string
  /** The etcd revision every read was made at. */
  revision: number
  records: number
  digests: number
  /** Usage entries (each key's last use) read. */
  usage: number
  orphans: Orphan[]
}

export type RepairOutcome = 'repaired' | 'changed' | 'not-repairable'

export interface Repair {
  orphan: Orphan
  /** `changed`: a key the scan read was written since, so the fix was not applied: scan again. */
  outcome: RepairOutcome
}

export interface ConsistencyOptions {
  /** Milliseconds for each etcd call. Default 5000. */
  callTimeout?: number
  /** Records per range read. Default: as many of the largest records as stay under gRPC's default answer limit (GRPC_DEFAULT_RECEIVE_BYTES). */
  recordBatch?: number
  /** Digest entries (a few dozen bytes each) per range read. Default 500. */
  digestBatch?: number
  /** Point reads made at once. Default 16. */
  concurrency?: number
}

const HEX_DIGEST = /^[0-9a-f]{64}$/

/**
 * How long after a grace has ended its old digest entry may still be in etcd without being an
 * orphan: etcd ends a lease on its leader's clock, a little late, later still across an election.
 */
export const GRACE_LEASE_SLACK_SECONDS = 60

/** A record as the scan needs it. */
interface RecordRef {
  path: string
  revision: number
  lease: string
  /** Undefined when the value is not a key's JSON with its digest. */
  digest?: string
  /** During (or after) a rotation's grace: the old digest and the second its grace ends. */
  previous?: { digest: string, until: number }
}

/** A digest index entry as the scan needs it. */
interface EntryRef {
  digest: string
  target: string
  revision: number
}

/** What the record scan found wrong with one digest: the records that carry it, and its entry. */
interface Suspect {
  claimants: Map<string, RecordRef>
  entry?: EntryRef
  /** The record the entry points at, when it is not a claimant (null: missing). */
  pointed?: RecordRef | null
}

/** A digest as it may be shown: its first 12 hex digits, enough to find it, too few to be the index key. */
export function abbreviateDigest (digest: string): string {
  return `sha256:${digest.slice(0, 12)}…`
}

/**
 * Scans `<root>/apikeys/` and `<root>/apikey-digests/` in bounded batches, every read (point
 * reads included) at the revision of the first, so that the report describes one snapshot
 * whatever a live server writes meanwhile. Memory grows with the orphans, not with the keys.
 */
export async function checkConsistency (client: Etcd3, root: string, options: ConsistencyOptions = {}): Promise<ConsistencyReport> {
  const keys = new EtcdKeys(root)
  const reader = new SnapshotReader(client, options.callTimeout ?? 5000)
  const concurrency = options.concurrency ?? 16
  const suspects = new Map<string, Suspect>()
  const orphans: Orphan[] = []
  const suspect = (digest: string) => suspects.get(digest) ?? suspects.set(digest, { claimants: new Map() }).get(digest) as Suspect

  let records = 0
  const recordBatch = options.recordBatch ?? readBatchFor(maxKeyBytes(defaults.bodyLimit))
  for await (const batch of reader.batches(keys.records, recordBatch)) {
    records += batch.length
    await inParallel(batch, concurrency, async kv => {
      const record = recordRef(keys, kv)
      if (record.digest === undefined) {
        orphans.push({ kind: 'unreadable-record', digest: '', record: record.path, read: [] })
        return
      }
      const entry = await reader.entry(keys, record.digest)
      if (entry?.target === record.path) return
      const found = suspect(record.digest)
      found.claimants.set(record.path, record)
      if (entry === undefined) return
      found.entry = entry
      const pointed = await reader.record(keys, entry.target)
      // The entry's own record carries the digest too: one digest, two records.
      if (pointed?.digest === record.digest) found.claimants.set(pointed.path, pointed)
      else found.pointed = pointed ?? null
    })
  }
  for (const [digest, { claimants, entry, pointed }] of suspects) orphans.push(recordSideOrphan(keys, digest, [...claimants.values()], entry, pointed))

  let digests = 0
  for await (const batch of reader.batches(keys.digests, options.digestBatch ?? 500)) {
    digests += batch.length
    await inParallel(batch, concurrency, async kv => {
      const entry = entryRef(keys, kv)
      // A digest some record carries was judged from the record's side above.
      if (suspects.has(entry.digest)) return
      const record = await reader.record(keys, entry.target)
      // An unreadable record is reported as such; whether it carries this digest is unknown.
      if (record?.digest === entry.digest || (record !== undefined && record.digest === undefined)) return
      // A rotation's old digest during its grace (and a little after: its lease ends it).
      const previous = record?.previous?.digest === entry.digest ? record.previous : undefined
      if (previous !== undefined && Date.now() / 1000 < previous.until + GRACE_LEASE_SLACK_SECONDS) return
      orphans.push({
        kind: record === undefined ? 'digest-without-record' : previous !== undefined ? 'digest-past-grace' : 'digest-of-other-record',
        digest: entry.digest,
        target: entry.target,
        fix: { delete: keys.digest(entry.digest) },
        read: [{ key: keys.digest(entry.digest), revision: entry.revision }, { key: keys.recordAt(entry.target), revision: record?.revision ?? 0 }]
      })
    })
  }
  const usage = await checkUsage(keys, reader, options.digestBatch ?? 500, concurrency, orphans)
  orphans.sort((a, b) => (a.record ?? a.target ?? '').localeCompare(b.record ?? b.target ?? '') || a.digest.localeCompare(b.digest))
  return { root, revision: reader.revision ?? 0, records, digests, usage, orphans }
}

/**
 * Scans `<root>/apikey-usage/`: an entry whose record is missing, or was created after it (a later
 * key of the same name), is an orphan (the plugin deletes an entry with its key and writes one only
 * while its key exists). Resolves with how many entries it read.
 */
async function checkUsage (keys: EtcdKeys, reader: SnapshotReader, batchSize: number, concurrency: number, orphans: Orphan[]): Promise<number> {
  let count = 0
  for await (const batch of reader.batches(keys.usageEntries, batchSize)) {
    count += batch.length
    await inParallel(batch, concurrency, async kv => {
      const usageKey = kv.key.toString('utf8')
      const recordKey = keys.recordOfUsage(usageKey)
      const record = await reader.get(recordKey)
      if (record !== undefined && Number(record.create_revision) <= Number(kv.create_revision)) return
      orphans.push({
        kind: 'usage-without-record',
        digest: '',
        record: keys.relativeToRecords(recordKey),
        fix: { delete: usageKey },
        read: [{ key: usageKey, revision: Number(kv.mod_revision) }, { key: recordKey, revision: Number(record?.mod_revision ?? 0) }]
      })
    })
  }
  return count
}

/** The orphan of a digest that some record carries but whose entry does not point at it. */
function recordSideOrphan (keys: EtcdKeys, digest: string, claimants: RecordRef[], entry: EntryRef | undefined, pointed: RecordRef | null | undefined): Orphan {
  const entryRead = { key: keys.digest(digest), revision: entry?.revision ?? 0 }
  if (claimants.length > 1) {
    const paths = claimants.map(r => r.path).sort()
    return { kind: 'shared-digest', digest, records: paths, target: entry?.target, read: [] }
  }
  const [record] = claimants
  const read = [{ key: keys.recordAt(record.path), revision: record.revision }, entryRead]
  // The entry's target is in the guard too: nothing the scan relied on may have changed.
  if (entry !== undefined) read.push({ key: keys.recordAt(entry.target), revision: pointed?.revision ?? 0 })
  return {
    kind: entry === undefined ? 'record-without-digest' : 'digest-points-elsewhere',
    digest,
    record: record.path,
    target: entry?.target,
    // The entry goes on the record's lease, as create writes them: they expire together.
    fix: { put: { key: keys.digest(digest), value: record.path, lease: record.lease } },
    read
  }
}

/**
 * Applies each orphan's fix in a transaction guarded by the mod revisions the scan read, so that
 * a write made since (by a live server, or by hand) is never clobbered: such an orphan is left,
 * `changed`, for the next scan. Leases are left alone: one nothing holds lapses at its TTL.
 */
export async function repairOrphans (client: Etcd3, report: ConsistencyReport, options: Pick<ConsistencyOptions, 'callTimeout'> = {}): Promise<Repair[]> {
  const callTimeout = options.callTimeout ?? 5000
  const repairs: Repair[] = []
  for (const orphan of report.orphans) {
    const { fix, read } = orphan
    if (fix === undefined || read.length === 0) {
      repairs.push({ orphan, outcome: 'not-repairable' })
      continue
    }
    const op = 'put' in fix
      ? (fix.put.lease === '0' ? client.put(fix.put.key).value(fix.put.value) : client.put(fix.put.key).value(fix.put.value).lease(fix.put.lease))
      : client.delete().key(fix.delete)
    const [first, ...rest] = read
    const txn = client.if(first.key, 'Mod', '==', first.revision)
    for (const { key, revision } of rest) txn.and(key, 'Mod', '==', revision)
    const res = await txn.then(op).options({ deadline: new Date(Date.now() + callTimeout) }).commit()
    // A retried commit whose first attempt etcd applied fails its guard: check what is there.
    const outcome = res.succeeded || await fixed(client, fix, callTimeout) ? 'repaired' : 'changed'
    repairs.push({ orphan, outcome })
  }
  return repairs
}

/** Whether etcd already holds what `fix` writes. */
async function fixed (client: Etcd3, fix: NonNullable<Orphan['fix']>, callTimeout: number): Promise<boolean> {
  const key = 'put' in fix ? fix.put.key : fix.delete
  const value = await client.get(key).options({ deadline: new Date(Date.now() + callTimeout) }).string()
  return 'put' in fix ? value === fix.put.value : value === null
}

/** Range and point reads, all at the revision of the first read. */
class SnapshotReader {
  revision: number | undefined
  constructor (private readonly client: Etcd3, private readonly callTimeout: number) {}

  private async range (key: Buffer, end: Buffer | undefined, limit: number): Promise<IRangeResponse> {
    try {
      const res = await this.client.kv.range(
        { key, range_end: end, limit, revision: this.revision },
        { deadline: new Date(Date.now() + this.callTimeout) })
      this.revision ??= Number(res.header.revision)
      return res
    } catch (err) {
      if (err instanceof GRPCOutOfRangeError && /compacted/.test(err.message)) {
        throw new Error(`etcd compacted revision ${this.revision} during the scan: run it again`, { cause: err })
      }
      throw err
    }
  }

  /** The keys under `prefix`, in batches of `limit` (every one at the reader's revision). */
  async * batches (prefix: string, limit: number): AsyncGenerator<IKeyValue[]> {
    for await (const res of scanBatches(request => this.range(request.key, request.end, request.limit), { start: prefix, end: rangeEnd(prefix) }, { limit })) {
      if (res.kvs.length > 0) yield res.kvs
    }
  }

  async get (key: string): Promise<IKeyValue | undefined> {
    return (await this.range(Buffer.from(key), undefined, 1)).kvs[0]
  }

  async entry (keys: EtcdKeys, digest: string): Promise<EntryRef | undefined> {
    const kv = await this.get(keys.digest(digest))
    return kv && entryRef(keys, kv)
  }

  /** The record at `<root>/apikeys/<path>`; `path` comes from an entry, so it may be anything. */
  async record (keys: EtcdKeys, path: string): Promise<RecordRef | undefined> {
    const kv = await this.get(keys.recordAt(path))
    return kv && recordRef(keys, kv)
  }
}

function recordRef (keys: EtcdKeys, kv: IKeyValue): RecordRef {
  const path = keys.relativeToRecords(kv.key.toString('utf8'))
  let digest: string | undefined
  let previous: RecordRef['previous']
  try {
    const value = JSON.parse(kv.value.toString('utf8')) as { key_sha256?: unknown, previous_sha256?: unknown, previous_until?: unknown }
    if (typeof value.key_sha256 === 'string' && HEX_DIGEST.test(value.key_sha256)) digest = value.key_sha256
    if (typeof value.previous_sha256 === 'string' && typeof value.previous_until === 'number') previous = { digest: value.previous_sha256, until: value.previous_until }
  } catch {}
  // A key deeper or shallower than <namespace>/<name> is no record the API can reach.
  if (!path.includes('/') || parseQualifiedName(path).name.includes('/')) digest = undefined
  return { path, revision: Number(kv.mod_revision), lease: String(kv.lease), digest, ...(digest !== undefined && previous !== undefined && { previous }) }
}

function entryRef (keys: EtcdKeys, kv: IKeyValue): EntryRef {
  return { digest: keys.digestOf(kv.key.toString('utf8')), target: kv.value.toString('utf8'), revision: Number(kv.mod_revision) }
}
