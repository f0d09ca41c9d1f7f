// Group commit (issue 15): creates that arrive together share one etcd transaction, each with its
// own guards and its own outcome; batches stay within etcd's limits; deadlines hold. A batch is one
// etcd revision, so the keys one batch made share their create revision: that is how these tests
// see the batches, on a real etcd shared with other tests.
import t, { type Test } from 'tap'
import { performance } from 'node:perf_hooks'
import { randomUUID } from 'node:crypto'
import { Etcd3 } from 'etcd3'
import { dedicatedEtcd, sharedEtcd } from './helpers/etcd.js'
import { buildApp, uniqueRoot, type Answer, type TestApp } from './helpers/app.js'
import { checkError } from './helpers/assert.js'
import { waitFor } from './helpers/wait.js'
import { ApiKeyStore } from '../lib/store/store.js'
import { MAX_BATCH_BYTES, MAX_TXN_OPS, NOT_SENT } from '../lib/store/group-commit.js'
import { CredentialRevokedError, KeyExistsError } from '../lib/store/errors.js'
import { digestSecret, generateSecret } from '../lib/keys/secrets.js'
import type { ApiKey } from '../lib/keys/schemas.js'

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

const create = (api: TestApp, body: unknown = {}, { namespace = 'default', headers = {} }: { namespace?: string, headers?: Record<string, string> } = {}) =>
  api.call({ method: 'POST', path: `/namespaces/${namespace}/apikey`, body, headers })

/** etcd's records and digest entries under the app's root, with their create revisions. */
async function stored (client: Etcd3, root: string) {
  const of = async (kind: string) => (await client.getAll().prefix(`${root}/${kind}/`).exec()).kvs
  const records = await of('apikeys')
  return { records, digests: await of('apikey-digests'), entries: await of('apikey-idempotency') }
}

/** How many keys each create revision (each batch) made. */
function batchSizes (records: Array<{ create_revision: string }>): number[] {
  const sizes = new Map<string, number>()
  for (const kv of records) sizes.set(kv.create_revision, (sizes.get(kv.create_revision) ?? 0) + 1)
  return [...sizes.values()].sort((a, b) => b - a)
}

function allCreated (t: Test, answers: Answer[]): void {
  const statuses = answers.map(a => a.statusCode)
  t.same(statuses.filter(s => s !== 201), [], `all ${answers.length} creates answered 201`, { bodies: answers.filter(a => a.statusCode !== 201).slice(0, 3).map(a => a.body) })
}

t.test('200 concurrent creates: each made once, readable, in fewer etcd transactions than creates', async t => {
  const api = await buildApp(t, etcd)
  const answers = await Promise.all(Array.from({ length: 200 }, (_, i) => create(api, { metadata: { labels: { n: String(i) } } })))
  allCreated(t, answers)
  const { records, digests } = await stored(api.etcd, api.root)
  t.equal(records.length, 200, 'etcd holds 200 records')
  t.equal(digests.length, 200, 'and 200 digest entries')
  const byName = new Map(records.map(kv => [kv.key.toString().split('/').pop(), kv]))
  for (const answer of answers) {
    const { metadata, key } = answer.json()
    const kv = byName.get(metadata.name)
    if (kv === undefined || JSON.parse(kv.value.toString()).key_sha256 !== digestSecret(key)) {
      t.fail(`the 201 for ${metadata.name} has no record of its secret in etcd`)
      return
    }
  }
  const reads = await Promise.all(answers.map(a => api.call({ path: `/namespaces/default/apikey/${a.json().metadata.name}` })))
  t.same(reads.filter(r => r.statusCode !== 200).length, 0, 'every key is readable')
  t.same(reads.map(r => r.json().metadata.labels.n).sort(), answers.map(a => a.json().metadata.labels.n).sort(), 'each as it was made')
  const sizes = batchSizes(records)
  t.ok(sizes.length < 200, `${sizes.length} etcd transactions made the 200 keys (largest batch ${sizes[0]})`)
  // An admin's create compares 2 keys: etcd takes at most 128 - 2 nested transactions in one.
  t.ok(sizes[0] <= MAX_TXN_OPS - 2, `no batch over etcd's --max-txn-ops: largest ${sizes[0]}`)
  t.ok(sizes.length >= 2, 'so 200 keys took more than one transaction')
})

t.test('large keys are batched by bytes, within etcd\'s request limit', async t => {
  const api = await buildApp(t, etcd)
  // Close to the 64 KiB body limit each: three or four of them per MiB.
  const body = (i: number) => ({ metadata: { labels: { n: String(i), filler: 'x'.repeat(60 * 1024) } } })
  const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => create(api, body(i))))
  allCreated(t, answers)
  const { records } = await stored(api.etcd, api.root)
  t.equal(records.length, 40, 'etcd holds 40 records')
  const sizes = batchSizes(records)
  const perBatch = Math.floor(MAX_BATCH_BYTES / (60 * 1024))
  t.ok(sizes[0] <= perBatch, `no batch over ${MAX_BATCH_BYTES} bytes: largest ${sizes[0]} keys of 60 KiB`)
  t.ok(sizes.length < 40 && sizes[0] > 1, `batched all the same: ${sizes.length} transactions`)
})

t.test('one Idempotency-Key sent by concurrent requests among other creates: one key for it, the others made', async t => {
  const api = await buildApp(t, etcd)
  const idempotencyKey = randomUUID()
  api.leakWatch?.watchFor(idempotencyKey, 'an Idempotency-Key')
  const same = Array.from({ length: 10 }, () => create(api, { username: 'alice' }, { headers: { 'idempotency-key': idempotencyKey } }))
  const others = Array.from({ length: 30 }, (_, i) => create(api, { metadata: { labels: { n: String(i) } } }))
  const [sameAnswers, otherAnswers] = await Promise.all([Promise.all(same), Promise.all(others)])
  allCreated(t, [...sameAnswers, ...otherAnswers])
  t.equal(new Set(sameAnswers.map(a => a.json().metadata.name)).size, 1, 'one key for the Idempotency-Key')
  t.equal(new Set(sameAnswers.map(a => a.json().key)).size, 1, 'and one secret in all its answers')
  const { records, entries } = await stored(api.etcd, api.root)
  t.equal(records.length, 31, 'etcd holds that key and the 30 others')
  t.equal(entries.length, 1, 'and one idempotency entry')
  t.ok(batchSizes(records).length < 31, 'in fewer transactions than keys')
})

/** A key as the strategy makes it, for the store-level tests. */
function newKey (namespace: string, username: string, name = randomUUID()): { apiKey: ApiKey, digest: string } {
  return {
    apiKey: { metadata: { name, namespace, created_by: 'admin' }, username, created_at: Math.floor(Date.now() / 1000) },
    digest: digestSecret(generateSecret('sk_'))
  }
}

t.test('in one batch, a revoked minter\'s creates and a clashing name fail alone', async t => {
  const client = new Etcd3({ hosts: etcd.endpoints })
  const root = uniqueRoot()
  const store = new ApiKeyStore(client, root)
  t.teardown(async () => {
    await client.delete().prefix(`${root}/`)
    await store.close(Date.now() + 5000)
    client.close()
  })
  const deadline = () => Date.now() + 10_000
  const bobKey = newKey('default', 'bob')
  const minterKey = await store.create(bobKey.apiKey, bobKey.digest, deadline())
  // Asked again once its guard fails, the revoked key no longer authenticates (the plugin's check: test/containment.test.ts).
  const minter = { key: minterKey, recheck: async () => null }
  // bob's keys are revoked after the minter authenticated its requests, before they are written.
  await store.revokeAllOf('bob', { deadline: deadline(), batchTimeout: 5000 })
  const clash = randomUUID()
  // One tick: the first goes at once, the rest wait for it and go together.
  const creates = Array.from({ length: 30 }, (_, i) => {
    if (i % 3 === 1) return { kind: 'minted by bob', key: newKey('default', 'bob'), minter }
    if (i === 2 || i === 5) return { kind: 'same name', key: newKey('default', 'carol', clash) }
    return { kind: 'plain', key: newKey('default', 'carol') }
  })
  const outcomes = await Promise.allSettled(creates.map(c => store.create(c.key.apiKey, c.key.digest, deadline(), { minter: c.minter })))
  const of = (kind: string) => outcomes.filter((_, i) => creates[i].kind === kind)
  t.ok(of('minted by bob').every(o => o.status === 'rejected' && o.reason instanceof CredentialRevokedError), 'every create of the revoked minter is refused')
  t.ok(of('plain').every(o => o.status === 'fulfilled'), 'every other create is made')
  const clashing = of('same name')
  t.equal(clashing.filter(o => o.status === 'fulfilled').length, 1, 'of two creates of one name, one is made')
  t.ok(clashing.some(o => o.status === 'rejected' && o.reason instanceof KeyExistsError), 'the other finds it exists')
  const { records } = await stored(client, root)
  t.equal(records.length, of('plain').length + 1, 'etcd holds the plain keys and the one of that name, nothing of bob\'s')
  const plainRevisions = new Set(of('plain').map(o => (o as PromiseFulfilledResult<{ createRevision: number }>).value.createRevision))
  t.ok(plainRevisions.size <= 3, `the plain creates shared transactions with the refused ones (${plainRevisions.size} revisions)`)
})

t.test('etcd frozen: every create answers 503 in time, and one not sent made nothing', async t => {
  const own = await dedicatedEtcd()
  t.teardown(() => own.close())
  const REQUEST_TIMEOUT = 1500
  const api = await buildApp(t, own, { requestTimeout: REQUEST_TIMEOUT })
  await api.createKey('warm-up')
  await own.freeze()
  let frozen = true
  t.teardown(async () => { if (frozen) await own.thaw() })
  // One namespace per request: a 503's log line (its request id) says which namespace it was for.
  const started = performance.now()
  const answers = await Promise.all(Array.from({ length: 20 }, async (_, i) => {
    const res = await create(api, {}, { namespace: `n${i}` })
    return { res, elapsed: performance.now() - started }
  }))
  t.same(answers.map(a => a.res.statusCode), answers.map(() => 503), 'every create answers 503', { bodies: [...new Set(answers.map(a => a.res.body))] })
  for (const { res } of answers) checkError(t, res, 503, 8)
  const slowest = Math.max(...answers.map(a => a.elapsed))
  t.ok(slowest <= REQUEST_TIMEOUT + 1000, `all answered within requestTimeout + 1 s (slowest ${Math.round(slowest)} ms)`)
  await own.thaw()
  frozen = false
  await waitFor(async () => (await create(api, {}, { namespace: 'after' })).statusCode === 201, { what: 'a create to succeed after thaw', timeout: 20_000 })

  const lines = api.logs()
  const namespaceOf = new Map(lines.filter(l => l.msg === 'incoming request' && /\/namespaces\/n\d+\/apikey$/.test(l.req?.url ?? ''))
    .map(l => [l.reqId, /\/namespaces\/(n\d+)\//.exec(l.req.url)?.[1]]))
  const unavailable = lines.filter(l => l.msg === 'etcd unavailable' && namespaceOf.has(l.reqId))
  t.equal(unavailable.length, 20, 'each 503 is logged with its cause')
  const notSent = unavailable.filter(l => l.err?.message === NOT_SENT).map(l => namespaceOf.get(l.reqId) as string)
  t.ok(notSent.length >= 1, `creates queued behind the frozen batch were not sent (${notSent.length} of 20)`)
  const { records } = await stored(api.etcd, api.root)
  const made = new Set(records.map(kv => JSON.parse(kv.value.toString()).metadata.namespace as string).filter(ns => namespaceOf.has(ns) || /^n\d+$/.test(ns)))
  t.same(notSent.filter(ns => made.has(ns)), [], 'and etcd holds no key of a create that was not sent')
  t.comment(`${made.size} of the ${20 - notSent.length} creates that were sent made their key once etcd was back (their 503 said the outcome was unknown)`)
})
