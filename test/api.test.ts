// The routes of the reference as SPEC.md settles them: the reference's own examples, and every
// status code each route gives, with nothing changed in etcd by a bad request.
import t, { type Test } from 'tap'
import { crc32 } from 'node:zlib'
import { sharedEtcd } from './helpers/etcd.js'
import { BASE, adminAuth, buildApp, type Call } from './helpers/app.js'
import { referenceExamples } from './fixtures/reference-examples.js'
import { checkError } from './helpers/assert.js'

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

const SECRET_FORM = /^sak_([A-Za-z0-9_-]{43})([A-Za-z0-9_-]{6})$/

/** The secret's form, checked independently of lib/secrets.ts: prefix, 32 random bytes, CRC-32. */
function checkSecretForm (t: Test, secret: string) {
  const match = SECRET_FORM.exec(secret)
  t.ok(match, 'secret is sak_ + 43 + 6 base64url characters')
  if (!match) return
  t.equal(Buffer.from(match[1], 'base64url').length, 32, 'random part is 32 bytes')
  const sum = Buffer.alloc(4)
  sum.writeUInt32BE(crc32(Buffer.from(`sak_${match[1]}`)))
  t.equal(match[2], sum.toString('base64url'), 'checksum is the CRC-32 of prefix and random part')
}

t.test('every example object of the reference creates a key', async t => {
  const api = await buildApp(t, etcd)
  for (const [title, example] of Object.entries(referenceExamples)) {
    await t.test(title, async t => {
      const res = await api.call({ method: 'POST', path: '/namespaces/default/apikey', body: example })
      t.equal(res.statusCode, 201)
      const created = res.json()
      const name: string = created.metadata.name
      t.match(name, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, 'name is a server-made UUID v4')
      t.not(name, (example.metadata as any).name, 'the name in the body is ignored')
      t.equal(res.headers.location, `${BASE}/namespaces/default/apikey/${name}`)
      t.match(res.headers.etag, /^"\d+"$/)
      checkSecretForm(t, created.key)
      for (const field of ['url', 'sha512', 'filters', 'headers']) {
        if (field in example) t.same(created[field], example[field], `${field} as given`)
        else t.notOk(field in created, `${field} absent as in the example`)
      }
      t.equal(created.username, 'admin', 'username defaults to the caller')
      t.equal(created.metadata.created_by, 'admin')
      t.equal(created.metadata.namespace, 'default')

      const got = await api.app.inject({ url: String(res.headers.location), headers: { authorization: adminAuth } })
      t.equal(got.statusCode, 200, 'the Location answers')
      const { key, ...withoutSecret } = created
      t.same(got.json(), withoutSecret, 'GET answers the key as created, without its secret')
      t.notOk('key' in got.json(), 'GET never shows key')
      t.notOk(got.body.includes(key), 'nor the secret anywhere in the body')
      t.equal(got.headers.etag, res.headers.etag)
    })
  }
  const list = await api.call({ path: '/namespaces/default/apikey' })
  t.equal(list.statusCode, 200)
  t.equal(list.json().length, Object.keys(referenceExamples).length, 'list holds every key')
  t.ok(list.json().every((k: object) => !('key' in k)), 'list never shows key')
})

t.test('POST with an empty body creates a key with defaults, with or without a JSON Content-Type', async t => {
  const api = await buildApp(t, etcd)
  for (const headers of [{}, { 'content-type': 'application/json' }] as Array<Record<string, string>>) {
    const res = await api.call({ method: 'POST', path: '/namespaces/default/apikey', body: '', headers })
    t.equal(res.statusCode, 201, JSON.stringify(headers))
    const body = res.json()
    t.same(Object.keys(body).sort(), ['created_at', 'key', 'metadata', 'username'])
    t.ok(Math.abs(body.created_at - Date.now() / 1000) < 60, 'created_at is now, in Unix seconds')
  }
})

t.test('the apikeys alias answers the same routes; Location is the singular form', async t => {
  const api = await buildApp(t, etcd)
  const res = await api.call({ method: 'POST', path: '/namespaces/default/apikeys', body: {} })
  t.equal(res.statusCode, 201)
  const name = res.json().metadata.name
  t.equal(res.headers.location, `${BASE}/namespaces/default/apikey/${name}`)
  t.equal((await api.call({ path: `/namespaces/default/apikeys/${name}` })).statusCode, 200)
  t.equal((await api.call({ path: '/namespaces/default/apikeys' })).json().length, 1)
  t.equal((await api.call({ method: 'PATCH', path: `/namespaces/default/apikeys/${name}`, body: { url: 'u' } })).statusCode, 200)
  t.equal((await api.call({ method: 'DELETE', path: `/namespaces/default/apikeys/${name}` })).statusCode, 204)
})

t.test('DELETE answers 204 without a body, then 404', async t => {
  const api = await buildApp(t, etcd)
  const { name } = await api.createKey('default')
  const res = await api.call({ method: 'DELETE', path: `/namespaces/default/apikey/${name}` })
  t.equal(res.statusCode, 204)
  t.equal(res.body, '')
  t.notOk(res.headers['sensu-entity-count'], 'no licence headers')
  checkError(t, await api.call({ method: 'DELETE', path: `/namespaces/default/apikey/${name}` }), 404, 2)
  checkError(t, await api.call({ path: `/namespaces/default/apikey/${name}` }), 404, 2)
})

t.test('bad requests get a 4xx JSON error and change nothing in etcd', async t => {
  const api = await buildApp(t, etcd, { bodyLimit: 1024 })
  const existing = await api.createKey('default', { metadata: { labels: { a: 'b' } } })
  const item = `/namespaces/default/apikey/${existing.name}`
  const unknown = '/namespaces/default/apikey/0b6e3c1e-0000-4000-8000-000000000000'
  const longName = 'a'.repeat(64)
  const cases: Array<[string, Call, number, number, RegExp?]> = [
    ['unknown key: GET', { path: unknown }, 404, 2],
    ['unknown key: PATCH', { method: 'PATCH', path: unknown, body: { url: 'x' } }, 404, 2],
    ['unknown key: PATCH with If-Match *', { method: 'PATCH', path: unknown, body: { url: 'x' }, headers: { 'if-match': '*' } }, 404, 2],
    ['unknown key: DELETE', { method: 'DELETE', path: unknown }, 404, 2],
    ['unknown field', { method: 'POST', path: '/namespaces/default/apikey', body: { colour: 'red' } }, 400, 1, /colour/],
    ['unknown nested field', { method: 'POST', path: '/namespaces/default/apikey', body: { metadata: { owner: 'x' } } }, 400, 1, /metadata\.owner/],
    ['unknown field in PATCH', { method: 'PATCH', path: item, body: { colour: 'red' } }, 400, 1, /colour/],
    ['key in a POST body', { method: 'POST', path: '/namespaces/default/apikey', body: { key: 'sak_x' } }, 400, 1, /key/],
    ['key in a PATCH body', { method: 'PATCH', path: item, body: { key: 'sak_x' } }, 400, 1, /key/],
    ['name with an encoded slash', { path: '/namespaces/default/apikey/a%2Fb' }, 400, 1],
    ['name ..', { path: '/namespaces/default/apikey/%2E%2E', socket: true }, 400, 1],
    ['name .. unencoded', { path: '/namespaces/default/apikey/..', socket: true }, 400, 1],
    ['name of 64 characters', { path: `/namespaces/default/apikey/${longName}` }, 400, 1],
    ['non-ASCII name', { path: '/namespaces/default/apikey/caf%C3%A9' }, 400, 1],
    ['name with a leading -', { path: '/namespaces/default/apikey/-abc' }, 400, 1],
    ['namespace with an encoded slash', { path: '/namespaces/a%2Fb/apikey' }, 400, 1],
    ['namespace with a leading -', { method: 'POST', path: '/namespaces/-dev/apikey', body: {} }, 400, 1],
    ['namespace of 64 characters', { method: 'POST', path: `/namespaces/${longName}/apikey`, body: {} }, 400, 1],
    ['bad name on PATCH', { method: 'PATCH', path: '/namespaces/default/apikey/%2E%2E', body: {}, socket: true }, 400, 1],
    ['bad name on DELETE', { method: 'DELETE', path: '/namespaces/default/apikey/caf%C3%A9' }, 400, 1],
    ['malformed JSON on POST', { method: 'POST', path: '/namespaces/default/apikey', body: '{"url": ', headers: { 'content-type': 'application/json' } }, 400, 1],
    ['malformed JSON on PATCH', { method: 'PATCH', path: item, body: '{"url"', headers: { 'content-type': 'application/merge-patch+json' } }, 400, 1],
    ['JSON that is not an object', { method: 'POST', path: '/namespaces/default/apikey', body: '[1,2]', headers: { 'content-type': 'application/json' } }, 400, 1],
    ['a field of the wrong type', { method: 'POST', path: '/namespaces/default/apikey', body: { url: 42 } }, 400, 1, /url/],
    ['a map with a non-string value', { method: 'POST', path: '/namespaces/default/apikey', body: { filters: { a: 1 } } }, 400, 1, /filters/],
    ['__proto__ in a body', { method: 'POST', path: '/namespaces/default/apikey', body: '{"__proto__": {"admin": true}}', headers: { 'content-type': 'application/json' } }, 400, 1],
    ['wrong Content-Type on POST', { method: 'POST', path: '/namespaces/default/apikey', body: 'url=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } }, 415, 1],
    ['text/plain on POST', { method: 'POST', path: '/namespaces/default/apikey', body: '{}', headers: { 'content-type': 'text/plain' } }, 415, 1],
    ['merge-patch on POST', { method: 'POST', path: '/namespaces/default/apikey', body: '{}', headers: { 'content-type': 'application/merge-patch+json' } }, 415, 1],
    ['non-empty body without Content-Type', { method: 'POST', path: '/namespaces/default/apikey', body: '{}' }, 415, 1],
    ['wrong Content-Type on PATCH', { method: 'PATCH', path: item, body: '{}', headers: { 'content-type': 'text/plain' } }, 415, 1],
    ['body over bodyLimit', { method: 'POST', path: '/namespaces/default/apikey', body: { url: 'x'.repeat(2000) } }, 413, 1],
    ['PATCH body over bodyLimit', { method: 'PATCH', path: item, body: { url: 'x'.repeat(2000) } }, 413, 1],
    ['limit=-1', { path: '/namespaces/default/apikey?limit=-1' }, 400, 1, /limit/],
    ['limit=abc', { path: '/namespaces/default/apikey?limit=abc' }, 400, 1, /limit/],
    ['namespace in the body differs from the URL', { method: 'POST', path: '/namespaces/default/apikey', body: { metadata: { namespace: 'other' } } }, 400, 1, /namespace/],
    ['PATCH without a body', { method: 'PATCH', path: item }, 400, 1],
    ['unencoded a/b: no route', { path: '/namespaces/default/apikey/a/b' }, 404, 2],
    ['a path under basePath that is no route', { path: '/namespaces/default/widgets' }, 404, 2],
    ['PUT on the collection', { method: 'PUT', path: '/namespaces/default/apikey', body: {} }, 405, 1],
    ['POST on a key', { method: 'POST', path: item, body: {} }, 405, 1]
  ]
  const before = await api.snapshot()
  t.equal(Object.keys(before).length, 2, 'etcd holds the one key and its digest')
  for (const [title, call, status, code, message] of cases) {
    const res = await api.call(call)
    t.test(title, async t => {
      checkError(t, res, status, code)
      if (message) t.match(res.json().message, message, 'the message names what was wrong')
      t.notOk(/at .*\.(ts|js):\d+/.test(res.body), 'no stack trace')
      t.notOk(res.body.includes(api.root), 'no etcd key')
    })
  }
  t.same(await api.snapshot(), before, 'etcd holds exactly what it held before')
  t.equal((await api.call({ path: `/namespaces/default/apikey/${'a'.repeat(63)}` })).statusCode, 404, '63 characters is a valid name')
})

t.test('without valid credentials every route is a 401, before anything else', async t => {
  const api = await buildApp(t, etcd)
  const { name } = await api.createKey('default')
  const routes: Call[] = [
    { path: '/namespaces/default/apikey' },
    { method: 'POST', path: '/namespaces/default/apikey', body: {} },
    { path: `/namespaces/default/apikey/${name}` },
    { method: 'PATCH', path: `/namespaces/default/apikey/${name}`, body: { url: 'x' } },
    { method: 'DELETE', path: `/namespaces/default/apikey/${name}` },
    { path: '/namespaces/default/apikey/%2E%2E', socket: true },
    { method: 'POST', path: '/namespaces/default/apikey', body: 'x', headers: { 'content-type': 'text/plain' } },
    { path: '/namespaces/default/nothing' }
  ]
  const before = await api.snapshot()
  for (const auth of [null, 'Bearer wrong', 'Basic YWRtaW46YWRtaW4=', 'Key sak_nope']) {
    for (const route of routes) {
      const res = await api.call({ ...route, auth })
      checkError(t, res, 401, 5)
      t.ok(res.headers['www-authenticate'], 'says how to authenticate')
    }
  }
  t.same(await api.snapshot(), before, 'nothing changed')
})
