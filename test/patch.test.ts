// PATCH: a JSON merge patch, validated like a new key, conditional on If-Match, and safe under
// concurrent writers in separate processes' worth of app instances.
import t from 'tap'
import Fastify from 'fastify'
import { Etcd3 } from 'etcd3'
import apiKeys, { bearerTokens } from '../lib/index.js'
import { sharedEtcd } from './helpers/etcd.js'
import { ADMIN_TOKEN, buildApp, withHelpers, type TestApp } from './helpers/app.js'
import { referencePatchPayload } from './fixtures/reference-examples.js'

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

const MERGE_PATCH = { 'content-type': 'application/merge-patch+json' }

async function setUp (t: Parameters<typeof buildApp>[0]) {
  const api = await buildApp(t, etcd)
  const key = await api.createKey('default', {
    metadata: { labels: { team: 'ops', tier: 'gold' }, annotations: { note: 'n' } },
    url: 'https://a',
    filters: { 'entity.system.os': 'linux' },
    headers: { 'X-A': 'a' }
  })
  const path = `/namespaces/default/apikey/${key.name}`
  const patch = (body: unknown, headers: Record<string, string> = MERGE_PATCH) =>
    api.call({ method: 'PATCH', path, body, headers })
  const stored = async () => JSON.parse(String(await api.etcd.get(`${api.root}/apikeys/default/${key.name}`)))
  return { api, key, path, patch, stored }
}

t.test('labels are set and removed, the username changes, null removes a field', async t => {
  const { api, key, path, patch, stored } = await setUp(t)
  let res = await patch({ metadata: { labels: { env: 'prod', tier: null } } })
  t.equal(res.statusCode, 200)
  t.same(res.json().metadata.labels, { team: 'ops', env: 'prod' }, 'label set, label removed, others kept')
  t.same(res.json().metadata.annotations, { note: 'n' }, 'annotations untouched')
  t.notOk('key' in res.json(), 'no secret in the answer')

  res = await patch({ username: 'carol' }, { 'content-type': 'application/json' })
  t.equal(res.statusCode, 200, 'application/json is read as a merge patch too')
  t.equal(res.json().username, 'carol')

  res = await patch({ filters: null, url: 'https://b' })
  t.equal(res.statusCode, 200)
  t.notOk('filters' in res.json(), 'filters: null leaves filters absent')
  t.equal(res.json().url, 'https://b')

  res = await patch({ headers: { 'X-B': 'b' } })
  t.same(res.json().headers, { 'X-A': 'a', 'X-B': 'b' }, 'maps merge')

  const got = await api.call({ path })
  t.same(got.json(), res.json(), 'GET answers the patched key')
  t.equal(got.headers.etag, res.headers.etag, 'with the ETag PATCH gave')
  const record = await stored()
  t.same({ ...record, key_sha256: undefined }, { ...res.json(), key_sha256: undefined }, 'etcd holds the patched key')
  t.match(record.key_sha256, /^[0-9a-f]{64}$/, 'and still its digest')
  const asCarol = await api.call({ path: '/namespaces/default/apikey', auth: `Key ${key.secret}` })
  t.equal(asCarol.statusCode, 200, 'the secret still authenticates, now as carol')
  t.same(asCarol.json().map((k: { username: string }) => k.username), ['carol'], 'who sees only carol\'s keys')
})

t.test('immutable fields, a removed username, and invalid results are a 400 that changes nothing', async t => {
  const { api, key, patch } = await setUp(t)
  const before = await api.snapshot()
  const cases: Array<[string, unknown, RegExp]> = [
    ['rename', { metadata: { name: 'other' } }, /metadata\.name.*immutable/],
    ['the reference\'s PATCH example (it renames the key)', referencePatchPayload, /metadata\.name.*immutable/],
    ['another namespace', { metadata: { namespace: 'other' } }, /metadata\.namespace.*immutable/],
    ['created_by', { metadata: { created_by: 'mallory' } }, /created_by.*immutable/],
    ['created_at', { created_at: 1 }, /created_at.*immutable/],
    ['metadata removed', { metadata: null }, /immutable/],
    ['username removed', { username: null }, /username.*required/],
    ['empty username', { username: '' }, /username/],
    ['a label of the wrong type', { metadata: { labels: { a: 1 } } }, /labels\.a/],
    ['key', { key: 'sak_x' }, /key/],
    ['an unknown field', { colour: 'red' }, /colour/],
    ['not an object', [1], /body/]
  ]
  for (const [title, body, message] of cases) {
    const res = await patch(body)
    t.equal(res.statusCode, 400, title)
    t.equal(res.json().code, 1)
    t.match(res.json().message, message, `${title}: ${res.json().message}`)
  }
  const same = await patch({ metadata: { name: key.name, namespace: 'default', created_by: 'admin' } })
  t.equal(same.statusCode, 200, 'immutable fields with their current values are fine')
  t.same(await api.snapshot(), before, 'etcd holds exactly what it held before')
})

t.test('ETag and If-Match', async t => {
  const { api, path, patch } = await setUp(t)
  const first = await api.call({ path })
  const etag = String(first.headers.etag)
  t.match(etag, /^"\d+"$/, 'a strong ETag')

  const unchanged = await patch({ url: 'https://a' })
  t.equal(unchanged.headers.etag, etag, 'a patch that changes nothing is no update: same ETag')

  const updated = await patch({ url: 'https://new' }, { ...MERGE_PATCH, 'if-match': etag })
  t.equal(updated.statusCode, 200, 'a matching If-Match applies')
  t.not(updated.headers.etag, etag, 'the ETag changes on every update')

  const before = await api.snapshot()
  const stale = await patch({ url: 'https://stale' }, { ...MERGE_PATCH, 'if-match': etag })
  t.equal(stale.statusCode, 412, 'a stale If-Match is a 412')
  t.equal(stale.json().code, 7)
  t.equal((await patch({ url: 'https://weak' }, { ...MERGE_PATCH, 'if-match': `W/${String(updated.headers.etag)}` })).statusCode, 412,
    'a weak tag never matches (strong comparison)')
  t.same(await api.snapshot(), before, 'neither changed etcd')

  const listMatch = await patch({ url: 'https://list' }, { ...MERGE_PATCH, 'if-match': `"1", ${String(updated.headers.etag)}` })
  t.equal(listMatch.statusCode, 200, 'any tag of a list may match')
  const star = await patch({ url: 'https://star' }, { ...MERGE_PATCH, 'if-match': '*' })
  t.equal(star.statusCode, 200, '* matches any existing key')
})

t.test('20 concurrent PATCHes through two app instances on one etcd all apply', async t => {
  const { api, path } = await setUp(t)
  // A second, separate app on the same etcd root: no in-process lock can serialise the two.
  const other = Fastify()
  await other.register(apiKeys, { etcd: { hosts: etcd.endpoints }, root: api.root, authenticate: bearerTokens([ADMIN_TOKEN]) })
  const otherClient = new Etcd3({ hosts: etcd.endpoints })
  t.teardown(async () => { await other.close(); otherClient.close() })
  const apps: TestApp[] = [api, withHelpers(other, api.root, otherClient)]

  const results = await Promise.all(Array.from({ length: 20 }, (_, i) =>
    apps[i % 2].call({ method: 'PATCH', path, body: { metadata: { labels: { [`writer${i}`]: String(i) } } }, headers: MERGE_PATCH })))
  t.same(results.map(r => r.statusCode), Array(20).fill(200), 'none refused')
  const labels = (await api.call({ path })).json().metadata.labels
  for (let i = 0; i < 20; i++) t.equal(labels[`writer${i}`], String(i), `writer${i}'s label is there`)
  t.equal(Object.keys(labels).length, 22, 'and the two labels from before')
})
