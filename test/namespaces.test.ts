// Namespaces are apart (SPEC "Storage in etcd": every range prefix ends in `/`): `dev` never sees
// `dev2`, nor `dev0`, `dev.x` or `de`, which sit right beside it in etcd's byte order, in a list
// (with or without limit), a get, a patch or a delete.
import t, { type Test } from 'tap'
import { sharedEtcd } from './helpers/etcd.js'
import { buildApp, keyAuth, type Answer, type CreatedKey, type TestApp } from './helpers/app.js'
import { checkError } from './helpers/assert.js'
import { byteOrder, listPage, namesOf, walk, type Key } from './helpers/list.js'

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

/** `dev2` and `dev0` sort after `dev/`'s range, `dev.x` before it, `de` is its prefix. */
const NAMESPACES = ['dev', 'dev2', 'dev0', 'dev.x', 'de']
/** [through, owner]: a key of `owner` addressed through the namespace `through`. */
const WRONG_WAYS: Array<[string, string]> = [['dev', 'dev2'], ['dev2', 'dev'], ['dev', 'dev0'], ['dev', 'dev.x'], ['dev', 'de'], ['de', 'dev']]

const sortedNames = (keys: CreatedKey[]) => keys.map(k => k.name).sort(byteOrder)
const itemPath = (ns: string, name: string) => `/namespaces/${ns}/apikey/${name}`

/** Three keys in each namespace, made through the API. */
async function populate (app: TestApp): Promise<Record<string, CreatedKey[]>> {
  const made = await Promise.all(NAMESPACES.map(ns => Promise.all([1, 2, 3].map(() => app.createKey(ns)))))
  return Object.fromEntries(NAMESPACES.map((ns, i) => [ns, made[i]]))
}

/** Every key of a namespace: one GET, or a walk of pages of `limit`. */
async function listAll (app: TestApp, ns: string, limit?: number): Promise<Key[]> {
  if (limit !== undefined) return (await walk(app, ns, limit)).items
  const { res } = await listPage(app, ns)
  if (res.statusCode !== 200) throw new Error(`list ${ns}: ${res.statusCode} ${res.body}`)
  return res.json()
}

/** The raw etcd record of a key and its revision, read with the test's own client. */
async function rawRecord (app: TestApp, ns: string, name: string) {
  const res = await app.etcd.kv.range({ key: Buffer.from(`${app.root}/apikeys/${ns}/${name}`) })
  const kv = res.kvs[0]
  return kv && { value: kv.value.toString('utf8'), modRevision: kv.mod_revision }
}

/** A 404 in Sensu's shape, saying what was not found. */
function assertNotFound (t: Test, res: Answer, what: string) {
  checkError(t, res, 404, 2, what)
  t.match(res.json().message, /not found/, `${what}: says not found`)
}

t.test('each namespace lists only its own keys, with and without limit', async t => {
  const app = await buildApp(t, etcd)
  const keys = await populate(app)
  for (const ns of NAMESPACES) {
    const own = sortedNames(keys[ns])
    t.strictSame(namesOf(await listAll(app, ns)), own, `${ns}, no limit: its own three keys`)
    t.strictSame(namesOf(await listAll(app, ns, 1)), own, `${ns}, limit=1, every page: its own three keys`)
    t.strictSame(namesOf(await listAll(app, ns, 100)), own, `${ns}, limit=100: its own three keys`)
  }
})

t.test('a key of another namespace cannot be read through this one', async t => {
  const app = await buildApp(t, etcd)
  const keys = await populate(app)
  for (const [through, owner] of WRONG_WAYS) {
    const key = keys[owner][0]
    for (const segment of ['apikey', 'apikeys']) {
      const res = await app.call({ path: `/namespaces/${through}/${segment}/${key.name}` })
      assertNotFound(t, res, `GET ${owner}'s key through ${through}/${segment}`)
    }
    const res = await app.call({ path: itemPath(owner, key.name) })
    t.equal(res.statusCode, 200, `through ${owner} it is there`)
    t.equal(res.json().metadata.namespace, owner)
  }
})

t.test('a key of another namespace cannot be patched through this one', async t => {
  const app = await buildApp(t, etcd)
  const keys = await populate(app)
  for (const [through, owner] of WRONG_WAYS) {
    const key = keys[owner][0]
    const before = await app.snapshot()
    const record = await rawRecord(app, owner, key.name)
    for (const ifMatch of [undefined, '*']) {
      const res = await app.call({
        method: 'PATCH',
        path: itemPath(through, key.name),
        body: { metadata: { labels: { moved: 'yes' } }, username: 'mallory' },
        headers: { 'content-type': 'application/merge-patch+json', ...(ifMatch !== undefined && { 'if-match': ifMatch }) }
      })
      assertNotFound(t, res, `PATCH ${owner}'s key through ${through}, If-Match ${ifMatch}`)
    }
    t.strictSame(await rawRecord(app, owner, key.name), record, 'its record is unchanged, same revision')
    t.strictSame(await app.snapshot(), before, 'nothing under the root changed')
    const res = await app.call({ path: itemPath(owner, key.name) })
    t.strictSame(res.json(), key.resource, `through ${owner}, the key as created`)
  }
  // The same patch through the right namespace does apply: the 404s above are about the namespace.
  const key = keys.dev2[0]
  const res = await app.call({ method: 'PATCH', path: itemPath('dev2', key.name), body: { metadata: { labels: { moved: 'yes' } } } })
  t.equal(res.statusCode, 200, 'PATCH through its own namespace: 200')
  t.match(JSON.parse((await rawRecord(app, 'dev2', key.name))?.value ?? 'null'), { metadata: { labels: { moved: 'yes' } } }, 'and etcd holds the change')
})

t.test('a key of another namespace cannot be deleted through this one', async t => {
  const app = await buildApp(t, etcd)
  const keys = await populate(app)
  for (const [through, owner] of WRONG_WAYS) {
    const key = keys[owner][0]
    const before = await app.snapshot()
    assertNotFound(t, await app.call({ method: 'DELETE', path: itemPath(through, key.name) }), `DELETE ${owner}'s key through ${through}`)
    t.strictSame(await app.snapshot(), before, 'the key and its digest entry are still in etcd')
    const res = await app.call({ path: itemPath(owner, key.name), auth: keyAuth(key.secret) })
    t.equal(res.statusCode, 200, `its secret still authenticates and it reads through ${owner}`)
  }
  // The same delete through the right namespace does remove it.
  const key = keys.dev2[0]
  t.equal((await app.call({ method: 'DELETE', path: itemPath('dev2', key.name) })).statusCode, 204, 'DELETE through its own namespace: 204')
  t.equal(await rawRecord(app, 'dev2', key.name), undefined, 'and the record is gone from etcd')
  t.strictSame(namesOf(await listAll(app, 'dev')), sortedNames(keys.dev), 'dev still holds its own three keys')
})
