// Expiring keys: expires_at (Unix seconds) on POST and PATCH. From that second on the key no longer
// authenticates (checked at verify time), and etcd removes the record and its digest entry by
// itself through a lease, with no sweeper. A key without expires_at has no lease: it never expires.
import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { dedicatedEtcd, sharedEtcd } from './helpers/etcd.js'
import { buildApp, keyAuth, type TestApp } from './helpers/app.js'
import { checkError } from './helpers/assert.js'
import { waitFor } from './helpers/wait.js'

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

const now = () => Math.floor(Date.now() / 1000)

/** The lease ID of an etcd key ('0': none), or null when the key is gone. */
async function leaseOf (api: TestApp, key: string): Promise<string | null> {
  const res = await api.etcd.kv.range({ key: Buffer.from(key) })
  return res.kvs[0] === undefined ? null : String(res.kvs[0].lease)
}

async function entriesOf (api: TestApp, namespace: string, name: string) {
  const record = `${api.root}/apikeys/${namespace}/${name}`
  const stored = await api.etcd.get(record).string()
  const digest = stored === null ? undefined : `${api.root}/apikey-digests/${JSON.parse(stored).key_sha256}`
  return { record, digest }
}

t.test('an expiring key authenticates until expires_at, then never, and etcd removes it', async t => {
  const api = await buildApp(t, etcd)
  const expiresAt = now() + 3
  const key = await api.createKey('default', { username: 'bob', expires_at: expiresAt })
  t.equal(key.resource.expires_at, expiresAt, 'expires_at is part of the key')
  t.equal((await api.call({ path: `/namespaces/default/apikey/${key.name}` })).json().expires_at, expiresAt, 'and GET shows it')
  const { record, digest } = await entriesOf(api, 'default', key.name)
  const lease = await leaseOf(api, record)
  t.not(lease, '0', 'the record is on a lease')
  t.equal(await leaseOf(api, digest as string), lease, 'and its digest entry on the same one')

  const asBob = keyAuth(key.secret)
  t.equal((await api.call({ path: '/namespaces/default/apikey', auth: asBob })).statusCode, 200, 'before expires_at: it authenticates')
  // Refused from the very second of expires_at on, whatever etcd's lease is doing.
  let lastAccepted = 0
  let firstRefused = 0
  while (firstRefused === 0 && Date.now() / 1000 < expiresAt + 5) {
    const sent = Date.now() / 1000
    const status = (await api.call({ path: '/namespaces/default/apikey', auth: asBob })).statusCode
    if (status === 200) lastAccepted = sent
    else firstRefused = sent
    await sleep(50)
  }
  t.ok(lastAccepted < expiresAt, `never accepted at or after expires_at (last accepted ${(expiresAt - lastAccepted).toFixed(2)} s before)`)
  t.ok(firstRefused >= expiresAt - 0.1 && firstRefused < expiresAt + 1, 'refused from expires_at on, to the second')
  t.equal(await api.app.apiKeys.verify(key.secret), null, 'verify says no')

  // etcd removes both by itself (it checks leases every half second; allow a few seconds more).
  const gone = await waitFor(async () => await leaseOf(api, record) === null && await leaseOf(api, digest as string) === null,
    { timeout: 10_000, interval: 250, what: 'etcd to remove the record and its digest entry through the lease' })
  t.ok(gone, 'etcd removed the record and its digest entry through the lease')
})

t.test('expires_at must lie in the future; a key without one has no lease', async t => {
  const api = await buildApp(t, etcd)
  const before = await api.snapshot()
  for (const [title, value] of [['now', now()], ['the past', now() - 60], ['not an integer', now() + 10.5], ['a string', String(now() + 10)], ['beyond etcd\'s longest lease', now() + 9_100_000_000]] as const) {
    const res = await api.call({ method: 'POST', path: '/namespaces/default/apikey', body: { expires_at: value } })
    checkError(t, res, 400, 1, title)
    t.match(res.json().message, /expires_at/)
  }
  t.same(await api.snapshot(), before, 'nothing written')

  const forever = await api.createKey('default')
  const { record, digest } = await entriesOf(api, 'default', forever.name)
  t.equal(await leaseOf(api, record), '0', 'no expires_at: the record has no lease')
  t.equal(await leaseOf(api, digest as string), '0', 'nor its digest entry')
  t.notOk('expires_at' in forever.resource)
})

t.test('PATCH sets, keeps, moves and removes the expiry, record and digest entry together', async t => {
  const api = await buildApp(t, etcd)
  const key = await api.createKey('default')
  const path = `/namespaces/default/apikey/${key.name}`
  const { record, digest } = await entriesOf(api, 'default', key.name)
  const leases = async () => [await leaseOf(api, record), await leaseOf(api, digest as string)]

  let res = await api.call({ method: 'PATCH', path, body: { expires_at: now() + 3600 } })
  t.equal(res.statusCode, 200)
  const [first, firstOfDigest] = await leases()
  t.not(first, '0', 'setting expires_at puts the record on a lease')
  t.equal(firstOfDigest, first, 'and the digest entry on the same')

  res = await api.call({ method: 'PATCH', path, body: { metadata: { labels: { a: 'b' } } } })
  t.equal(res.statusCode, 200)
  t.same(await leases(), [first, first], 'a patch of another field keeps the lease')

  res = await api.call({ method: 'PATCH', path, body: { expires_at: now() + 7200 } })
  const [second, secondOfDigest] = await leases()
  t.not(second, first, 'a new expiry moves to a new lease')
  t.equal(secondOfDigest, second, 'the digest entry too')

  checkError(t, await api.call({ method: 'PATCH', path, body: { expires_at: now() - 1 } }), 400, 1, 'an expiry in the past')
  t.same(await leases(), [second, second], 'leaves the lease as it was')

  res = await api.call({ method: 'PATCH', path, body: { expires_at: null } })
  t.equal(res.statusCode, 200)
  t.notOk('expires_at' in res.json(), 'null removes expires_at')
  t.same(await leases(), ['0', '0'], 'and the lease: the key never expires')
  t.equal((await api.call({ path: '/namespaces/default/apikey', auth: keyAuth(key.secret) })).statusCode, 200, 'and still authenticates')
})

t.test('moved and deleted keys give their leases back', async t => {
  // Its own etcd: the count of leases is etcd-wide.
  const own = await dedicatedEtcd()
  t.teardown(() => own.close())
  const api = await buildApp(t, own)
  const leases = async () => (await api.etcd.leaseClient.leaseLeases({})).leases.length
  const settled = async (want: number) => {
    await waitFor(async () => await leases() === want, { timeout: 10_000, what: () => `etcd to hold ${want} leases` })
    return await leases()
  }
  const baseline = await leases()
  const key = await api.createKey('default', { expires_at: now() + 3600 })
  t.equal(await settled(baseline + 1), baseline + 1, 'an expiring key holds one lease')
  for (let i = 1; i <= 10; i++) {
    t.equal((await api.call({ method: 'PATCH', path: `/namespaces/default/apikey/${key.name}`, body: { expires_at: now() + 3600 + i } })).statusCode, 200)
  }
  t.equal(await settled(baseline + 1), baseline + 1, 'ten new expiries later, still one: each old lease was revoked')
  t.equal((await api.call({ method: 'DELETE', path: `/namespaces/default/apikey/${key.name}` })).statusCode, 204)
  t.equal(await settled(baseline), baseline, 'and none once the key is deleted')
})
