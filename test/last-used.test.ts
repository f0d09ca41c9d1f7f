// `last_used_at` (SPEC "Lifecycle: rotation, disabling, last use"): written after a use, apart from
// the record (the ETag does not move), read-only, merged into every answer; the usage entry lives
// and dies with its key (delete, revoke-all, lease, a PATCH that moves the lease); never written
// for a key deleted meanwhile; and a load of verifications costs one write per key and interval.
import t from 'tap'
import { Registry, type Histogram } from 'prom-client'
import { EtcdKeys } from '../lib/store/key-builder.js'
import { sharedEtcd } from './helpers/etcd.js'
import { buildApp, keyAuth, type CreatedKey, type TestApp } from './helpers/app.js'
import { waitFor } from './helpers/wait.js'

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

const INTERVAL = 300
const MERGE_PATCH = { 'content-type': 'application/merge-patch+json' }
const now = () => Math.floor(Date.now() / 1000)

/** The usage entry of a key, as etcd holds it. */
async function usageEntry (api: TestApp, key: CreatedKey) {
  return (await api.etcd.get(new EtcdKeys(api.root).usage('default', key.name)).exec()).kvs[0]
}
const leaseOf = async (api: TestApp, etcdKey: string) => String((await api.etcd.get(etcdKey).exec()).kvs[0]?.lease)
/** A use through the routes: the key lists its own namespace. */
async function use (api: TestApp, key: CreatedKey) {
  const res = await api.call({ path: '/namespaces/default/apikeys', auth: keyAuth(key.secret) })
  if (res.statusCode !== 200) throw new Error(`use: ${res.statusCode}`)
}
const get = (api: TestApp, key: CreatedKey) => api.call({ path: `/${key.location}` })

t.test('last_used_at: absent until the first use, then in GET, lists and PATCH; the ETag does not move; read-only', async t => {
  const api = await buildApp(t, etcd, { lastUseInterval: INTERVAL })
  const key = await api.createKey('default', { last_used_at: 12345 })
  t.notOk('last_used_at' in key.body, 'a POST ignores last_used_at')
  const fresh = await get(api, key)
  t.notOk('last_used_at' in fresh.json(), 'absent before the first use')
  const etag = fresh.headers.etag
  const started = now()
  await use(api, key)
  const read = await waitFor(async () => { const res = await get(api, key); return 'last_used_at' in res.json() && res }, { what: 'last_used_at to appear' })
  const lastUsed = read.json().last_used_at
  t.ok(lastUsed >= started && lastUsed <= now(), `last_used_at is the use's time (${lastUsed})`)
  t.equal(read.headers.etag, etag, 'the ETag did not move: the record was not written')
  t.notMatch(await api.etcd.get(new EtcdKeys(api.root).record('default', key.name)).string() ?? '', /last_used_at/, 'the record holds no last_used_at')
  t.equal((await usageEntry(api, key))?.value.toString(), String(lastUsed), 'the usage entry holds it, in Unix seconds')

  const shows = (items: any[]) => items.find(k => k.metadata.name === key.name)?.last_used_at
  t.equal(shows((await api.call({ path: '/namespaces/default/apikeys' })).json()), lastUsed, 'the namespace list (stream)')
  t.equal(shows((await api.call({ path: '/namespaces/default/apikeys?limit=1' })).json()), lastUsed, 'a page')
  t.equal(shows((await api.call({ path: '/apikeys' })).json()), lastUsed, 'every namespace (stream)')
  t.equal(shows((await api.call({ path: '/apikeys?limit=5' })).json()), lastUsed, 'every namespace, a page')

  const ifMatch = await api.call({ method: 'PATCH', path: `/${key.location}`, body: { metadata: { labels: { a: 'b' } } }, headers: { ...MERGE_PATCH, 'if-match': String(etag) } })
  t.equal(ifMatch.statusCode, 200, 'an If-Match from before the use still matches')
  t.equal(ifMatch.json().last_used_at, lastUsed, 'PATCH answers last_used_at')
  const repeat = await api.call({ method: 'PATCH', path: `/${key.location}`, body: { ...read.json(), metadata: { ...read.json().metadata, labels: { a: 'c' } } }, headers: MERGE_PATCH })
  t.equal(repeat.statusCode, 200, 'a PATCH may repeat last_used_at (a GET\'s body sent back)', { body: repeat.body })
  const before = await api.snapshot()
  for (const value of [lastUsed + 100, null]) {
    const changed = await api.call({ method: 'PATCH', path: `/${key.location}`, body: { last_used_at: value }, headers: MERGE_PATCH })
    t.equal(changed.statusCode, 400, `a PATCH that sets last_used_at to ${value} is a 400`)
    t.equal(changed.json().message, 'field "last_used_at" is immutable', 'that names the field')
  }
  t.strictSame(await api.snapshot(), before, 'and changes nothing')
})

t.test('the usage entry dies with its key: delete, revoke-all, the lease of an expiring key', async t => {
  const api = await buildApp(t, etcd, { lastUseInterval: INTERVAL })
  const [deleted, bobs1, bobs2, expiring] = [
    await api.createKey('default'),
    await api.createKey('default', { username: 'bob' }),
    await api.createKey('default', { username: 'bob' }),
    await api.createKey('default', { expires_at: now() + 4 })
  ]
  for (const key of [deleted, bobs1, bobs2, expiring]) await use(api, key)
  await waitFor(async () => (await Promise.all([deleted, bobs1, bobs2, expiring].map(key => usageEntry(api, key)))).every(Boolean), { what: 'the four usage entries' })
  const keys = new EtcdKeys(api.root)
  t.equal(await leaseOf(api, keys.usage('default', expiring.name)), await leaseOf(api, keys.record('default', expiring.name)), 'an expiring key\'s usage entry is on its lease')
  t.not(await leaseOf(api, keys.usage('default', expiring.name)), '0')

  t.equal((await api.call({ method: 'DELETE', path: `/${deleted.location}` })).statusCode, 204)
  t.equal(await usageEntry(api, deleted), undefined, 'DELETE deleted the usage entry')
  t.match((await api.call({ method: 'DELETE', path: '/apikeys?username=bob' })).json(), { deleted: 2 })
  t.equal(await usageEntry(api, bobs1), undefined, 'revoke-all deleted the usage entries')
  t.equal(await usageEntry(api, bobs2), undefined)
  await waitFor(async () => await usageEntry(api, expiring) === undefined, { what: 'the expiring key\'s usage entry to go with its lease', timeout: 20_000 })
  t.equal(await api.etcd.get(keys.record('default', expiring.name)).string(), null, 'with the record')
  t.strictSame(Object.keys(await api.snapshot()).filter(k => k.includes('/apikey-usage/')), [], 'no usage entry is left')
})

t.test('a PATCH that moves the key to another lease moves its usage entry, value kept', async t => {
  const api = await buildApp(t, etcd, { lastUseInterval: INTERVAL })
  const keys = new EtcdKeys(api.root)
  const key = await api.createKey('default', { expires_at: now() + 3600 })
  await use(api, key)
  const entry = await waitFor(() => usageEntry(api, key), { what: 'the usage entry' })
  const usageKey = keys.usage('default', key.name)
  const recordKey = keys.record('default', key.name)
  for (const expiresAt of [now() + 7200, null]) {
    const res = await api.call({ method: 'PATCH', path: `/${key.location}`, body: { expires_at: expiresAt }, headers: MERGE_PATCH })
    t.equal(res.statusCode, 200, `expires_at: ${expiresAt}`)
    t.equal(res.json().last_used_at, Number(entry.value.toString()), 'the answer keeps last_used_at')
    t.equal(await leaseOf(api, usageKey), await leaseOf(api, recordKey), 'the usage entry is on the record\'s new lease')
    t.equal((await usageEntry(api, key))?.value.toString(), entry.value.toString(), 'with its value')
  }
  t.equal(await leaseOf(api, usageKey), '0', 'no lease once the key never expires')
})

t.test('a key deleted between its use and the write gets no usage entry; a key used and kept gets one at close', async t => {
  // An interval far longer than the test: the write happens at close, which flushes what is pending.
  const api = await buildApp(t, etcd, { lastUseInterval: 3_600_000 })
  const gone = await api.createKey('default')
  const kept = await api.createKey('default')
  await use(api, gone)
  await use(api, kept)
  t.equal((await api.call({ method: 'DELETE', path: `/${gone.location}` })).statusCode, 204)
  t.equal(await usageEntry(api, kept), undefined, 'nothing written yet')
  await api.app.close()
  t.ok(await usageEntry(api, kept), 'the kept key\'s use was written at close: the flush ran')
  t.equal(await usageEntry(api, gone), undefined, 'the deleted key got none: the write is guarded by its record')
})

t.test('the write budget: a load of verifications of one key costs one write per interval', async t => {
  const registry = new Registry()
  const interval = 1000
  const api = await buildApp(t, etcd, { lastUseInterval: interval, metrics: { registry } })
  const key = await api.createKey('default')
  const etag = (await get(api, key)).headers.etag
  const txns = async () => (await (registry.getSingleMetric('apikeys_etcd_request_duration_seconds') as Histogram).get()).values
    .find(v => v.metricName === 'apikeys_etcd_request_duration_seconds_count' && v.labels.operation === 'txn')?.value ?? 0
  const before = await txns()
  const started = Date.now()
  let verified = 0
  // At least 2,000 verifications, 50 at a time, over at least two intervals.
  while (verified < 2000 || Date.now() - started < 2 * interval) {
    const answers = await Promise.all(Array.from({ length: 50 }, () => api.app.apiKeys.verify(key.secret)))
    if (answers.includes(null)) throw new Error('verify refused the key')
    verified += answers.length
  }
  const elapsed = Date.now() - started
  await api.app.close()
  const writes = await txns() - before
  const budget = Math.floor(elapsed / interval) + 2
  t.comment(`${verified} verifications in ${elapsed} ms, interval ${interval} ms: ${writes} etcd transactions (budget ${budget})`)
  t.ok(writes >= 1, 'the uses were written')
  t.ok(writes <= budget, `at most one write per interval, plus the one at close: ${writes} <= ${budget}`)
  const entry = await usageEntry(api, key)
  t.ok(Number(entry?.version) <= writes, `the usage entry was written ${entry?.version} times`)
  const client = api.etcd
  const record = (await client.get(new EtcdKeys(api.root).record('default', key.name)).exec()).kvs[0]
  t.equal(`"${record.mod_revision}"`, etag, 'the record was never written: its ETag is the same')
})
