// Authentication with API keys, and the authorization policy: a key never mints a stronger key.
import t from 'tap'
import { sharedEtcd, dedicatedEtcd } from './helpers/etcd.js'
import { adminAuth, buildApp, keyAuth, type Answer, type TestApp } from './helpers/app.js'
import type { Authorize } from '../lib/index.js'

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

const list = (api: TestApp, auth: string, namespace = 'default') =>
  api.call({ path: `/namespaces/${namespace}/apikey`, auth })
const names = (res: Answer) => res.json().map((k: { metadata: { name: string } }) => k.metadata.name).sort()

/** Changes one character of the random part: the checksum no longer holds. */
const withWrongChecksum = (secret: string) => secret.slice(0, 10) + (secret[10] === 'A' ? 'B' : 'A') + secret.slice(11)

t.test('Authorization: Key authenticates as the key\'s username until the key is deleted', async t => {
  const api = await buildApp(t, etcd)
  const bob = await api.createKey('default', { username: 'bob' })
  const res = await list(api, keyAuth(bob.secret))
  t.equal(res.statusCode, 200)
  const mine = await api.call({ method: 'POST', path: '/namespaces/default/apikey', body: {}, auth: keyAuth(bob.secret) })
  t.equal(mine.statusCode, 201, 'a key can mint a key for its own user')
  t.equal(mine.json().username, 'bob', 'which acts as the same user')
  t.equal(mine.json().metadata.created_by, 'bob')
  t.equal(await api.app.apiKeys.verify(bob.secret).then(k => k?.metadata.name), bob.name, 'apiKeys.verify finds the key')

  t.equal((await api.call({ method: 'DELETE', path: `/namespaces/default/apikey/${bob.name}` })).statusCode, 204)
  const after = await list(api, keyAuth(bob.secret))
  t.equal(after.statusCode, 401, 'a deleted key no longer authenticates')
  t.equal(after.json().code, 5)
  t.equal(await api.app.apiKeys.verify(bob.secret), null, 'nor verifies')
  t.equal((await list(api, keyAuth(mine.json().key))).statusCode, 200, 'the other key still works')
})

t.test('a wrong or malformed key is a 401 that says nothing about which part was wrong', async t => {
  const api = await buildApp(t, etcd)
  const { secret } = await api.createKey('default')
  const bad = {
    'wrong checksum': withWrongChecksum(secret),
    'wrong prefix': 'xyz_' + secret.slice(4),
    'too short': secret.slice(0, -1),
    'too long': secret + 'A',
    'not base64url': secret.slice(0, 20) + '!' + secret.slice(21),
    empty: ''
  }
  // A well-formed key that etcd does not know: one that was revoked.
  const revoked = await api.createKey('default')
  await api.call({ method: 'DELETE', path: `/namespaces/default/apikey/${revoked.name}` })
  const bodies = new Set<string>()
  for (const [title, candidate] of Object.entries({ ...bad, revoked: revoked.secret })) {
    const res = await list(api, keyAuth(candidate))
    t.equal(res.statusCode, 401, title)
    bodies.add(res.body)
  }
  t.equal(bodies.size, 1, 'every refusal has the same body')
  t.notOk([...bodies][0].includes(secret.slice(4, 20)), 'which holds no part of the key')
})

t.test('a key with a wrong checksum is refused without reading etcd', async t => {
  // With etcd frozen, anything that reads it answers 503 after the deadline; a checksum failure
  // is a 401 at once.
  const frozen = await dedicatedEtcd()
  t.teardown(() => frozen.close())
  const api = await buildApp(t, frozen, { requestTimeout: 1000 })
  const { secret } = await api.createKey('default')
  await frozen.freeze()
  t.teardown(() => frozen.thaw())
  const refused = await list(api, keyAuth(withWrongChecksum(secret)))
  t.equal(refused.statusCode, 401, 'wrong checksum: 401, etcd not asked')
  const looked = await list(api, keyAuth(secret))
  t.equal(looked.statusCode, 503, 'a well-formed key is looked up in etcd, which cannot answer: 503, not 401')
  t.ok(looked.headers['retry-after'], 'with Retry-After')
})

t.test('a key of a plain user manages only its own user\'s keys', async t => {
  const api = await buildApp(t, etcd)
  const bob = await api.createKey('default', { username: 'bob' })
  const bobsOther = await api.createKey('default', { username: 'bob', metadata: { labels: { n: '2' } } })
  const alice = await api.createKey('default', { username: 'alice' })
  const admins = await api.createKey('default')
  const asBob = keyAuth(bob.secret)
  const before = await api.snapshot()

  const mintAdmin = await api.call({ method: 'POST', path: '/namespaces/default/apikey', body: { username: 'admin' }, auth: asBob })
  t.equal(mintAdmin.statusCode, 403, 'bob cannot create a key for admin')
  t.equal(mintAdmin.json().code, 4)
  const escalate = await api.call({ method: 'PATCH', path: `/namespaces/default/apikey/${bob.name}`, body: { username: 'admin' }, auth: asBob })
  t.equal(escalate.statusCode, 403, 'bob cannot patch his key to username admin')
  t.equal(escalate.json().code, 4)

  t.same(names(await list(api, asBob)), [bob.name, bobsOther.name].sort(), 'alice\'s and admin\'s keys are absent from bob\'s list')
  const page = await api.call({ path: '/namespaces/default/apikey?limit=1', auth: asBob })
  t.equal(page.json().length, 1)
  t.ok([bob.name, bobsOther.name].includes(page.json()[0].metadata.name), 'a page holds only bob\'s keys')
  for (const other of [alice, admins]) {
    const path = `/namespaces/default/apikey/${other.name}`
    for (const res of [
      await api.call({ path, auth: asBob }),
      await api.call({ method: 'PATCH', path, body: { url: 'x' }, auth: asBob }),
      await api.call({ method: 'PATCH', path, body: { url: 'x' }, auth: asBob, headers: { 'if-match': '"1"' } }),
      await api.call({ method: 'DELETE', path, auth: asBob })
    ]) {
      t.equal(res.statusCode, 404, 'another user\'s key is not found, so its existence is not revealed')
      t.same(res.json(), { message: `apikey ${other.name} not found`, code: 2 }, 'the same answer as for a key that does not exist')
    }
  }
  t.same(await api.snapshot(), before, 'nothing changed')

  const path = `/namespaces/default/apikey/${bobsOther.name}`
  t.equal((await api.call({ path, auth: asBob })).statusCode, 200, 'bob reads his own key')
  t.equal((await api.call({ method: 'PATCH', path, body: { url: 'mine' }, auth: asBob })).json().url, 'mine', 'patches it')
  t.equal((await api.call({ method: 'DELETE', path, auth: asBob })).statusCode, 204, 'deletes it')

  t.equal((await list(api, adminAuth)).json().length, 3, 'the bearer token (an admin) sees every key')
  const forAlice = await api.call({ method: 'POST', path: '/namespaces/default/apikey', body: { username: 'alice' } })
  t.equal(forAlice.statusCode, 201, 'and creates keys for anyone')
  const aliceKey = `/namespaces/default/apikey/${alice.name}`
  t.equal((await api.call({ method: 'PATCH', path: aliceKey, body: { username: 'carol' } })).statusCode, 200, 'and patches any key to anyone')
  t.equal((await api.call({ method: 'DELETE', path: aliceKey })).statusCode, 204, 'and deletes any key')
})

t.test('a key whose username is one of the given admins acts as an admin', async t => {
  const api = await buildApp(t, etcd)
  const adminKey = await api.createKey('default', { username: 'admin' })
  const carol = await api.createKey('default', { username: 'carol' })
  const asAdmin = keyAuth(adminKey.secret)
  t.equal((await list(api, asAdmin)).json().length, 2, 'it sees every key')
  t.equal((await api.call({ path: `/namespaces/default/apikey/${carol.name}`, auth: asAdmin })).statusCode, 200)
  const minted = await api.call({ method: 'POST', path: '/namespaces/default/apikey', body: { username: 'dave' }, auth: asAdmin })
  t.equal(minted.statusCode, 201, 'and creates keys for anyone')
})

t.test('a host replaces the policy with its own authorize', async t => {
  const asked: string[] = []
  // A read-only policy for everyone but admins, with labels deciding what is visible.
  const authorize: Authorize = ({ caller, action, key }) => {
    asked.push(action)
    if (caller.admin) return true
    if (action === 'create' || action === 'patch' || action === 'delete') return false
    return key.metadata.labels?.visible === 'yes'
  }
  const api = await buildApp(t, etcd, { authorize })
  const reader = await api.createKey('default', { username: 'reader', metadata: { labels: { visible: 'yes' } } })
  const hidden = await api.createKey('default', { username: 'reader' })
  const asReader = keyAuth(reader.secret)
  t.same(names(await list(api, asReader)), [reader.name], 'list asks authorize for each key and leaves refused ones out')
  t.equal((await api.call({ path: `/namespaces/default/apikey/${hidden.name}`, auth: asReader })).statusCode, 404, 'get of a refused key: 404')
  t.equal((await api.call({ method: 'POST', path: '/namespaces/default/apikey', body: {}, auth: asReader })).statusCode, 403, 'create refused: 403')
  t.equal((await api.call({ method: 'PATCH', path: `/namespaces/default/apikey/${reader.name}`, body: { url: 'x' }, auth: asReader })).statusCode, 403, 'a patch it may not make: 403')
  t.equal((await api.call({ method: 'DELETE', path: `/namespaces/default/apikey/${reader.name}`, auth: asReader })).statusCode, 403, 'a visible key it may not delete: 403')
  t.equal((await api.call({ method: 'DELETE', path: `/namespaces/default/apikey/${hidden.name}`, auth: asReader })).statusCode, 404, 'an invisible one: 404')
  t.same([...new Set(asked)].sort(), ['create', 'delete', 'get', 'list', 'patch'], 'every action was asked')
})
