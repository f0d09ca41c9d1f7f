// GET /metrics: Prometheus text, parsed by a real parser of the format (parse-prometheus-text-format,
// not prom-client, which wrote it). Every family the docs list, with its type and labels, and
// counts that move as the traffic says; who may read it (admins, the metrics token, nobody else),
// and that the metrics token opens nothing else. The standalone server exposes it too.
import t, { type Test } from 'tap'
import { Counter, Registry } from 'prom-client'
import parsePrometheusTextFormat from 'parse-prometheus-text-format'
import { bearerTokens, generateSecret } from '../lib/index.js'
import { EtcdKeys } from '../lib/store/key-builder.js'
import { ConfigError, loadConfig } from '../lib/server/config.js'
import { sharedEtcd } from './helpers/etcd.js'
import { ADMIN_TOKEN, BASE, adminAuth, buildApp, keyAuth, uniqueRoot, type Answer, type CreatedKey, type TestApp } from './helpers/app.js'
import { checkError } from './helpers/assert.js'
import { waitFor } from './helpers/wait.js'
import { ensureBuilt, freePorts, logLines, request, startServer, tempDir, waitForReady } from './helpers/standalone.js'

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

const METRICS_TOKEN = 'metrics-token-0123456789abcdef'
const metricsAuth = `Bearer ${METRICS_TOKEN}`

interface Family { name: string, type: string, metrics: Array<{ value?: string, labels?: Record<string, string>, count?: string, buckets?: Record<string, string> }> }
type Scrape = Map<string, Family>

/**
 * Parses an exposition with the independent parser; families by name. The parser folds all the
 * series of a labelled histogram into one and drops their labels (its flattenMetrics), so a
 * histogram's series are read from a second pass where it is untyped: its `_bucket`, `_sum` and
 * `_count` samples then come with their labels. Each series must end in a `+Inf` bucket that
 * equals its `_count`, as the format requires.
 */
function parse (text: string): Scrape {
  const families = parsePrometheusTextFormat(text) as Family[]
  const untyped = parsePrometheusTextFormat(text.replace(/^# TYPE (\S+) histogram$/gm, '# TYPE $1 untyped')) as Family[]
  const samples = (name: string) => untyped.filter(family => family.name === name).flatMap(family => family.metrics)
  const same = (a: Record<string, string> = {}, b: Record<string, string> = {}) =>
    Object.keys(a).length === Object.keys(b).length && Object.entries(a).every(([k, v]) => b[k] === v)
  for (const family of families.filter(f => f.type === 'HISTOGRAM')) {
    const buckets = samples(`${family.name}_bucket`)
    family.metrics = samples(`${family.name}_count`).map(({ labels, value }) => {
      const own = buckets.filter(b => { const { le, ...rest } = b.labels ?? {}; return le !== undefined && same(rest, labels) })
      const inf = own.find(b => b.labels?.le === '+Inf')
      if (inf?.value !== value) throw new Error(`${family.name}${JSON.stringify(labels)}: its +Inf bucket (${inf?.value}) is not its count (${value})`)
      return { labels, count: value, buckets: Object.fromEntries(own.map(b => [b.labels?.le, b.value])) }
    })
  }
  return new Map(families.map(family => [family.name, family]))
}

/** The value of a counter or gauge sample with these labels (0 when absent). */
function value (scrape: Scrape, name: string, labels: Record<string, string> = {}): number {
  const sample = scrape.get(name)?.metrics.find(m => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))
  return sample === undefined ? 0 : Number(sample.value)
}

/** The observation count of a histogram's series with these labels (0 when absent). */
function observations (scrape: Scrape, name: string, labels: Record<string, string>): number {
  const sample = scrape.get(name)?.metrics.find(m => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))
  return sample === undefined ? 0 : Number(sample.count)
}

async function metricsApp (t: Test): Promise<TestApp> {
  const api = await buildApp(t, etcd, { metrics: { readers: bearerTokens([METRICS_TOKEN], { username: 'metrics' }) } })
  api.leakWatch?.watchFor(METRICS_TOKEN, 'the metrics token')
  return api
}

async function scrape (t: Test, api: TestApp, auth = adminAuth): Promise<Scrape> {
  const res = await api.call({ path: '//metrics', auth })
  t.equal(res.statusCode, 200, 'the scrape is a 200', { body: res.body.slice(0, 300) })
  t.match(res.headers['content-type'], /^text\/plain; version=0\.0\.4/, 'in Prometheus\' text format')
  return parse(res.body)
}

t.test('every family, with its type and labels, and counts that move as the traffic says', async t => {
  const api = await metricsApp(t)
  await waitFor(() => api.app.apiKeys.cacheStatus()?.live, { what: 'the cache to follow etcd' })
  const before = await scrape(t, api)

  // The traffic: creates, reads, a malformed key, unknown keys, a revoked one, a delete, a revoke-all.
  const statuses: number[] = []
  const alice: CreatedKey[] = []
  for (let i = 0; i < 3; i++) alice.push(await api.createKey('default', { username: 'alice' }))
  const bob = await api.createKey('default', { username: 'bob' })
  const carol = await api.createKey('default', { username: 'carol' })
  const created = 5
  for (const key of alice) statuses.push((await api.call({ path: `/namespaces/default/apikey/${key.name}` })).statusCode)
  statuses.push((await api.call({ path: '/namespaces/default/apikey' })).statusCode)
  t.strictSame(statuses, [200, 200, 200, 200], 'the reads are 200s')
  // verify: one valid, one malformed, one unknown (well formed, never issued).
  t.equal((await api.call({ path: `/namespaces/default/apikey/${bob.name}`, auth: keyAuth(bob.secret) })).statusCode, 200, 'bob\'s key reads its own key')
  t.equal((await api.call({ path: '/namespaces/default/apikey', auth: 'Key not-a-key' })).statusCode, 401, 'a malformed key is a 401')
  t.equal((await api.call({ path: '/namespaces/default/apikey', auth: keyAuth(generateSecret('sak_')) })).statusCode, 401, 'an unknown key is a 401')
  // Revoked: carol's fence written (a revoke-all caught between its fence and its deletes).
  await api.etcd.put(new EtcdKeys(api.root).fence('carol')).value(JSON.stringify({ username: 'carol', revoked_at: 0 }))
  t.equal((await api.call({ path: '/namespaces/default/apikey', auth: keyAuth(carol.secret) })).statusCode, 401, 'a revoked key is a 401')
  t.equal((await api.call({ method: 'DELETE', path: `/namespaces/default/apikey/${bob.name}` })).statusCode, 204, 'bob\'s key deleted')
  const revokeAll = await api.call({ method: 'DELETE', path: '/apikeys?username=alice' })
  t.equal(revokeAll.statusCode, 200, 'alice\'s keys revoked')
  const revokedByAll: number = revokeAll.json().deleted
  t.equal(revokedByAll, 3, 'the revoke-all says it deleted alice\'s 3 keys', { body: revokeAll.body })

  const after = await scrape(t, api)
  const delta = (name: string, labels: Record<string, string> = {}) => value(after, name, labels) - value(before, name, labels)

  t.test('types and labels', async t => {
    const expected: Array<[string, string, string[]]> = [
      ['http_request_duration_seconds', 'HISTOGRAM', ['method', 'route', 'status_code']],
      ['apikeys_etcd_request_duration_seconds', 'HISTOGRAM', ['operation']],
      ['apikeys_etcd_errors_total', 'COUNTER', ['operation']],
      ['apikeys_cache_live', 'GAUGE', []],
      ['apikeys_cache_revision_lag', 'GAUGE', []],
      ['apikeys_cache_reads_total', 'COUNTER', ['source']],
      ['apikeys_verifications_total', 'COUNTER', ['result']],
      ['apikeys_keys_created_total', 'COUNTER', []],
      ['apikeys_keys_revoked_total', 'COUNTER', []],
      ['process_cpu_user_seconds_total', 'COUNTER', []],
      ['process_resident_memory_bytes', 'GAUGE', []],
      ['nodejs_heap_size_used_bytes', 'GAUGE', []],
      ['nodejs_eventloop_lag_seconds', 'GAUGE', []]
    ]
    for (const [name, type, labels] of expected) {
      const family = after.get(name)
      t.equal(family?.type, type, `${name} is a ${type.toLowerCase()}`)
      t.ok(family !== undefined && family.metrics.length > 0, `${name} has samples`)
      for (const sample of family?.metrics ?? []) {
        t.strictSame(Object.keys(sample.labels ?? {}).sort(), [...labels].sort(), `${name}'s labels are ${labels.join(', ') || 'none'}`)
      }
    }
    t.strictSame(after.get('apikeys_verifications_total')?.metrics.map(m => m.labels?.result).sort(), ['disabled', 'expired', 'malformed', 'revoked', 'unknown', 'valid'], 'every verification result has a series')
    t.strictSame(after.get('apikeys_cache_reads_total')?.metrics.map(m => m.labels?.source).sort(), ['cache', 'etcd'], 'reads by source: cache and etcd')
    const operations = after.get('apikeys_etcd_request_duration_seconds')?.metrics.map(m => m.labels?.operation)
    t.strictSame([...new Set(operations)].sort(), ['lease_grant', 'lease_revoke', 'put', 'range', 'txn'], 'etcd calls by operation')
  })

  t.test('counts', async t => {
    t.equal(delta('apikeys_keys_created_total'), created, `keys created: ${created}, the number of 201s`)
    t.equal(delta('apikeys_keys_revoked_total'), 1 + revokedByAll, 'keys revoked: the delete\'s 1 and the revoke-all\'s 3')
    // verify is asked by the Key authenticator: bob's key (once for its GET), and the three 401s.
    t.equal(delta('apikeys_verifications_total', { result: 'valid' }), 1, 'one valid key')
    t.equal(delta('apikeys_verifications_total', { result: 'malformed' }), 1, 'one malformed key')
    t.equal(delta('apikeys_verifications_total', { result: 'unknown' }), 1, 'one unknown key')
    t.equal(delta('apikeys_verifications_total', { result: 'revoked' }), 1, 'one revoked key')
    t.equal(delta('apikeys_verifications_total', { result: 'expired' }), 0, 'no expired key')
    const post = { method: 'POST', route: `${BASE}/namespaces/:namespace/apikey`, status_code: '201' }
    t.equal(observations(after, 'http_request_duration_seconds', post) - observations(before, 'http_request_duration_seconds', post), created, 'the histogram counts the 201s of POST on the route pattern')
    const get = { method: 'GET', route: `${BASE}/namespaces/:namespace/apikey/:apikey`, status_code: '200' }
    t.equal(observations(after, 'http_request_duration_seconds', get) - observations(before, 'http_request_duration_seconds', get), 4, 'and the 200s of GET on the item route')
    const routes = new Set(after.get('http_request_duration_seconds')?.metrics.map(m => m.labels?.route))
    for (const route of routes) t.notOk([...alice, bob, carol].some(key => route?.includes(key.name)), `route label ${route} is a pattern, not a URL`)
    // The creates and the delete were made one at a time: a txn each. The revoke-all's deletes run
    // together, so group commit may carry them in one txn.
    t.ok(observations(after, 'apikeys_etcd_request_duration_seconds', { operation: 'txn' }) - observations(before, 'apikeys_etcd_request_duration_seconds', { operation: 'txn' }) >= created + 1 + 1,
      'a txn per create and for the delete, and at least one for the revoke-all\'s deletes')
    t.ok(delta('apikeys_cache_reads_total', { source: 'cache' }) > 0, 'reads went through the cache')
    t.equal(value(after, 'apikeys_cache_live'), 1, 'the cache is live')
    t.ok(value(after, 'apikeys_cache_revision_lag') >= 0, 'the revision lag is a count of revisions')
    t.equal(delta('apikeys_etcd_errors_total', { operation: 'txn' }), 0, 'no etcd error')
  })
})

t.test('who may read the metrics', async t => {
  const api = await metricsApp(t)
  const key = await api.createKey('default', { username: 'bob' })
  const none = await api.call({ path: '//metrics', auth: null })
  checkError(t, none, 401, 5, 'no credentials')
  t.equal(none.headers['www-authenticate'], 'Bearer, Key', 'the 401 says which schemes')
  checkError(t, await api.call({ path: '//metrics', auth: 'Bearer wrong-metrics-token-0123456789' }), 401, 5, 'a wrong token')
  const user = await api.call({ path: '//metrics', auth: keyAuth(key.secret) })
  checkError(t, user, 403, 4, 'a non-admin key')
  t.match(user.json().message, /only admins and the metrics token may read the metrics/)
  await scrape(t, api, adminAuth)
  await scrape(t, api, metricsAuth)
  // The metrics token opens the metrics and nothing else.
  checkError(t, await api.call({ path: '/namespaces/default/apikey', auth: metricsAuth }), 401, 5, 'the metrics token on a list')
  checkError(t, await api.call({ path: `/namespaces/default/apikey/${key.name}`, auth: metricsAuth }), 401, 5, 'the metrics token on a get')
  checkError(t, await api.call({ method: 'POST', path: '/namespaces/default/apikey', body: {}, auth: metricsAuth }), 401, 5, 'the metrics token on a create')
  checkError(t, await api.call({ method: 'DELETE', path: '/apikeys?username=bob', auth: metricsAuth }), 401, 5, 'the metrics token on a revoke-all')
  t.equal((await api.call({ path: `/namespaces/default/apikey/${key.name}` })).statusCode, 200, 'bob\'s key is still there')
})

t.test('a host: off by default, or in its own registry', async t => {
  const plain = await buildApp(t, etcd)
  t.equal((await plain.call({ path: '//metrics' })).statusCode, 404, 'no metrics unless asked for (the host\'s own 404)')

  const registry = new Registry()
  const hostCounter = new Counter({ name: 'host_orders_total', help: 'the host\'s own', registers: [registry] })
  hostCounter.inc(7)
  const api = await buildApp(t, etcd, { metrics: { registry, path: '/internal/metrics' } })
  await api.createKey('default')
  const res = await api.call({ path: '//internal/metrics' })
  t.equal(res.statusCode, 200, 'the metrics at the path given')
  const scraped = parse(res.body)
  t.equal(value(scraped, 'host_orders_total'), 7, 'the host\'s metric is there')
  t.equal(value(scraped, 'apikeys_keys_created_total'), 1, 'and the plugin\'s, in the same registry')
  t.equal(parse(await registry.metrics()).get('apikeys_keys_created_total')?.type, 'COUNTER', 'the host can serve the registry itself')

  await t.rejects(buildApp(t, etcd, { metrics: { registry } }), /the metrics registry already holds apikeys_.*: give each instance of the plugin its own registry/, 'a registry already holding the families is refused, with what to do')
  await t.rejects(buildApp(t, etcd, { metrics: { path: 'metrics' } }), /option "metrics.path" must be a URL path like \/metrics/)
  await t.rejects(buildApp(t, etcd, { metrics: { registry: {} as Registry } }), /option "metrics.registry" must be a prom-client Registry/)
})

t.test('METRICS_TOKEN: checked like an admin token, never shown', async t => {
  const base = { ETCD_ENDPOINTS: 'http://127.0.0.1:2379' }
  t.equal(loadConfig({ ...base, METRICS_TOKEN }).metricsToken, METRICS_TOKEN)
  t.equal(loadConfig(base).metricsToken, undefined, 'unset: only admins read the metrics')
  for (const bad of ['short-token', 'has a space in it 0123456789']) {
    const err = (() => { try { loadConfig({ ...base, METRICS_TOKEN: bad }) } catch (e) { return e } })() as Error
    t.ok(err instanceof ConfigError, `${JSON.stringify(bad)} is refused`)
    t.match(err.message, /^METRICS_TOKEN must be a token of at least 16 printable characters/, 'naming the variable')
    t.notOk(err.message.includes(bad), 'without showing its value')
  }
  t.throws(() => loadConfig({ ...base, APIKEY_ADMIN_TOKEN: ADMIN_TOKEN, METRICS_TOKEN: ADMIN_TOKEN }), /METRICS_TOKEN must differ from every admin token/)
})

t.test('the standalone server with METRICS_TOKEN', async t => {
  await ensureBuilt()
  const [port] = await freePorts(1)
  const url = `http://127.0.0.1:${port}`
  const env = { PORT: String(port), ETCD_ENDPOINTS: etcd.endpoints.join(','), ETCD_ROOT: uniqueRoot(), LOG_LEVEL: 'trace', DATA_DIR: await tempDir(t) }
  const server = startServer({ ...env, APIKEY_ADMIN_TOKEN: ADMIN_TOKEN, METRICS_TOKEN })
  t.teardown(() => server.stop())
  await waitForReady(server, `${url}/health`)
  const get = async (path: string, auth?: string): Promise<Answer> => {
    const res = await request(`${url}${path}`, { headers: auth === undefined ? {} : { authorization: auth } })
    return { statusCode: res.status, headers: res.headers, body: res.body, json: () => JSON.parse(res.body) }
  }
  t.equal((await request(`${url}${BASE}/namespaces/default/apikey`, { method: 'POST', body: '{}', headers: { authorization: adminAuth, 'content-type': 'application/json' } })).status, 201, 'a key created')
  const byToken = await get('/metrics', metricsAuth)
  t.equal(byToken.statusCode, 200, 'METRICS_TOKEN reads the metrics')
  const scraped = parse(byToken.body)
  t.equal(value(scraped, 'apikeys_keys_created_total'), 1, 'which count the key created')
  t.equal(scraped.get('http_request_duration_seconds')?.type, 'HISTOGRAM', 'and time the answers')
  t.ok(scraped.get('http_request_duration_seconds')?.metrics.some(m => m.labels?.route === '/health'), 'the server\'s own routes included')
  t.equal((await get('/metrics', adminAuth)).statusCode, 200, 'the admin token reads them too')
  checkError(t, await get('/metrics'), 401, 5, 'no credentials')
  checkError(t, await get(`${BASE}/namespaces/default/apikey`, metricsAuth), 401, 5, 'METRICS_TOKEN on the API')

  t.match(await server.stop(), { code: 0, timedOut: false }, 'the server stops cleanly')
  const output = server.stdout() + server.stderr()
  const lines = output.split('\n').filter(line => line.trim() !== '')
  t.ok(lines.length >= 8, `its output was captured: ${lines.length} lines`)
  t.equal(logLines(output).length, lines.length, 'every line is JSON')
  t.notOk(output.includes(METRICS_TOKEN), 'no line carries the metrics token')
  t.notOk(output.includes(ADMIN_TOKEN), 'nor the admin token')
})
