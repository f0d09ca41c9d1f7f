// `disabled` and `apiKeys.check` (SPEC "Lifecycle: rotation, disabling, last use"): a disabled key
// authenticates nowhere (routes, verify, check), yet is listed, read, patched and deleted, and is
// enabled again through PATCH, on two servers over one etcd; every reason check gives, one test
// each, and the metric that counts them.
import t from 'tap'
import { Registry, type Counter } from 'prom-client'
import { generateSecret } from '../lib/index.js'
import { EtcdKeys } from '../lib/store/key-builder.js'
import { sharedEtcd } from './helpers/etcd.js'
import { buildApp, keyAuth, uniqueRoot, type TestApp } from './helpers/app.js'
import { waitFor } from './helpers/wait.js'

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

const MERGE_PATCH = { 'content-type': 'application/merge-patch+json' }
const patch = (app: TestApp, location: string, body: unknown, auth?: string) =>
  app.call({ method: 'PATCH', path: `/${location}`, body, headers: MERGE_PATCH, ...(auth !== undefined && { auth }) })
/** The status a request authenticated by `secret` gets on a route any key may use (its own namespace's list). */
const statusWith = async (app: TestApp, secret: string) => (await app.call({ path: '/namespaces/default/apikeys', auth: keyAuth(secret) })).statusCode

t.test('a disabled key authenticates nowhere, yet is read, listed, patched and deleted; enabled again, through two servers', async t => {
  const root = uniqueRoot()
  const a = await buildApp(t, etcd, { root })
  const b = await buildApp(t, etcd, { root })
  const key = await a.createKey('default', { username: 'alice' })
  t.equal(await statusWith(b, key.secret), 200, 'the key works on b')

  const off = await patch(a, key.location, { disabled: true })
  t.equal(off.statusCode, 200, 'an admin disables it through a', { body: off.body })
  t.equal(off.json().disabled, true, 'the answer says disabled')
  for (const [name, app] of [['a', a], ['b', b]] as const) {
    await waitFor(async () => await app.app.apiKeys.verify(key.secret) === null, { what: `${name} to see the key disabled` })
    t.match(await app.app.apiKeys.check(key.secret), { valid: false, reason: 'disabled' }, `${name}: check says disabled`)
    const refused = await app.call({ path: '/namespaces/default/apikeys', auth: keyAuth(key.secret) })
    const wrong = await app.call({ path: '/namespaces/default/apikeys', auth: keyAuth(generateSecret('sak_')) })
    t.equal(refused.statusCode, 401, `${name}: 401 on the routes`)
    t.equal(refused.body, wrong.body, `${name}: the very body of an unknown key's 401: nothing tells it is disabled`)
    t.notMatch(refused.body, /disabled/, `${name}: the 401 does not say why`)
    t.equal((await patch(app, key.location, { disabled: false }, keyAuth(key.secret))).statusCode, 401, `${name}: the key cannot enable itself`)
  }
  const read = await b.call({ path: `/${key.location}` })
  t.equal(read.statusCode, 200, 'still read')
  t.equal(read.json().disabled, true)
  t.ok((await b.call({ path: '/namespaces/default/apikeys' })).json().some((k: any) => k.metadata.name === key.name && k.disabled === true), 'still listed')
  const labelled = await patch(b, key.location, { metadata: { labels: { still: 'patched' } } })
  t.equal(labelled.statusCode, 200, 'still patched')
  t.equal(labelled.json().disabled, true, 'and stays disabled')

  const on = await patch(b, key.location, { disabled: false })
  t.equal(on.statusCode, 200, 'an admin enables it through b')
  for (const [name, app] of [['a', a], ['b', b]] as const) {
    await waitFor(async () => await statusWith(app, key.secret) === 200, { what: `${name} to let the key in again` })
    t.match(await app.app.apiKeys.check(key.secret), { valid: true, key: { metadata: { name: key.name }, disabled: false } }, `${name}: check says valid`)
  }
  t.equal((await patch(a, key.location, { disabled: true })).statusCode, 200, 'disabled again')
  t.equal((await a.call({ method: 'DELETE', path: `/${key.location}` })).statusCode, 204, 'a disabled key is deleted')
  t.equal((await a.call({ path: `/${key.location}` })).statusCode, 404, 'and gone')
})

t.test('disabled in a POST body: the key is made switched off; a wrong type is a 400', async t => {
  const api = await buildApp(t, etcd)
  const key = await api.createKey('default', { disabled: true })
  t.equal(key.body.disabled, true, 'the answer says so')
  t.equal(await statusWith(api, key.secret), 401, 'its secret is refused from the start')
  t.equal(await api.app.apiKeys.verify(key.secret), null, 'verify: null')
  const before = await api.snapshot()
  const bad = await api.call({ method: 'POST', path: '/namespaces/default/apikey', body: { disabled: 'yes' } })
  t.equal(bad.statusCode, 400, 'disabled: "yes" is a 400')
  t.match(bad.json().message, /disabled/, 'that names the field')
  t.strictSame(await api.snapshot(), before, 'and changes nothing')
  const badPatch = await patch(api, key.location, { disabled: 1 })
  t.equal(badPatch.statusCode, 400, 'a PATCH with disabled: 1 too')
})

t.test('check, one reason at a time', async t => {
  const registry = new Registry()
  const api = await buildApp(t, etcd, { metrics: { registry } })
  const keys = new EtcdKeys(api.root)
  const counts = async () => Object.fromEntries(((await (registry.getSingleMetric('apikeys_verifications_total') as Counter).get()).values)
    .map(v => [String(v.labels.result), v.value]))
  const before = await counts()

  t.test('malformed: not a secret of this form', async t => {
    t.strictSame(await api.app.apiKeys.check('not-a-secret'), { valid: false, reason: 'malformed' })
    t.strictSame(await api.app.apiKeys.check(42 as unknown as string), { valid: false, reason: 'malformed' }, 'not even a string')
  })
  t.test('unknown: well formed, but no key has it; a deleted key\'s', async t => {
    t.strictSame(await api.app.apiKeys.check(generateSecret('sak_')), { valid: false, reason: 'unknown' })
    const gone = await api.createKey('default')
    t.equal((await api.call({ method: 'DELETE', path: `/${gone.location}` })).statusCode, 204)
    t.strictSame(await api.app.apiKeys.check(gone.secret), { valid: false, reason: 'unknown' }, 'deleted')
  })
  t.test('expired: past its expires_at, before etcd\'s lease has removed it', async t => {
    const key = await api.createKey('default', { expires_at: Math.floor(Date.now() / 1000) + 3600 })
    // By hand, on the same lease: the record says it expired 10 s ago, as it is when etcd is late.
    const recordKey = keys.record('default', key.name)
    const record = JSON.parse(await api.etcd.get(recordKey).string() ?? '{}')
    await api.etcd.put(recordKey).value(JSON.stringify({ ...record, expires_at: Math.floor(Date.now() / 1000) - 10 })).ignoreLease()
    // Reads from the cache are consistent: the edit is seen at once.
    t.strictSame(await api.app.apiKeys.check(key.secret), { valid: false, reason: 'expired' })
  })
  t.test('disabled', async t => {
    const key = await api.createKey('default', { disabled: true })
    t.strictSame(await api.app.apiKeys.check(key.secret), { valid: false, reason: 'disabled' })
  })
  t.test('revoked: a revoke-all\'s fence, before its deletes', async t => {
    const key = await api.createKey('default', { username: 'mallory' })
    // The fence alone, as revoke-all writes it first: the record is still there.
    await api.etcd.put(keys.fence('mallory')).value(JSON.stringify({ username: 'mallory', revoked_at: 0 }))
    t.ok(await api.etcd.get(keys.record('default', key.name)).string(), 'the record is still in etcd')
    t.strictSame(await api.app.apiKeys.check(key.secret), { valid: false, reason: 'revoked' })
  })
  t.test('valid: the key, without its secret', async t => {
    const key = await api.createKey('default', { metadata: { labels: { a: 'b' } } })
    const result = await api.app.apiKeys.check(key.secret)
    t.strictSame(result, { valid: true, key: key.resource })
    t.notMatch(JSON.stringify(result), key.secret, 'no secret in it')
  })
  t.test('the metric counts each reason, disabled included', async t => {
    const after = await counts()
    const delta = (result: string) => (after[result] ?? 0) - (before[result] ?? 0)
    t.equal(delta('malformed'), 2)
    t.equal(delta('disabled'), 1)
    t.equal(delta('expired'), 1)
    t.equal(delta('revoked'), 1)
    t.equal(delta('unknown'), 2)
    t.equal(delta('valid'), 1)
  })
})
