// What etcd holds: the JSON record and its digest index entry, written and deleted together, and
// never the secret.
import t from 'tap'
import { createHash } from 'node:crypto'
import { sharedEtcd } from './helpers/etcd.js'
import { buildApp, keyAuth } from './helpers/app.js'

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

/** Every form in which the secret, or its random part, could have been written down. */
function secretForms (secret: string): string[] {
  const random = secret.slice('sak_'.length, 'sak_'.length + 43)
  const bytes = Buffer.from(random, 'base64url')
  return [secret, random, bytes.toString('hex'), bytes.toString('base64'), bytes.toString('base64').replace(/=+$/, ''), bytes.toString('base64url')]
}

t.test('a create writes the record and its digest entry; a delete removes both', async t => {
  const api = await buildApp(t, etcd)
  const { name, secret, resource } = await api.createKey('default', { metadata: { labels: { team: 'ops' } }, url: 'https://x' })
  const digest = createHash('sha256').update(secret).digest('hex')
  const recordKey = `${api.root}/apikeys/default/${name}`
  const digestKey = `${api.root}/apikey-digests/${digest}`

  const stored = await api.snapshot()
  t.same(Object.keys(stored).sort(), [recordKey, digestKey].sort(), 'exactly the record and the digest entry')
  const record = JSON.parse(stored[recordKey])
  t.same(record, { ...resource, key_sha256: digest }, 'the record is the resource, as JSON, with the digest of its secret')
  t.equal(stored[digestKey], `default/${name}`, 'the digest entry points at <namespace>/<name>')

  const got = await api.call({ path: `/namespaces/default/apikey/${name}` })
  const listed = await api.call({ path: '/namespaces/default/apikey' })
  for (const res of [got, listed]) t.notOk(res.body.includes(digest), 'no GET or list shows the digest')

  t.equal((await api.call({ method: 'DELETE', path: `/namespaces/default/apikey/${name}` })).statusCode, 204)
  t.same(await api.snapshot(), {}, 'neither the record nor the digest entry is left')
})

t.test('the secret is nowhere in etcd, in any encoding', async t => {
  const api = await buildApp(t, etcd)
  const secrets = await Promise.all([1, 2, 3].map(async () => (await api.createKey('default')).secret))
  // Also a patched key and a key used to authenticate: neither path may write the secret down.
  const used = await api.createKey('default', { username: 'bob' })
  t.equal((await api.call({ path: '/namespaces/default/apikey', auth: keyAuth(used.secret) })).statusCode, 200)
  t.equal((await api.call({ method: 'PATCH', path: `/namespaces/default/apikey/${used.name}`, body: { url: 'u' } })).statusCode, 200)
  secrets.push(used.secret)

  // In pages: an etcd shared with other runs (ETCD_ENDPOINTS) may hold more than one gRPC answer carries.
  const pairs: Array<[string, string]> = []
  for (let start = Buffer.from([0]); ;) {
    const page = await api.etcd.kv.range({ key: start, range_end: Buffer.from([0]), limit: 500 })
    for (const kv of page.kvs) pairs.push([kv.key.toString('utf8'), kv.value.toString('utf8')])
    if (!page.more) break
    start = Buffer.concat([page.kvs[page.kvs.length - 1].key, Buffer.from([0])])
  }
  t.ok(pairs.length >= 8, `scanned ${pairs.length} keys of the whole etcd`)
  const needles = secrets.flatMap(secretForms)
  for (const needle of needles) {
    const found = pairs.filter(([key, value]) => key.includes(needle) || value.includes(needle))
    t.same(found, [], `not in etcd: ${needle.slice(0, 6)}…`)
  }
  // The scan itself can fail: the digests it must find are there.
  const digests = secrets.map(secret => createHash('sha256').update(secret).digest('hex'))
  t.ok(digests.every(digest => pairs.some(([key]) => key.endsWith(digest))), 'the scan does find the digests')
})
