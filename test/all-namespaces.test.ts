// GET /apikeys (SPEC "Listing across namespaces"): every namespace in etcd key order of
// `<namespace>/<name>`, the same paging, tokens, snapshot, authorization and errors as a namespaced list.
import t from 'tap'
import { sharedEtcd, dedicatedEtcd } from './helpers/etcd.js'
import { buildApp, keyAuth, type CreatedKey, type TestApp } from './helpers/app.js'
import { checkError } from './helpers/assert.js'
import { ALL, byteOrder, listPage, walk, type Key } from './helpers/list.js'

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

/** A continue token built by hand, in the documented format. */
const tokenOf = (rev: number, start: string) => Buffer.from(JSON.stringify({ v: 1, rev, start }), 'utf8').toString('base64url')
const decodeToken = (token: string) => JSON.parse(Buffer.from(token, 'base64url').toString('utf8'))
const qualified = (k: Key) => `${k.metadata.namespace as string}/${k.metadata.name as string}`
const inKeyOrder = (keys: Key[]) => keys.map(qualified).sort(byteOrder)

/** Keys in namespaces whose names show byte order: `dev-x/...` sorts before `dev/...`. */
const NAMESPACES = ['dev', 'dev-x', 'a', 'prod', 'dev.1']

async function populate (app: TestApp, perNamespace: number, body: Key = {}): Promise<CreatedKey[]> {
  const made: CreatedKey[] = []
  for (const ns of NAMESPACES) {
    made.push(...await Promise.all(Array.from({ length: perNamespace }, () => app.createKey(ns, body))))
  }
  return made
}

t.test('a walk with limit gives every key once, in the byte order of <namespace>/<name>', async t => {
  const app = await buildApp(t, etcd)
  const made = await populate(app, 3)
  const expected = inKeyOrder(made.map(k => k.resource))
  t.ok(expected.findIndex(q => q.startsWith('dev-x/')) < expected.findIndex(q => q.startsWith('dev/')), 'dev-x/ sorts before dev/ (byte order: "-" < "/")')
  t.ok(expected.findIndex(q => q.startsWith('dev.1/')) < expected.findIndex(q => q.startsWith('dev/')), 'and dev.1/ too ("." is 0x2e, "/" 0x2f)')
  for (const limit of [1, 2, 4, 7, 15, 1000]) {
    const w = await walk(app, ALL, limit)
    t.strictSame(w.items.map(qualified), expected, `limit=${limit}: all ${expected.length} keys, once each, in key order`)
    t.ok(w.pages.every(p => p.length <= limit), 'no page over the limit')
    t.equal(w.pages.length, Math.ceil(expected.length / limit), `${w.pages.length} pages, the last without a token (none empty)`)
  }
  const whole = await listPage(app, ALL)
  t.equal(whole.res.statusCode, 200)
  t.strictSame(whole.res.json().map(qualified), expected, 'without limit: the same keys, streamed')
  t.strictSame(whole.res.json().find((k: Key) => k.metadata.name === made[0].name), made[0].resource, 'each key as GET shows it')
  t.equal(whole.next, undefined, 'and no token')
})

t.test('a walk reads the snapshot of its first page, across namespaces', async t => {
  const app = await buildApp(t, etcd)
  const made = await populate(app, 2)
  const first = await listPage(app, ALL, { limit: 3 })
  await app.createKey('a')
  await app.createKey('zzz')
  const deleted = made.find(k => !first.res.body.includes(k.name))!
  t.equal((await app.call({ method: 'DELETE', path: `/namespaces/${deleted.resource.metadata.namespace as string}/apikey/${deleted.name}` })).statusCode, 204)
  const rest = await walk(app, ALL, 3, { from: first.next })
  t.strictSame([...first.res.json(), ...rest.items].map(qualified), inKeyOrder(made.map(k => k.resource)), 'the walk sees the keys of its first page\'s revision')
})

t.test('a non-admin sees only its own keys, in every namespace', async t => {
  const app = await buildApp(t, etcd)
  await populate(app, 2)
  const bobs = await populate(app, 1, { username: 'bob' })
  await populate(app, 1, { username: 'alice' })
  const bob = keyAuth(bobs[0].secret)
  const expected = inKeyOrder(bobs.map(k => k.resource))
  const w = await walk(app, ALL, 2, { auth: bob })
  t.strictSame(w.items.map(qualified), expected, 'paged: bob\'s five keys, in key order')
  t.ok(w.items.every(k => k.username === 'bob'), 'no one else\'s')
  const whole = await listPage(app, ALL, { auth: bob })
  t.strictSame(whole.res.json().map(qualified), expected, 'streamed: the same')
  t.equal((await walk(app, ALL, 5)).items.length, 20, 'while the admin sees all 20')
})

t.test('tokens across the two list routes', async t => {
  const app = await buildApp(t, etcd)
  const made = await populate(app, 3)
  const all = inKeyOrder(made.map(k => k.resource))

  // A namespaced list's token goes on across namespaces in GET /apikeys.
  const dev = await listPage(app, 'dev', { limit: 1 })
  const devFirst = qualified(dev.res.json()[0])
  const onward = await walk(app, ALL, 4, { from: dev.next })
  t.strictSame(onward.items.map(qualified), all.slice(all.indexOf(devFirst) + 1), 'a namespaced token, on /apikeys: every key after it, dev\'s and the later namespaces\'')

  // This list's token, given to a namespaced list: 200 where its start lies in that namespace.
  const pages = (await walk(app, ALL, 1)).tokens
  const inDevX = pages.find(tok => tok !== undefined && decodeToken(tok).start.startsWith('dev-x/') && !decodeToken(tok).start.startsWith('dev-x/\u0000'))!
  const startKey = decodeToken(inDevX).start.slice(0, -1) as string
  const devX = await walk(app, 'dev-x', 1, { from: inDevX })
  t.strictSame(devX.items.map(qualified), all.filter(q => q.startsWith('dev-x/') && byteOrder(q, startKey) > 0), 'an /apikeys token inside dev-x, on dev-x: the rest of dev-x only')
  for (const other of ['dev', 'prod', 'dev-x2']) {
    const { res } = await listPage(app, other, { limit: 1, token: inDevX })
    checkError(t, res, 400, 1, `an /apikeys token inside dev-x, on ${other}`)
    t.match(res.json().message, /does not belong to this namespace/)
    t.notOk(made.some(k => res.body.includes(k.name)), 'naming no key')
  }

  // Hand-made starts: between namespaces, and what no namespace holds.
  const rev = decodeToken(inDevX).rev as number
  const between = await walk(app, ALL, 100, { from: tokenOf(rev, 'dev.') })
  t.strictSame(between.items.map(qualified), all.filter(q => byteOrder(q, 'dev.') >= 0), 'a start between namespaces (a prefix of one) is valid on /apikeys')
  checkError(t, (await listPage(app, 'dev.1', { limit: 1, token: tokenOf(rev, 'dev.') })).res, 400, 1, 'but not on a namespaced list')
  t.equal((await listPage(app, ALL, { limit: 1, token: tokenOf(rev, '') })).res.statusCode, 200, 'an empty start: the first key')
  for (const [start, what] of [['a/b/c', 'two slashes'], ['../apikey-digests/x', 'a climb out of the records'], ['dev/x/', 'a slash in a name']]) {
    const { res } = await listPage(app, ALL, { limit: 1, token: tokenOf(rev, start) })
    checkError(t, res, 400, 1, `a start with ${what}`)
    t.notMatch(res.body, app.root, 'naming no etcd key')
  }
  for (const token of ['!!!', 'e30', tokenOf(0, 'dev/'), tokenOf(rev + 1_000_000, 'dev/')]) {
    checkError(t, (await listPage(app, ALL, { limit: 1, token })).res, 400, 1, `a bad token ${token}`)
  }
  checkError(t, (await listPage(app, ALL, { limit: 'x' })).res, 400, 1, 'a bad limit')
})

t.test('GET /apikeys beside DELETE /apikeys: other methods are a 405 with Allow', async t => {
  const app = await buildApp(t, etcd)
  const [bob] = await populate(app, 1, { username: 'bob' })
  const head = await app.call({ method: 'HEAD', path: '/apikeys' })
  t.equal(head.statusCode, 200, 'HEAD answers')
  for (const method of ['PUT', 'POST', 'PATCH'] as const) {
    const res = await app.call({ method, path: '/apikeys', body: {} })
    checkError(t, res, 405, 1, `${method} /apikeys`)
    t.equal(res.headers.allow, 'GET, HEAD, DELETE', 'Allow names GET, HEAD and DELETE')
  }
  const revoked = await app.call({ method: 'DELETE', path: '/apikeys?username=bob' })
  t.strictSame(revoked.json(), { username: 'bob', deleted: 5 }, 'DELETE /apikeys?username= still revokes')
  t.notOk((await listPage(app, ALL)).res.body.includes(bob.name), 'and the list no longer holds bob\'s keys')
})

t.test('a token whose revision etcd compacted: 410 on /apikeys too', async t => {
  // Compaction is global to an etcd: this test owns one.
  const own = await dedicatedEtcd()
  t.teardown(() => own.close())
  const app = await buildApp(t, own)
  await populate(app, 2)
  const { next } = await listPage(app, ALL, { limit: 3 })
  t.equal((await listPage(app, ALL, { limit: 3, token: next })).res.statusCode, 200, 'before compaction, page 2 reads')
  await app.createKey('dev')
  const current = Number((await app.etcd.kv.range({ key: Buffer.from('\0') })).header.revision)
  t.ok(current > decodeToken(next!).rev, 'etcd moved past page 1\'s revision')
  await app.etcd.kv.compact({ revision: current })
  for (const limit of [3, undefined]) {
    const { res } = await listPage(app, ALL, { limit, token: next })
    checkError(t, res, 410, 7, `limit=${limit}: compacted revision`)
    t.match(res.json().message, /restart/i, 'the message says to restart the list')
  }
  t.equal((await walk(app, ALL, 3)).items.length, 11, 'a list started again reads every key')
})
