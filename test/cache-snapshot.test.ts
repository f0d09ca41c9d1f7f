// The read cache's packed copy (lib/store/cache/entries.ts, snapshot.ts) against etcd itself:
// loaded in batches as the reflector loads it, then kept by puts and removes one at a time (chunks
// split, merge and empty), every range and single-key read answers exactly what etcd answers at
// the same revision. And it stays compact: the 600 bytes per key at most.
import t from 'tap'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { randomBytes, randomUUID } from 'node:crypto'
import { Etcd3, type IKeyValue, type IRequestOp } from 'etcd3'
import { sharedEtcd } from './helpers/etcd.js'
import { uniqueRoot } from './helpers/app.js'
import { Snapshot } from '../lib/store/cache/snapshot.js'
import { EtcdKeys, keyAfter, rangeEnd } from '../lib/store/key-builder.js'
import { scanBatches } from '../lib/store/scan.js'
import { recordValue } from '../bench/fixtures.js'

/** What a user of a range answer reads in one key-value. */
const shown = (kv: IKeyValue) => ({
  key: kv.key.toString('latin1'),
  value: kv.value.toString('base64'),
  create: String(kv.create_revision),
  mod: String(kv.mod_revision),
  version: String(kv.version),
  lease: String(kv.lease)
})

interface Query { start: string, end?: string, limit?: number }

/**
 * Every query asked of the copy and of etcd at `revision`; the queries whose answers differ (at
 * most a few, for the message), and how many key-values were compared.
 */
async function compare (client: Etcd3, snapshot: Snapshot, revision: number, queries: Query[]) {
  const differ: Array<{ query: Query, etcd: unknown, cache: unknown }> = []
  let compared = 0
  for (const query of queries) {
    const etcd = await client.kv.range({ key: Buffer.from(query.start, 'latin1'), range_end: query.end === undefined ? undefined : Buffer.from(query.end, 'latin1'), limit: query.limit, revision })
    const cache = snapshot.read(query.start, query.end, query.limit)
    const answer = (res: typeof etcd) => ({ kvs: res.kvs.map(shown), more: res.more })
    compared += etcd.kvs.length
    if (JSON.stringify(answer(etcd)) !== JSON.stringify(answer(cache))) differ.push({ query, etcd: answer(etcd), cache: answer(cache) })
  }
  return { differ: differ.slice(0, 3), differing: differ.length, compared }
}

/** Single keys (present and absent) and ranges: whole, by namespace, from each key, with limits. */
function queriesFor (keys: EtcdKeys, held: string[]): Query[] {
  const queries: Query[] = [{ start: keys.plugin }, { start: keys.records + 'absent' }, { start: keys.digest('0'.repeat(64)) }]
  for (const key of held) queries.push({ start: key })
  const ranges = [keys.records, keys.namespace('a'), keys.namespace('b'), keys.namespace('c'), keys.digests, keys.plugin]
  for (const prefix of ranges) {
    const end = rangeEnd(prefix).toString('latin1')
    for (const limit of [0, 1, 7, 64, 129]) queries.push({ start: prefix, end, limit })
  }
  // From every fifth key, and from just after it, to the end of the records, a page of 10.
  const recordsEnd = rangeEnd(keys.records).toString('latin1')
  held.filter((_key, i) => i % 5 === 0).forEach(key => {
    queries.push({ start: key, end: recordsEnd, limit: 10 }, { start: keyAfter(Buffer.from(key, 'latin1')).toString('latin1'), end: recordsEnd, limit: 10 })
  })
  return queries
}

async function heldKeys (client: Etcd3, keys: EtcdKeys): Promise<string[]> {
  const res = await client.kv.range({ key: Buffer.from(keys.plugin), range_end: rangeEnd(keys.plugin), keys_only: true })
  return res.kvs.map(kv => kv.key.toString('latin1'))
}

async function putAll (client: Etcd3, entries: Array<[string, string | Buffer, string?]>) {
  for (let i = 0; i < entries.length; i += 64) {
    const success: IRequestOp[] = entries.slice(i, i + 64).map(([key, value, lease]) => ({ request_put: { key: Buffer.from(key, 'latin1'), value: Buffer.from(value), ...(lease !== undefined && { lease }) } }))
    await client.kv.txn({ success })
  }
}

const shuffled = <T>(items: T[]) => items.map(item => ({ item, order: Math.random() })).sort((x, y) => x.order - y.order).map(({ item }) => item)

t.test('the copy holds a key (its record and digest entry) in at most 600 bytes', async t => {
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  const keys = new EtcdKeys('/apikeys-bench-1764543103000')
  const count = 20_000
  // What etcd hands the cache, in its order: the digest entries, then the records.
  const names = Array.from({ length: count }, () => randomUUID()).sort()
  const digests = Array.from({ length: count }, () => randomBytes(32).toString('hex')).sort()
  const kv = (key: string, value: string, revision: number): IKeyValue => ({ key: Buffer.from(key), value: Buffer.from(value), create_revision: String(revision), mod_revision: String(revision), version: '1', lease: '0' })
  const batch = (from: number, make: (i: number) => IKeyValue) => Array.from({ length: Math.min(500, count - from) }, (_v, i) => make(from + i))
  const snapshot = new Snapshot(keys.plugin)
  for (let i = 0; i < count; i += 500) snapshot.append(batch(i, j => kv(keys.digest(digests[j]), EtcdKeys.digestTarget('large', names[j]), 1_000_000 + j)))
  for (let i = 0; i < count; i += 500) snapshot.append(batch(i, j => kv(keys.record('large', names[j]), recordValue({ namespace: 'large', name: names[j], digest: digests[j] }), 2_000_000 + j)))
  t.equal(snapshot.size, 2 * count, `${count} keys loaded, a record and a digest entry each`)
  // What the copy holds is what a full GC frees once it is dropped.
  const used = () => {
    gc()
    const { heapUsed, external } = process.memoryUsage()
    return heapUsed + external
  }
  const held = used()
  snapshot.clear()
  const perKey = (held - used()) / count
  t.ok(perKey > 0 && perKey <= 600, `${Math.round(perKey)} bytes per key (heap and typed arrays, after GC), at most 600`)
})

t.test('the packed copy answers every read as etcd does, loaded and then kept key by key', async t => {
  const etcd = await sharedEtcd()
  const client = new Etcd3({ hosts: etcd.endpoints })
  t.teardown(async () => {
    client.close()
    await etcd.close()
  })
  const keys = new EtcdKeys(uniqueRoot())
  t.teardown(() => client.kv.deleteRange({ key: Buffer.from(keys.root + '/'), range_end: rangeEnd(keys.root + '/') }))
  const lease = await client.lease(600, { autoKeepAlive: false }).grant()

  // Names that sort next to each other and by bytes (`x`, `x-`, `x/`, `x0`), values with
  // multi-byte characters and bytes that are not UTF-8, keys on a lease, keys written twice.
  const names = ['x', 'x-', 'x/', 'x0', 'x00', 'y', ...Array.from({ length: 150 }, () => randomUUID())]
  const initial: Array<[string, string | Buffer, string?]> = []
  for (const namespace of ['a', 'b']) {
    for (const name of names) {
      const digest = randomBytes(32).toString('hex')
      initial.push([keys.record(namespace, name), recordValue({ namespace, name, digest }, { note: 'été ✓ 🔑' })])
      initial.push([keys.digest(digest), EtcdKeys.digestTarget(namespace, name)])
    }
  }
  initial.push([keys.fence('bob'), ''], [keys.idempotency('entry-1'), '{"replay":1}', lease], [keys.record('c', 'binary'), Buffer.from([0xff, 0x00, 0xc3, 0x28])])
  await putAll(client, initial)
  await putAll(client, [[keys.record('a', 'x'), 'second'], [keys.record('b', 'y'), 'leased', lease]])
  await putAll(client, [[keys.record('a', 'x'), 'third']])

  // Loaded as the reflector loads it: batches of a few keys at one revision.
  const snapshot = new Snapshot(keys.plugin)
  let revision = 0
  const read = (request: { key: Buffer, end: Buffer, limit: number, revision?: number }) => client.kv.range({ key: request.key, range_end: request.end, limit: request.limit, revision: request.revision })
  for await (const res of scanBatches(read, { start: keys.plugin, end: rangeEnd(keys.plugin) }, { limit: 7, pin: true })) {
    revision ||= Number(res.header.revision)
    snapshot.append(res.kvs)
  }
  snapshot.advance(revision)
  let held = await heldKeys(client, keys)
  t.equal(snapshot.size, held.length, `the copy holds the ${held.length} keys etcd holds`)
  const loaded = await compare(client, snapshot, revision, queriesFor(keys, held))
  t.same(loaded.differ, [], `loaded: every read answers as etcd at revision ${revision} (${loaded.compared} key-values compared)`)
  t.ok(loaded.compared > 2000, 'and the reads found keys to compare')

  // Kept key by key, as the watch keeps it: 300 names that sort together (the chunk they land in
  // splits, again and again), records overwritten, then most of them and all of b removed (chunks
  // merge and empty).
  const apply = async (key: string, value?: string) => {
    const res = value === undefined
      ? await client.kv.deleteRange({ key: Buffer.from(key, 'latin1') })
      : await client.kv.put({ key: Buffer.from(key, 'latin1'), value: Buffer.from(value) })
    if (value === undefined) snapshot.remove({ key: Buffer.from(key, 'latin1'), value: Buffer.alloc(0), create_revision: '0', mod_revision: '0', version: '0', lease: '0' })
    else snapshot.put((await client.kv.range({ key: Buffer.from(key, 'latin1'), revision: Number(res.header.revision) })).kvs[0])
    snapshot.advance(Number(res.header.revision))
  }
  const crowd = shuffled(Array.from({ length: 300 }, (_v, i) => keys.record('a', `m-${String(i).padStart(3, '0')}`)))
  for (const key of crowd) await apply(key, `{"n":"${key}"}`)
  for (const key of crowd.slice(0, 40)) await apply(key, '{"patched":true}')
  held = await heldKeys(client, keys)
  const grown = await compare(client, snapshot, snapshot.revision, queriesFor(keys, held))
  t.same(grown.differ, [], `after 340 puts one by one: every read answers as etcd (${grown.compared} key-values compared)`)
  t.equal(snapshot.size, held.length, `the copy holds the ${held.length} keys etcd holds`)

  const gone = [...crowd.slice(0, 280), ...held.filter(key => key.startsWith(keys.namespace('b')))]
  for (const key of shuffled(gone)) await apply(key)
  await apply(keys.record('a', 'absent'))
  held = await heldKeys(client, keys)
  const shrunk = await compare(client, snapshot, snapshot.revision, queriesFor(keys, held))
  t.same(shrunk.differ, [], `after ${gone.length} removals one by one: every read answers as etcd (${shrunk.compared} key-values compared)`)
  t.equal(snapshot.size, held.length, `the copy holds the ${held.length} keys etcd holds`)
  t.same(snapshot.read(keys.namespace('b'), rangeEnd(keys.namespace('b')).toString('latin1')).kvs, [], 'an emptied namespace reads as empty')
})
