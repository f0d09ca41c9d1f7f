// Rotation (SPEC: Lifecycle): POST .../apikey/:apikey/rotate gives a key a new secret in one etcd
// transaction; the old secret stops at once, or after `grace_seconds`, on every server; its digest
// entry leaves etcd by itself. If-Match, authorization, the lifetime rule, revoke-all, the write
// limit, Idempotency-Key and check-consistency hold for it as for the other writes.
import { randomUUID } from 'node:crypto'
import t, { type Test } from 'tap'
import { sharedEtcd } from './helpers/etcd.js'
import { adminAuth, buildApp, keyAuth, type Answer, type TestApp } from './helpers/app.js'
import { checkError } from './helpers/assert.js'
import { waitFor } from './helpers/wait.js'
import { digestSecret, isWellFormedSecret } from '../lib/keys/secrets.js'
import { checkConsistency, repairOrphans } from '../lib/tools/consistency.js'

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

const NS = 'ops'

interface RotateCall {
  body?: unknown
  auth?: string | null
  headers?: Record<string, string>
  segment?: 'apikey' | 'apikeys'
}

const rotate = (api: TestApp, name: string, { body, auth = adminAuth, headers, segment = 'apikey' }: RotateCall = {}) =>
  api.call({ method: 'POST', path: `/namespaces/${NS}/${segment}/${name}/rotate`, body, auth, headers })

/** The status a secret gets on a read of its own key: 200 when it authenticates. */
const statusWith = async (api: TestApp, name: string, secret: string) =>
  (await api.call({ path: `/namespaces/${NS}/apikey/${name}`, auth: keyAuth(secret) })).statusCode

/** The record as etcd holds it, and whether each digest entry exists. */
async function stored (api: TestApp, name: string) {
  return JSON.parse(await api.etcd.get(`${api.root}/apikeys/${NS}/${name}`).string() ?? 'null')
}
const digestEntry = (api: TestApp, secret: string) => api.etcd.get(`${api.root}/apikey-digests/${digestSecret(secret)}`).string()

/** Two servers over one etcd and one root, each with its watch cache (the default). */
async function twoServers (t: Test): Promise<[TestApp, TestApp]> {
  const a = await buildApp(t, etcd)
  const b = await buildApp(t, etcd, { root: a.root })
  return [a, b]
}

function checkRotated (t: Test, res: Answer, before: Record<string, any>, what: string): string {
  t.equal(res.statusCode, 200, `${what}: 200`, { body: res.body })
  const { key: secret, ...apiKey } = res.json()
  t.ok(isWellFormedSecret(secret, 'sak_'), `${what}: a new secret in the form of a create's`)
  t.match(res.headers.etag, /^"[0-9]+"$/, `${what}: an ETag`)
  const { rotated_at: rotatedAt, ...rest } = apiKey
  t.ok(Number.isInteger(rotatedAt) && Math.abs(rotatedAt - Date.now() / 1000) < 60, `${what}: rotated_at, Unix seconds, now`)
  const { rotated_at: _previous, ...unrotated } = before
  t.same(rest, unrotated, `${what}: the key otherwise as it was`)
  return secret
}

t.test('without grace: the old secret is refused at once on both servers, the new one works on both', async t => {
  const [a, b] = await twoServers(t)
  const key = await a.createKey(NS, { username: 'bob', metadata: { labels: { team: 'ops' } } })
  t.equal(await statusWith(b, key.name, key.secret), 200, 'the old secret works on b before')

  const res = await rotate(a, key.name)
  const secret = checkRotated(t, res, key.resource, 'rotate through a')
  t.not(secret, key.secret)
  for (const [server, api] of [['a', a], ['b', b]] as const) {
    t.equal(await statusWith(api, key.name, key.secret), 401, `${server} refuses the old secret at once`)
    t.equal(await statusWith(api, key.name, secret), 200, `${server} takes the new one`)
  }
  const record = await stored(a, key.name)
  t.equal(record.key_sha256, digestSecret(secret), 'etcd: the record names the new digest')
  t.notOk('previous_sha256' in record || 'previous_until' in record, 'and no previous digest')
  t.equal(await digestEntry(a, key.secret), null, 'the old digest entry is gone')
  t.equal(await digestEntry(a, secret), `${NS}/${key.name}`, 'the new one points at the key')
  const read = (await b.call({ path: `/namespaces/${NS}/apikey/${key.name}` })).json()
  t.same(read, { ...key.resource, rotated_at: res.json().rotated_at }, 'GET shows rotated_at, and nothing of the digests')
  t.equal((await b.call({ path: `/namespaces/${NS}/apikey/${key.name}` })).headers.etag, res.headers.etag, 'the ETag answered is the key\'s')
})

t.test('with a grace of 3 s: both work on both servers, the old one is refused from its last second on, its entry leaves etcd', async t => {
  const [a, b] = await twoServers(t)
  const key = await a.createKey(NS)
  const started = Math.floor(Date.now() / 1000)
  const res = await rotate(b, key.name, { body: { grace_seconds: 3 } })
  const secret = checkRotated(t, res, key.resource, 'rotate through b, grace 3')
  const record = await stored(a, key.name)
  t.equal(record.previous_sha256, digestSecret(key.secret), 'etcd: the record keeps the old digest')
  t.ok(record.previous_until >= started + 3 && record.previous_until <= Math.floor(Date.now() / 1000) + 3, `until the second 3 s after the rotation (${record.previous_until})`)
  t.equal(await digestEntry(a, key.secret), `${NS}/${key.name}`, 'and its entry is still there')
  const { kvs: [entry] } = await a.etcd.get(`${a.root}/apikey-digests/${digestSecret(key.secret)}`).exec()
  const { TTL } = await a.etcd.leaseClient.leaseTimeToLive({ ID: entry.lease, keys: false })
  t.ok(Number(TTL) > 0 && Number(TTL) <= 3, `on a lease of the grace (${TTL} s left)`)

  for (const [server, api] of [['a', a], ['b', b]] as const) {
    t.equal(await statusWith(api, key.name, key.secret), 200, `${server}: the old secret works during the grace`)
    t.equal(await statusWith(api, key.name, secret), 200, `${server}: the new one too`)
  }
  t.equal((await a.call({ path: `/namespaces/${NS}/apikey/${key.name}` })).json().previous_until, undefined, 'GET never shows the grace\'s fields')

  // From the second previous_until on, however late etcd's lease is.
  await waitFor(() => Date.now() / 1000 >= record.previous_until, { what: 'the end of the grace', timeout: 10_000, interval: 50 })
  for (const [server, api] of [['a', a], ['b', b]] as const) {
    t.equal(await statusWith(api, key.name, key.secret), 401, `${server}: the old secret is refused once the grace is over`)
    t.equal(await statusWith(api, key.name, secret), 200, `${server}: the new one still works`)
  }
  await waitFor(async () => await digestEntry(a, key.secret) === null, { what: 'etcd to remove the old digest entry', timeout: 15_000 })
  t.pass('the old digest entry left etcd by itself (its lease)')
  t.equal(await digestEntry(a, secret), `${NS}/${key.name}`, 'the new one stays')
})

t.test('a rotation in a grace ends the earlier grace; PATCH and DELETE keep the digests right', async t => {
  const api = await buildApp(t, etcd)
  const key = await api.createKey(NS, { expires_at: Math.floor(Date.now() / 1000) + 3600 })
  const second = (await rotate(api, key.name, { body: { grace_seconds: 600 } })).json().key
  const third = (await rotate(api, key.name, { body: { grace_seconds: 600 } })).json().key
  t.equal(await statusWith(api, key.name, key.secret), 401, 'the first secret ends with the second rotation (one previous secret at a time)')
  t.equal(await digestEntry(api, key.secret), null, 'and its entry is gone')
  t.equal(await statusWith(api, key.name, second), 200, 'the second is in its grace')
  t.equal(await statusWith(api, key.name, third), 200, 'the third is the key\'s')

  const patched = await api.call({ method: 'PATCH', path: `/namespaces/${NS}/apikey/${key.name}`, body: { metadata: { labels: { a: 'b' } }, expires_at: Math.floor(Date.now() / 1000) + 7200 } })
  t.equal(patched.statusCode, 200, 'a PATCH that moves the expiry (a new lease) during the grace')
  t.equal(await statusWith(api, key.name, second), 200, 'keeps the old secret in its grace')
  t.equal(await statusWith(api, key.name, third), 200, 'and the new one')
  checkError(t, await api.call({ method: 'PATCH', path: `/namespaces/${NS}/apikey/${key.name}`, body: { rotated_at: 1 } }), 400, 1, 'a PATCH of rotated_at')
  t.match((await api.call({ method: 'PATCH', path: `/namespaces/${NS}/apikey/${key.name}`, body: { rotated_at: 1 } })).json().message, /"rotated_at" is immutable/)

  t.equal((await api.call({ method: 'DELETE', path: `/namespaces/${NS}/apikey/${key.name}` })).statusCode, 204)
  const left = Object.keys(await api.snapshot()).filter(k => !k.includes('/apikey-fences/'))
  t.same(left, [], 'DELETE took the record and both digest entries')
  t.equal(await statusWith(api, key.name, second), 401, 'neither secret works')
})

t.test('racing a PATCH: with the same If-Match one of them is a 412; without, both apply', async t => {
  const api = await buildApp(t, etcd)
  const key = await api.createKey(NS)
  const etag = String((await api.call({ path: `/namespaces/${NS}/apikey/${key.name}` })).headers.etag)
  const patch = (name: string, headers: Record<string, string>) => api.call({
    method: 'PATCH', path: `/namespaces/${NS}/apikey/${name}`, body: { metadata: { labels: { patched: 'yes' } } }, headers
  })
  const conditional = await Promise.all([rotate(api, key.name, { headers: { 'if-match': etag } }), patch(key.name, { 'if-match': etag })])
  t.same(conditional.map(res => res.statusCode).sort(), [200, 412], 'with If-Match: one applies, the other is a 412')
  checkError(t, conditional.find(res => res.statusCode === 412) as Answer, 412, 7, 'the loser')

  const other = await api.createKey(NS)
  const [rotation, patching] = await Promise.all([rotate(api, other.name), patch(other.name, {})])
  t.equal(rotation.statusCode, 200, 'without If-Match the rotation applies')
  t.equal(patching.statusCode, 200, 'and so does the PATCH')
  const record = await stored(api, other.name)
  t.same(record.metadata.labels, { patched: 'yes' }, 'the key ends with the patch')
  t.equal(record.key_sha256, digestSecret(rotation.json().key), 'and with the new digest')
  t.equal(await statusWith(api, other.name, rotation.json().key), 200, 'the new secret works')
  t.equal(await statusWith(api, other.name, other.secret), 401, 'the old one does not')
  const otherEtag = String((await api.call({ path: `/namespaces/${NS}/apikey/${other.name}` })).headers.etag)
  t.equal((await api.call({ method: 'PATCH', path: `/namespaces/${NS}/apikey/${other.name}`, body: { metadata: { labels: { again: 'yes' } } } })).statusCode, 200, 'another change')
  checkError(t, await rotate(api, other.name, { headers: { 'if-match': otherEtag } }), 412, 7, 'a stale If-Match')
  t.equal((await rotate(api, other.name, { headers: { 'if-match': '*' } })).statusCode, 200, 'If-Match: * rotates any existing key')
})

t.test('a key rotates itself; a non-admin cannot see another user\'s key to rotate it', async t => {
  const api = await buildApp(t, etcd)
  const bob = await api.createKey(NS, { username: 'bob' })
  const alice = await api.createKey(NS, { username: 'alice' })
  const res = await rotate(api, bob.name, { auth: keyAuth(bob.secret) })
  const secret = checkRotated(t, res, bob.resource, 'bob\'s key rotating itself')
  t.equal(await statusWith(api, bob.name, bob.secret), 401, 'afterwards the old secret is refused')
  t.equal(await statusWith(api, bob.name, secret), 200, 'and the new one works')

  const before = await api.snapshot()
  const other = await rotate(api, alice.name, { auth: keyAuth(secret) })
  checkError(t, other, 404, 2, 'bob rotating alice\'s key')
  t.equal(other.json().message, `apikey ${alice.name} not found`, 'as if it did not exist')
  checkError(t, await rotate(api, 'no-such-key'), 404, 2, 'an unknown key')
  t.same(await api.snapshot(), before, 'nothing changed in etcd')
  t.equal(await statusWith(api, alice.name, alice.secret), 200, 'alice\'s secret still works')

  const audits = api.logs().filter(line => line.audit?.action === 'rotate')
  t.equal(audits.length, 1, 'one audit line for the one rotation')
  t.match(audits[0].audit, { by: 'bob', admin: false, namespace: NS, name: bob.name, username: 'bob', grace_seconds: 0 }, 'who, which key, what grace')
})

t.test('a host\'s authorize is asked with action rotate; a refusal is a 403', async t => {
  const asked: string[] = []
  const api = await buildApp(t, etcd, {
    authorize: ({ caller, action }) => { asked.push(action); return caller.admin && action !== 'rotate' }
  })
  const key = await api.createKey(NS)
  const before = await api.snapshot()
  asked.length = 0
  checkError(t, await rotate(api, key.name), 403, 4, 'the host refuses rotations')
  t.same(asked, ['get', 'rotate'], 'asked whether the caller may see the key, then whether it may rotate it')
  t.same(await api.snapshot(), before, 'nothing changed')
})

t.test('no rotation revives a key ended by revoke-all or by its expiry', async t => {
  const api = await buildApp(t, etcd)
  const key = await api.createKey(NS, { username: 'carol' })
  t.same((await api.call({ method: 'DELETE', path: '/apikeys?username=carol' })).json(), { username: 'carol', deleted: 1 })
  checkError(t, await rotate(api, key.name), 404, 2, 'rotating a revoked key')
  const records = Object.keys(await api.snapshot()).filter(k => k.startsWith(`${api.root}/apikeys/`) || k.startsWith(`${api.root}/apikey-digests/`))
  t.same(records, [], 'no record and no digest entry came back')

  const expiresAt = Math.floor(Date.now() / 1000) + 2
  const short = await api.createKey(NS, { expires_at: expiresAt })
  await waitFor(() => Date.now() / 1000 >= expiresAt, { what: 'the key\'s expiry', timeout: 5000, interval: 50 })
  checkError(t, await rotate(api, short.name), 404, 2, 'rotating an expired key, its lease maybe not yet ended')
  const record = await stored(api, short.name)
  t.ok(record === null || record.key_sha256 === digestSecret(short.secret), 'its record, if etcd has not yet removed it, was not rotated')
})

t.test('the lifetime rule: a short-lived key rotates only keys that end no later than itself', async t => {
  const api = await buildApp(t, etcd)
  const end = Math.floor(Date.now() / 1000) + 3600
  const short = await api.createKey(NS, { username: 'dan', expires_at: end })
  const forever = await api.createKey(NS, { username: 'dan' })
  const later = await api.createKey(NS, { username: 'dan', expires_at: end + 60 })
  const sooner = await api.createKey(NS, { username: 'dan', expires_at: end - 60 })
  const before = await api.snapshot()
  const refused = await rotate(api, forever.name, { auth: keyAuth(short.secret) })
  checkError(t, refused, 403, 4, 'a key that never expires')
  t.match(refused.json().message, /never expires/, 'the message says why')
  checkError(t, await rotate(api, later.name, { auth: keyAuth(short.secret) }), 403, 4, 'a key that expires later')
  t.same(await api.snapshot(), before, 'nothing changed')
  const res = await rotate(api, sooner.name, { auth: keyAuth(short.secret) })
  t.equal(res.statusCode, 200, 'a key that expires sooner is rotated')
  t.equal(res.json().expires_at, end - 60, 'and keeps its expiry')
  t.equal((await rotate(api, short.name, { auth: keyAuth(short.secret) })).statusCode, 200, 'and the key itself')
})

t.test('Idempotency-Key: a retry answers the same secret; a later rotation ends the replay', async t => {
  const api = await buildApp(t, etcd)
  const key = await api.createKey(NS, { username: 'erin' })
  const idempotencyKey = randomUUID()
  api.leakWatch?.watchFor(idempotencyKey, 'the Idempotency-Key')
  const headers = { 'idempotency-key': idempotencyKey }
  const first = await rotate(api, key.name, { headers, body: { grace_seconds: 60 } })
  const secret = checkRotated(t, first, key.resource, 'the first rotation')
  const retry = await rotate(api, key.name, { headers, body: { grace_seconds: 60 } })
  t.equal(retry.statusCode, 200, 'the retry: 200')
  t.equal(retry.json().key, secret, 'with the same secret')
  t.equal(retry.headers['idempotent-replayed'], 'true', 'marked as replayed')
  t.equal(retry.headers.etag, first.headers.etag, 'the key was not rotated again')
  t.equal(await statusWith(api, key.name, key.secret), 200, 'the original secret is still in its grace (no second rotation ended it)')
  const record = await stored(api, key.name)
  t.equal(record.rotation_entries.length, 1, 'the record tracks the rotation\'s entry')
  const entryKey = `${api.root}/apikey-idempotency/${record.rotation_entries[0]}`
  t.ok(await api.etcd.get(entryKey).string(), 'the entry is in etcd')
  t.notOk((await api.etcd.get(entryKey).string())?.includes(secret), 'sealed: the secret is not in it as such')

  checkError(t, await rotate(api, key.name, { headers, body: { grace_seconds: 5 } }), 400, 1, 'the same Idempotency-Key with another body')
  checkError(t, await api.call({ method: 'POST', path: `/namespaces/${NS}/apikey`, body: {}, headers }), 400, 1, 'the same Idempotency-Key on a create')

  t.equal((await rotate(api, key.name)).statusCode, 200, 'another rotation')
  checkError(t, await rotate(api, key.name, { headers, body: { grace_seconds: 60 } }), 409, 3, 'the first one\'s retry now: its secret no longer works')

  t.equal((await api.call({ method: 'DELETE', path: `/namespaces/${NS}/apikey/${key.name}` })).statusCode, 204)
  t.equal(await api.etcd.get(entryKey).string(), null, 'the rotation\'s entry went with the key')
})

t.test('bad bodies and queries are a 400 (or 415) that names the problem and changes nothing', async t => {
  const api = await buildApp(t, etcd)
  const key = await api.createKey(NS)
  const before = await api.snapshot()
  const cases: Array<[unknown, RegExp]> = [
    [{ grace_seconds: -1 }, /"grace_seconds"/],
    [{ grace_seconds: 604801 }, /"grace_seconds"/],
    [{ grace_seconds: 1.5 }, /"grace_seconds"/],
    [{ grace_seconds: '3' }, /"grace_seconds"/],
    [{ grace_seconds: null }, /"grace_seconds"/],
    [{ grace: 3 }, /unknown field "grace"/],
    [{ key: 'sak_x' }, /field "key" is not accepted/],
    [[], /body must be a JSON object/],
    ['{"grace_seconds": 3', /not valid JSON/]
  ]
  for (const [body, message] of cases) {
    const res = await rotate(api, key.name, { body, headers: { 'content-type': 'application/json' } })
    checkError(t, res, 400, 1, JSON.stringify(body))
    t.match(res.json().message, message, `${JSON.stringify(body)}: ${res.json().message}`)
  }
  checkError(t, await api.call({ method: 'POST', path: `/namespaces/${NS}/apikey/${key.name}/rotate?grace_seconds=3` }), 400, 1, 'a query parameter')
  checkError(t, await rotate(api, key.name, { body: 'grace=3', headers: { 'content-type': 'text/plain' } }), 415, 1, 'a body that is not JSON')
  checkError(t, await rotate(api, key.name, { body: '{}', headers: { 'content-type': 'application/merge-patch+json' } }), 415, 1, 'a merge patch')
  checkError(t, await rotate(api, key.name, { auth: null }), 401, 5, 'no credentials')
  checkError(t, await api.call({ path: `/namespaces/${NS}/apikey/${key.name}/rotate` }), 405, 1, 'GET of the rotate path')
  t.same(await api.snapshot(), before, 'none of these changed anything in etcd')

  const empty = await api.call({ method: 'POST', path: `/namespaces/${NS}/apikey/${key.name}/rotate`, body: '', headers: { 'content-type': 'application/json' } })
  t.equal(empty.statusCode, 200, 'an empty body is {}: grace 0')
  t.equal((await rotate(api, key.name, { body: { grace_seconds: 604800 }, segment: 'apikeys' })).statusCode, 200, 'the apikeys alias, and the longest grace')
})

t.test('rotations count against the write limit', async t => {
  const api = await buildApp(t, etcd, { writeLimit: { perSecond: 0.1, burst: 3 } })
  const key = await api.createKey(NS, { username: 'fay' })
  let secret = key.secret
  for (let i = 0; i < 3; i++) {
    const res = await rotate(api, key.name, { auth: keyAuth(secret) })
    t.equal(res.statusCode, 200, `rotation ${i + 1} within the burst`)
    secret = res.json().key
  }
  const before = await api.snapshot()
  const refused = await rotate(api, key.name, { auth: keyAuth(secret) })
  checkError(t, refused, 429, 9, 'the fourth')
  t.match(refused.headers['retry-after'], /^[0-9]+$/, 'with Retry-After')
  t.same(await api.snapshot(), before, 'and nothing changed')
  t.equal((await rotate(api, key.name)).statusCode, 200, 'an admin is not limited')
})

t.test('check-consistency: a grace\'s old digest entry is no orphan; a stale one is reported and repaired', async t => {
  const api = await buildApp(t, etcd)
  const inGrace = await api.createKey(NS)
  await rotate(api, inGrace.name, { body: { grace_seconds: 600 } })
  const clean = await checkConsistency(api.etcd, api.root)
  t.same(clean.orphans, [], 'during a grace: nothing to report')
  t.equal(clean.digests, 2, 'with both digest entries of the key counted')

  // The old digest entry put back by hand after a rotation without grace: its record names neither digest.
  const plain = await api.createKey(NS)
  await rotate(api, plain.name)
  await api.etcd.put(`${api.root}/apikey-digests/${digestSecret(plain.secret)}`).value(`${NS}/${plain.name}`)
  // A grace long over whose entry is still there (a lease lost, an edit by hand).
  const stale = await api.createKey(NS)
  await rotate(api, stale.name, { body: { grace_seconds: 600 } })
  const record = await stored(api, stale.name)
  await api.etcd.put(`${api.root}/apikeys/${NS}/${stale.name}`).value(JSON.stringify({ ...record, previous_until: record.previous_until - 3600 }))
  t.equal(await statusWith(api, stale.name, stale.secret), 401, 'that old secret is refused (its grace is over)')

  const report = await checkConsistency(api.etcd, api.root)
  t.same(report.orphans.map(o => [o.kind, o.target]).sort(), [
    ['digest-of-other-record', `${NS}/${plain.name}`],
    ['digest-past-grace', `${NS}/${stale.name}`]
  ].sort(), 'both reported, each for what it is')
  const repairs = await repairOrphans(api.etcd, report)
  t.same(repairs.map(r => r.outcome), ['repaired', 'repaired'], 'and repaired')
  t.equal(await digestEntry(api, plain.secret), null, 'the stale entries are gone')
  t.same((await checkConsistency(api.etcd, api.root)).orphans, [], 'then clean')
})

t.test('a key that ends before its grace takes the old digest entry with it (one lease)', async t => {
  const api = await buildApp(t, etcd)
  const key = await api.createKey(NS, { expires_at: Math.floor(Date.now() / 1000) + 60 })
  const res = await rotate(api, key.name, { body: { grace_seconds: 3600 } })
  t.equal(res.statusCode, 200)
  const leaseOf = async (etcdKey: string) => String((await api.etcd.get(etcdKey).exec()).kvs[0]?.lease)
  const recordLease = await leaseOf(`${api.root}/apikeys/${NS}/${key.name}`)
  t.not(recordLease, '0', 'the record is on the key\'s lease')
  t.equal(await leaseOf(`${api.root}/apikey-digests/${digestSecret(key.secret)}`), recordLease, 'the old digest entry too')
  t.equal(await leaseOf(`${api.root}/apikey-digests/${digestSecret(res.json().key)}`), recordLease, 'and the new one')
})
