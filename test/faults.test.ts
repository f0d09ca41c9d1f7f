// Issue item 8: with etcd frozen (it accepts connections but never answers), and with etcd
// stopped and started again on the same address, every route answers 503 with Retry-After
// within requestTimeout plus one second (SPEC "Deadlines"), and answers normally again once
// etcd is back, on the same app instance; what acknowledged requests wrote is still there,
// and no write answered 503 is half-applied.
import t, { type Test } from 'tap'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { dedicatedEtcd, type ControllableEtcd } from './helpers/etcd.js'
import { BASE, buildApp, keyAuth, type Call, type CreatedKey, type TestApp } from './helpers/app.js'
import { checkError } from './helpers/assert.js'

/** Short, so that the suite stays fast; the spec's bound is this plus one second. */
const REQUEST_TIMEOUT = 1500
const BOUND_MS = REQUEST_TIMEOUT + 1000
/** How long the app may take to answer again once etcd is back (the client's circuit breaker half-opens after 1 s). */
const RECOVERY_LIMIT_MS = 20_000
const POLL_EVERY_MS = 250
const NS = 'default'

/** What `app.call` answers (light-my-request's response, or the helper's own shape of it). */
type Answer = Awaited<ReturnType<TestApp['call']>>

const etcd = await dedicatedEtcd()
t.teardown(() => etcd.close())

interface Fault {
  name: string
  /** What ends the fault, for messages. */
  endsWith: string
  begin (etcd: ControllableEtcd): Promise<void>
  end (etcd: ControllableEtcd): Promise<void>
}

const faults: Fault[] = [
  { name: 'frozen', endsWith: 'thaw()', begin: async (e) => await e.freeze(), end: async (e) => await e.thaw() },
  { name: 'stopped', endsWith: 'start()', begin: async (e) => await e.stop(), end: async (e) => await e.start() }
]

/** The keys the routes work on, all created through the API (acknowledged with a 201). */
interface Keys {
  /** Only read: by GET, by the list, and as the credentials of a `Key` request. */
  reader: CreatedKey
  /** The target of PATCH. */
  patched: CreatedKey
  /** The target of DELETE. */
  doomed: CreatedKey
}

interface Route {
  name: string
  call: Call
  /** What the answer must be when etcd works. */
  healthy (t: Test, res: Answer): void
}

const collection = `/namespaces/${NS}/apikey`
const item = (key: CreatedKey): string => `${collection}/${key.name}`
const jsonOf = (res: Answer): any => {
  try { return res.json() } catch { return res.body }
}

/** Every route, once; `phase` labels what POST and PATCH write, to tell later what was applied. */
function routes (keys: Keys, phase: string): Route[] {
  const { reader, patched, doomed } = keys
  const readsReader = (t: Test, res: Answer): void => {
    t.equal(res.statusCode, 200, 'status 200', { body: res.body })
    t.same(jsonOf(res), reader.resource, 'the key as it was created')
    t.ok(res.headers.etag, 'ETag header')
  }
  return [
    {
      name: 'GET list',
      call: { path: collection },
      healthy (t, res) {
        t.equal(res.statusCode, 200, 'status 200', { body: res.body })
        const list = jsonOf(res)
        t.ok(Array.isArray(list), 'a JSON array')
        t.same(Array.isArray(list) && list.find((k: any) => k.metadata?.name === reader.name), reader.resource, 'holds the reader key as created')
      }
    },
    {
      name: 'GET list?limit=1',
      call: { path: `${collection}?limit=1` },
      healthy (t, res) {
        t.equal(res.statusCode, 200, 'status 200', { body: res.body })
        t.equal(jsonOf(res)?.length, 1, 'one item')
        t.ok(res.headers['sensu-continue'], 'Sensu-Continue header: more keys remain')
      }
    },
    {
      name: 'POST',
      call: { method: 'POST', path: collection, body: { metadata: { labels: { phase } } } },
      healthy (t, res) {
        t.equal(res.statusCode, 201, 'status 201', { body: res.body })
        const body = jsonOf(res)
        t.match(body, { metadata: { namespace: NS, labels: { phase } }, key: String }, 'the new key with its secret')
        t.equal(res.headers.location, `${BASE}${collection}/${body?.metadata?.name}`, 'Location header')
      }
    },
    { name: 'GET one', call: { path: item(reader) }, healthy: readsReader },
    {
      name: 'PATCH',
      call: {
        method: 'PATCH',
        path: item(patched),
        body: { metadata: { labels: { phase } } },
        headers: { 'content-type': 'application/merge-patch+json' }
      },
      healthy (t, res) {
        t.equal(res.statusCode, 200, 'status 200', { body: res.body })
        const { metadata } = patched.resource as { metadata: { labels: Record<string, string> } }
        t.same(jsonOf(res), { ...patched.resource, metadata: { ...metadata, labels: { ...metadata.labels, phase } } }, 'the patched key')
      }
    },
    {
      name: 'DELETE',
      call: { method: 'DELETE', path: item(doomed) },
      healthy (t, res) {
        t.equal(res.statusCode, 204, 'status 204', { body: res.body })
        t.equal(res.body, '', 'no body')
      }
    },
    // The key lookup reads etcd too: while etcd is down this is a 503, never a 401.
    { name: 'GET one, Authorization: Key', call: { path: item(reader), auth: keyAuth(reader.secret) }, healthy: readsReader }
  ]
}

/** One request made while etcd is down: a 503 with Retry-After and Sensu's body, within the bound. */
async function expect503 (t: Test, app: TestApp, route: Route): Promise<void> {
  const started = performance.now()
  const res = await app.call(route.call)
  const elapsed = performance.now() - started
  await t.test(route.name, async (t) => {
    checkError(t, res, 503, 8)
    t.ok(res.headers['retry-after'], 'Retry-After header')
    t.ok(elapsed <= BOUND_MS, `answered in ${Math.round(elapsed)} ms, within requestTimeout + 1 s (${BOUND_MS} ms)`)
  })
}

/** Polls a GET until it is a 200; resolves with how long that took. */
async function waitForRecovery (app: TestApp, path: string): Promise<number> {
  const started = performance.now()
  for (;;) {
    const res = await app.call({ path })
    const elapsed = performance.now() - started
    if (res.statusCode === 200) return elapsed
    // Anything but "not yet" (a 404: the key was lost; a 500: a bug) fails at once.
    if (res.statusCode !== 503) throw new Error(`while waiting for etcd: ${res.statusCode} ${res.body}`)
    if (elapsed > RECOVERY_LIMIT_MS) throw new Error(`no recovery within ${RECOVERY_LIMIT_MS} ms: still ${res.body}`)
    await sleep(POLL_EVERY_MS)
  }
}

/**
 * Every record under `<root>/apikeys/` has its digest entry under `<root>/apikey-digests/`
 * (`<key_sha256>` → `<namespace>/<name>`) and vice versa. Returns the records, by `<namespace>/<name>`.
 */
async function checkDigestIndex (t: Test, app: TestApp): Promise<Map<string, any>> {
  const recordsPrefix = `${app.root}/apikeys/`
  const digestsPrefix = `${app.root}/apikey-digests/`
  const [rawRecords, digests] = await Promise.all([
    app.etcd.getAll().prefix(recordsPrefix).strings(),
    app.etcd.getAll().prefix(digestsPrefix).strings()
  ])
  const records = new Map(Object.entries(rawRecords).map(([k, v]) => [k.slice(recordsPrefix.length), JSON.parse(v)]))
  const problems: string[] = []
  for (const [path, record] of records) {
    const target = digests[digestsPrefix + String(record.key_sha256)]
    if (target !== path) problems.push(`record ${path}: digest entry points at ${target}`)
  }
  for (const [digestKey, path] of Object.entries(digests)) {
    const digest = digestKey.slice(digestsPrefix.length)
    if (records.get(path)?.key_sha256 !== digest) problems.push(`digest ${digest.slice(0, 8)}…: no record ${path} with that digest`)
  }
  t.same(problems, [], `records and digest entries match one to one (${records.size} records, ${Object.keys(digests).length} digest entries)`)
  return records
}

for (const fault of faults) {
  t.test(`etcd ${fault.name}`, async (t) => {
    const app = await buildApp(t, etcd, { requestTimeout: REQUEST_TIMEOUT })
    const before: Keys = {
      reader: await app.createKey(NS, { metadata: { labels: { role: 'reader' } } }),
      patched: await app.createKey(NS, { metadata: { labels: { role: 'patched' } } }),
      doomed: await app.createKey(NS, { metadata: { labels: { role: 'doomed' } } })
    }

    await fault.begin(etcd)
    let down = true
    t.teardown(async () => { if (down) await fault.end(etcd) })

    await t.test('every route answers 503 in time', async (t) => {
      // Concurrently, so that this takes one timeout rather than one per route; each is timed.
      await Promise.all(routes(before, fault.name).map(async (route) => await expect503(t, app, route)))
    })

    const backAt = performance.now()
    await fault.end(etcd)
    down = false
    const etcdBackMs = performance.now() - backAt
    const recoveryMs = await waitForRecovery(app, item(before.reader))
    t.comment(`etcd ${fault.name}: back ${Math.round(etcdBackMs)} ms after ${fault.endsWith} was called; ` +
      `the same app answered a GET again ${Math.round(recoveryMs)} ms after that`)

    // A key to delete that surely exists: the one DELETEd while etcd was down may or may not
    // have been deleted (a request sent to a frozen etcd is applied when it thaws).
    const after: Keys = { ...before, doomed: await app.createKey(NS) }
    // One subtest: the check of etcd is of what these requests wrote.
    await t.test('every route answers normally again, on the same app; etcd holds what they wrote, and no half-applied write', async (t) => {
      let created: string | undefined
      for (const route of routes(after, `after-${fault.name}`)) {
        const res = await app.call(route.call)
        if (route.call.method === 'POST') created = jsonOf(res)?.metadata?.name
        await t.test(route.name, async (t) => route.healthy(t, res))
      }
      const gone = await app.call({ path: item(after.doomed) })
      t.equal(gone.statusCode, 404, 'the deleted key is gone')

      const records = await checkDigestIndex(t, app)
      const record = (name: string | undefined) => records.get(`${NS}/${name}`)
      t.ok(record(before.reader.name), 'the key created before the fault is there')
      t.ok(record(before.patched.name), 'the key patched after the fault is there')
      t.same(record(before.patched.name)?.metadata?.labels, { role: 'patched', phase: `after-${fault.name}` }, '…as the last acknowledged PATCH left it')
      t.ok(record(created), 'the key created after the fault is there')
      t.notOk(record(after.doomed.name), 'the key deleted after the fault is gone')
      // What the 503'd writes left is not specified beyond "all or nothing"; said for the report.
      const appliedCreate = [...records.values()].some((r) => r.metadata?.labels?.phase === fault.name)
      t.comment(`writes answered 503 while etcd was ${fault.name}, applied after all: ` +
        `POST ${appliedCreate ? 'yes' : 'no'}, DELETE ${record(before.doomed.name) ? 'no' : 'yes'}`)
    })
  })
}
