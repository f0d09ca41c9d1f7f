// Containing a leaked key: an admin revokes every key of a username in one call, and every change
// leaves an audit line (who, what, when, from where; never a secret).
import t from 'tap'
import { sharedEtcd } from './helpers/etcd.js'
import { buildApp, keyAuth } from './helpers/app.js'
import { checkError } from './helpers/assert.js'

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

t.test('DELETE /apikeys?username= revokes every key of that user, in all namespaces', async t => {
  const api = await buildApp(t, etcd)
  const bobs = [
    ...await Promise.all(['a', 'a', 'a', 'b', 'b', 'c'].map(ns => api.createKey(ns, { username: 'bob' })))
  ]
  const alices = await Promise.all(['a', 'c'].map(ns => api.createKey(ns, { username: 'alice' })))
  const revoke = (username: string, auth?: string) => api.call({ method: 'DELETE', path: `/apikeys?username=${username}`, ...(auth !== undefined && { auth }) })

  const before = await api.snapshot()
  checkError(t, await revoke('bob', keyAuth(alices[0].secret)), 403, 4, 'a non-admin')
  checkError(t, await revoke('bob', keyAuth(bobs[0].secret)), 403, 4, 'bob himself (no admin)')
  checkError(t, await api.call({ method: 'DELETE', path: '/apikeys' }), 400, 1, 'no username')
  t.match((await api.call({ method: 'DELETE', path: '/apikeys' })).json().message, /username is required/)
  checkError(t, await api.call({ method: 'GET', path: '/apikeys?username=bob' }), 405, 1, 'another method')
  t.same(await api.snapshot(), before, 'none of these changed anything')

  const res = await revoke('bob')
  t.equal(res.statusCode, 200)
  t.same(res.json(), { username: 'bob', deleted: 6 }, 'answered with the count')
  for (const bob of bobs) t.equal((await api.call({ path: '/namespaces/a/apikey', auth: keyAuth(bob.secret) })).statusCode, 401, 'bob\'s key no longer authenticates')
  for (const alice of alices) t.equal((await api.call({ path: '/namespaces/a/apikey', auth: keyAuth(alice.secret) })).statusCode, 200, 'alice\'s still does')

  const left = await api.snapshot()
  const records = Object.entries(left).filter(([key]) => key.startsWith(`${api.root}/apikeys/`))
  t.same(records.map(([, value]) => JSON.parse(value).username).sort(), ['alice', 'alice'], 'etcd holds only alice\'s records')
  t.equal(Object.keys(left).length, 4, 'and their two digest entries, none of bob\'s')
  t.same((await revoke('bob')).json(), { username: 'bob', deleted: 0 }, 'a second call finds nothing')
})

t.test('every change leaves one audit line: who, what, when, from where', async t => {
  const api = await buildApp(t, etcd)
  const key = await api.createKey('ops', { username: 'carol', headers: { Authorization: 'Bearer do-not-log-me' } })
  await api.call({ method: 'PATCH', path: `/namespaces/ops/apikey/${key.name}`, body: { metadata: { labels: { x: 'y' } } } })
  await api.call({ method: 'DELETE', path: `/namespaces/ops/apikey/${key.name}` })
  await api.createKey('ops', { username: 'carol' })
  await api.call({ method: 'DELETE', path: '/apikeys?username=carol' })
  await api.call({ path: '/namespaces/ops/apikey' })

  const lines = api.logs()
  t.ok(lines.length > 10, `${lines.length} log lines captured`)
  const audits = lines.filter(line => line.audit !== undefined)
  t.same(audits.map(line => line.audit.action), ['create', 'patch', 'delete', 'create', 'revoke-all'], 'one line per change, none for a read')
  for (const line of audits) {
    t.match(line.audit, { by: 'admin', admin: true, from: '127.0.0.1' }, `${line.audit.action}: who and from where`)
    t.type(line.time, 'number', 'when')
    t.type(line.reqId, 'string', 'and which request')
  }
  t.match(audits[0].audit, { namespace: 'ops', name: key.name, username: 'carol' }, 'create: which key, for whom')
  t.match(audits[1].audit, { namespace: 'ops', name: key.name, fields: ['metadata'] }, 'patch: which fields, not their values')
  t.match(audits[2].audit, { namespace: 'ops', name: key.name, username: 'carol' }, 'delete')
  t.match(audits[4].audit, { username: 'carol', deleted: 1 }, 'revoke-all: whose keys, how many')
  const text = JSON.stringify(audits)
  t.notOk(text.includes(key.secret), 'no secret')
  t.notOk(text.includes('do-not-log-me'), 'no value of the key\'s own headers')
})

t.test('a non-admin creates keys for its user only up to the quota; admins are not limited', async t => {
  const api = await buildApp(t, etcd, { maxKeysPerUser: 3 })
  const bob = await api.createKey('a', { username: 'bob' })
  const asBob = keyAuth(bob.secret)
  const mint = (namespace: string) => api.call({ method: 'POST', path: `/namespaces/${namespace}/apikey`, body: {}, auth: asBob })
  t.equal((await mint('a')).statusCode, 201, 'bob\'s second key')
  const third = await mint('b')
  t.equal(third.statusCode, 201, 'his third, in another namespace')
  const before = await api.snapshot()
  const refused = await mint('c')
  checkError(t, refused, 403, 4, 'a fourth: the quota counts every namespace')
  t.match(refused.json().message, /holds 3 keys/)
  t.same(await api.snapshot(), before, 'and wrote nothing')

  const byAdmin = await api.call({ method: 'POST', path: '/namespaces/c/apikey', body: { username: 'bob' } })
  t.equal(byAdmin.statusCode, 201, 'an admin is not limited: bob now holds 4 keys')
  checkError(t, await mint('c'), 403, 4, 'so bob still may not mint one')

  for (const res of [third, byAdmin]) {
    const { namespace, name } = res.json().metadata
    t.equal((await api.call({ method: 'DELETE', path: `/namespaces/${namespace}/apikey/${name}` })).statusCode, 204)
  }
  t.equal((await mint('c')).statusCode, 201, 'with two revoked, bob may mint again, up to 3')
  checkError(t, await mint('c'), 403, 4, 'and not past them')
})
