// Idempotency-Key on a create: a client that lost the answer retries with the same key and gets
// the same API key back, secret included, never a second key; the secret is only kept encrypted
// under a key derived from the Idempotency-Key, and the entry lives 24 hours on a lease.
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { connect } from 'node:net'
import type { AddressInfo } from 'node:net'
import { sharedEtcd } from './helpers/etcd.js'
import { buildApp, keyAuth, adminAuth, ADMIN_TOKEN, type TestApp } from './helpers/app.js'
import { checkError } from './helpers/assert.js'
import { waitFor } from './helpers/wait.js'
import { digestSecret } from '../lib/keys/secrets.js'
import {
  IDEMPOTENCY_TTL_SECONDS, idempotencyEntryId, openIdempotencyEntry, sealIdempotencyEntry
} from '../lib/keys/idempotency.js'

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

/** A fresh Idempotency-Key, which the leak watch of `api` must never see in a log line or an answer. */
function newIdempotencyKey (api: TestApp): string {
  const key = randomUUID()
  api.leakWatch?.watchFor(key, 'an Idempotency-Key')
  return key
}

const create = (api: TestApp, idempotencyKey: string | undefined, body: unknown = {}, { namespace = 'default', auth = adminAuth } = {}) =>
  api.call({
    method: 'POST',
    path: `/namespaces/${namespace}/apikey`,
    body,
    auth,
    headers: idempotencyKey === undefined ? {} : { 'idempotency-key': idempotencyKey }
  })

/** etcd's keys under the app's root, by kind. */
async function stored (api: TestApp) {
  const all = await api.snapshot()
  const of = (kind: string) => Object.entries(all).filter(([k]) => k.startsWith(`${api.root}/${kind}/`))
  return { all, records: of('apikeys'), digests: of('apikey-digests'), entries: of('apikey-idempotency') }
}

/**
 * Sends a create over a socket and closes the socket once the request is written, before any
 * answer: the server commits, the client never reads the answer.
 */
async function createAndHangUp (api: TestApp, idempotencyKey: string, body: unknown): Promise<void> {
  if (!api.app.server.listening) await api.app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = api.app.server.address() as AddressInfo
  const payload = JSON.stringify(body)
  const socket = connect(port, '127.0.0.1')
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
  let answered = false
  socket.on('data', () => { answered = true })
  await new Promise<void>(resolve => socket.write([
    'POST /api/core/v2/namespaces/default/apikey HTTP/1.1',
    'Host: localhost',
    `Authorization: Bearer ${ADMIN_TOKEN}`,
    'Content-Type: application/json',
    `Idempotency-Key: ${idempotencyKey}`,
    `Content-Length: ${Buffer.byteLength(payload)}`,
    '', payload
  ].join('\r\n'), () => resolve()))
  socket.destroy()
  if (answered) throw new Error('the answer arrived before the hang-up: the test proves nothing')
}

t.test('a create whose answer was lost, retried with its Idempotency-Key, answers the same key and secret', async t => {
  const api = await buildApp(t, etcd)
  const idempotencyKey = newIdempotencyKey(api)
  const body = { metadata: { labels: { team: 'ops' } } }
  await createAndHangUp(api, idempotencyKey, body)

  // The server goes on without the client: the key appears in etcd.
  const records = await waitFor(async () => {
    const { records } = await stored(api)
    return records.length > 0 && records
  }, { timeout: 10_000, interval: 50, what: 'the create to reach etcd though nobody read its answer' })
  t.equal(records.length, 1, 'the create was committed though nobody read its answer')

  const retry = await create(api, idempotencyKey, body)
  t.equal(retry.statusCode, 201, 'the retry answers 201', { body: retry.body })
  t.equal(retry.headers['idempotent-replayed'], 'true', 'and says it is a replay')
  const key = retry.json()
  t.equal(records[0][0], `${api.root}/apikeys/default/${key.metadata.name}`, 'with the key that was created')
  t.same(key.metadata.labels, { team: 'ops' })
  t.equal(JSON.parse(records[0][1]).key_sha256, digestSecret(key.key), 'and the secret whose digest etcd holds')
  t.equal(retry.headers.location, `/api/core/v2/namespaces/default/apikey/${key.metadata.name}`)
  t.match(retry.headers.etag, /^"\d+"$/)
  const seen = await api.call({ path: `/namespaces/default/apikey/${key.metadata.name}`, auth: keyAuth(key.key) })
  t.equal(seen.statusCode, 200, 'the replayed secret authenticates')

  const after = await stored(api)
  t.equal(after.records.length, 1, 'still one key')
  t.equal(after.digests.length, 1, 'and one digest entry')
  t.equal(after.entries.length, 1, 'and one idempotency entry')
  const everything = JSON.stringify(after.all)
  t.notOk(everything.includes(key.key), 'etcd does not hold the secret readable')
  t.notOk(everything.includes(key.key.slice(-49, -6)), 'nor its random part')
  t.notOk(everything.includes(idempotencyKey), 'nor the Idempotency-Key')

  // The entry lives on a lease of 24 hours (a shared one: up to a minute longer).
  const [entryKey] = after.entries[0]
  const [kv] = (await api.etcd.getAll().prefix(entryKey).exec()).kvs
  t.not(String(kv.lease), '0', 'the entry is on a lease')
  const lease = await api.etcd.leaseClient.leaseTimeToLive({ ID: kv.lease, keys: false })
  t.ok(Number(lease.grantedTTL) >= IDEMPOTENCY_TTL_SECONDS && Number(lease.grantedTTL) <= IDEMPOTENCY_TTL_SECONDS + 60,
    `granted for 24 hours (${String(lease.grantedTTL)} s)`)
  t.ok(Number(lease.TTL) > IDEMPOTENCY_TTL_SECONDS - 60, 'and nearly all of it is left')

  const again = await create(api, idempotencyKey, body)
  t.equal(again.json().key, key.key, 'a third try answers the same again')
})

t.test('without an Idempotency-Key, every create makes a key', async t => {
  const api = await buildApp(t, etcd)
  t.equal((await create(api, undefined)).statusCode, 201)
  const second = await create(api, undefined)
  t.equal(second.statusCode, 201)
  t.equal(second.headers['idempotent-replayed'], undefined, 'no replay header')
  const after = await stored(api)
  t.equal(after.records.length, 2, 'two keys')
  t.equal(after.entries.length, 0, 'and no idempotency entry')
})

t.test('the same Idempotency-Key with another request is a 400 that changes nothing', async t => {
  const api = await buildApp(t, etcd)
  const idempotencyKey = newIdempotencyKey(api)
  const first = await create(api, idempotencyKey, { metadata: { labels: { a: '1', b: '2' } } })
  t.equal(first.statusCode, 201)
  t.equal(first.headers['idempotent-replayed'], undefined, 'the first create is no replay')
  const before = await api.snapshot()
  for (const [body, namespace, what] of [
    [{ metadata: { labels: { a: '1', b: '3' } } }, 'default', 'another body'],
    [{}, 'default', 'an empty body'],
    [{ metadata: { labels: { a: '1', b: '2' } } }, 'other', 'the same body in another namespace']
  ] as const) {
    const res = await create(api, idempotencyKey, body, { namespace })
    checkError(t, res, 400, 1, what)
    t.match(res.json().message, /Idempotency-Key was sent with another request/)
  }
  t.same(await api.snapshot(), before, 'nothing was written')
  const reordered = await create(api, idempotencyKey, { metadata: { labels: { b: '2', a: '1' } } })
  t.equal(reordered.statusCode, 201, 'the same body with its fields in another order is the same request')
  t.equal(reordered.json().metadata.name, first.json().metadata.name, 'and answers the same key')
})

t.test('concurrent creates with one Idempotency-Key make one key and all answer it', async t => {
  const api = await buildApp(t, etcd)
  const idempotencyKey = newIdempotencyKey(api)
  const answers = await Promise.all(Array.from({ length: 12 }, () => create(api, idempotencyKey, { username: 'alice' })))
  t.same(answers.map(a => a.statusCode), answers.map(() => 201), 'every one answers 201')
  t.equal(new Set(answers.map(a => a.json().metadata.name)).size, 1, 'with one key')
  t.equal(new Set(answers.map(a => a.json().key)).size, 1, 'and one secret')
  const { records, entries } = await stored(api)
  t.equal(records.length, 1, 'etcd holds one key')
  t.equal(entries.length, 1, 'and one entry')
})

t.test('an Idempotency-Key belongs to its caller: another caller\'s same key is another create', async t => {
  const api = await buildApp(t, etcd)
  const idempotencyKey = newIdempotencyKey(api)
  const bob = await api.createKey('default', { username: 'bob' })
  const byAdmin = await create(api, idempotencyKey, {})
  const byBob = await create(api, idempotencyKey, {}, { auth: keyAuth(bob.secret) })
  t.equal(byAdmin.statusCode, 201)
  t.equal(byBob.statusCode, 201)
  t.not(byBob.json().metadata.name, byAdmin.json().metadata.name, 'bob gets a key of his own')
  t.equal(byBob.json().username, 'bob')
  t.equal(byBob.headers['idempotent-replayed'], undefined, 'not a replay of the admin\'s')
  t.equal((await stored(api)).entries.length, 2, 'one entry per caller')
})

t.test('a replay is answered before the quota is counted', async t => {
  const api = await buildApp(t, etcd, { maxKeysPerUser: 2 })
  const bob = await api.createKey('default', { username: 'bob' })
  const idempotencyKey = newIdempotencyKey(api)
  const mint = () => create(api, idempotencyKey, {}, { auth: keyAuth(bob.secret) })
  t.equal((await mint()).statusCode, 201, 'bob\'s second key, his last under the quota')
  const retry = await mint()
  t.equal(retry.statusCode, 201, 'its retry answers it, though bob is at his quota')
  t.equal(retry.headers['idempotent-replayed'], 'true')
  checkError(t, await create(api, newIdempotencyKey(api), {}, { auth: keyAuth(bob.secret) }), 403, 4, 'a new Idempotency-Key is a new key: over the quota')
})

t.test('a replay of a key revoked since is a 409, and makes nothing', async t => {
  const api = await buildApp(t, etcd)
  const idempotencyKey = newIdempotencyKey(api)
  const first = await create(api, idempotencyKey, { username: 'zoe' })
  t.equal(first.statusCode, 201)
  // A revoke-all cut short after its fence: the key is revoked, its record and entry still in etcd.
  await api.etcd.put(`${api.root}/apikey-fences/zoe`).value(JSON.stringify({ username: 'zoe', revoked_at: Math.floor(Date.now() / 1000) }))
  const before = await api.snapshot()
  const retry = await create(api, idempotencyKey, { username: 'zoe' })
  checkError(t, retry, 409, 3, 'the key is gone')
  t.match(retry.json().message, /deleted since/)
  t.same(await api.snapshot(), before, 'and no new key is made')
})

t.test('a key deleted takes its entry: the same Idempotency-Key then makes a new key', async t => {
  const api = await buildApp(t, etcd)
  const idempotencyKey = newIdempotencyKey(api)
  const first = await create(api, idempotencyKey, {})
  const { name } = first.json().metadata
  t.equal((await api.call({ method: 'DELETE', path: `/namespaces/default/apikey/${name}` })).statusCode, 204)
  t.same(Object.keys(await api.snapshot()), [], 'etcd holds nothing of it, entry included')
  const again = await create(api, idempotencyKey, {})
  t.equal(again.statusCode, 201, 'a new create')
  t.not(again.json().metadata.name, name, 'of a new key')
  t.not(again.json().key, first.json().key, 'with a new secret')
})

t.test('a malformed Idempotency-Key is a 400 that changes nothing', async t => {
  const api = await buildApp(t, etcd)
  const before = await api.snapshot()
  for (const [value, what] of [
    ['short', 'shorter than 16 characters'],
    ['x'.repeat(256), 'longer than 255'],
    ['has a space in it, quite long', 'a space'],
    ['"quoted-but-"inside-quote"', 'a quote inside'],
    ['""', 'an empty quoted string']
  ]) {
    const res = await create(api, value, {})
    checkError(t, res, 400, 1, what)
    t.match(res.json().message, /^Idempotency-Key must be 16 to 255 visible ASCII characters/)
  }
  t.same(await api.snapshot(), before, 'nothing was written')
  const quoted = `"${randomUUID()}"`
  const first = await create(api, quoted, {})
  t.equal(first.statusCode, 201, 'a structured-field string (quoted) is accepted')
  t.equal((await create(api, quoted.slice(1, -1), {})).json().key, first.json().key, 'and is the same key as its bare form')
})

t.test('an entry opens only with its own Idempotency-Key and its own id', async t => {
  const key = randomUUID()
  const id = idempotencyEntryId('alice', key)
  const sealed = sealIdempotencyEntry(key, id, { namespace: 'ns', name: 'n', fingerprint: 'f', secret: 'sak_secret' })
  t.notOk(sealed.includes('sak_secret'), 'the secret is not readable in the entry')
  t.same(openIdempotencyEntry(key, id, sealed), { namespace: 'ns', name: 'n', fingerprint: 'f', secret: 'sak_secret' })
  t.throws(() => openIdempotencyEntry(randomUUID(), id, sealed), 'another Idempotency-Key cannot open it')
  t.throws(() => openIdempotencyEntry(key, idempotencyEntryId('bob', key), sealed), 'nor can the entry be moved under another id')
  t.not(idempotencyEntryId('ab', 'c'.repeat(16)), idempotencyEntryId('a', 'b' + 'c'.repeat(16)), 'caller and key cannot be shifted into each other')
})
