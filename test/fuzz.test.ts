// Property-based fuzzing (issue 4, item 1): fast-check sends random and mutated requests (paths,
// names, query strings, headers, Content-Types, bodies) to the real plugin over real etcd, one at a
// time, and checks each answer against a model of what the earlier 2xx answers said:
// - every answer is a 2xx or a 4xx with Sensu's JSON error body and the code of SPEC.md's table,
//   never a 5xx, never a hang (10 s per request), and the status is the one SPEC.md gives for that
//   request where the model can tell (most cases; mutated paths and unknown Content-Types are only
//   held to the first rule);
// - 2xx bodies are what the model says (lists, reads, created and patched keys);
// - after each run etcd holds exactly the model: each live key's record (its answer plus
//   `key_sha256`) and its digest entry, nothing else.
// The model, the oracle and the plans' renderer are in test/helpers/fuzz-*.ts.
// FUZZ_RUNS sets the number of cases (default 2,000), FUZZ_SEED replays a run.
import t, { type Test } from 'tap'
import fc from 'fast-check'
import { isDeepStrictEqual } from 'node:util'
import { sharedEtcd } from './helpers/etcd.js'
import { adminAuth, buildApp, keyAuth, type Answer, type Call, type TestApp } from './helpers/app.js'
import { NAMESPACES, planArb, socketSegment, type Method, type Plan } from './helpers/arbitraries.js'
import { Model, digest, isObject, pick, type Json, type ModelKey } from './helpers/fuzz-model.js'
import { predict, routeOf, urlOf, type Prediction, type Sent } from './helpers/fuzz-oracle.js'
import { AUTH_NAMESPACE, Renderer } from './helpers/fuzz-requests.js'

const RUNS = Math.max(2000, Number(process.env.FUZZ_RUNS ?? 0) || 0)
const SOCKET_RUNS = Math.max(200, Math.floor(RUNS / 10))
const SEED = process.env.FUZZ_SEED === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(process.env.FUZZ_SEED)
const REQUEST_TIMEOUT = 10_000
/** SPEC.md "Errors": Sensu's code for each status. */
const SENSU_CODE: Record<number, number> = { 400: 1, 401: 5, 403: 4, 404: 2, 405: 1, 409: 3, 410: 7, 412: 7, 413: 1, 415: 1, 429: 9 }

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

// ---------------------------------------------------------------------------
// Sending, checking, and keeping the model

class Fuzz {
  readonly model = new Model()
  readonly renderer = new Renderer(this.model)
  readonly statuses = new Map<string, number>()
  readonly ops = new Map<string, { all: number, ok: number }>()
  cases = 0
  /** The first request that broke a rule, before fast-check shrinks it (shrinking runs more requests). */
  firstFailure: string | undefined

  constructor (private readonly api: TestApp) {}

  async send (sent: Sent): Promise<Answer> {
    const call: Call = { method: sent.method as Call['method'], path: sent.path, headers: sent.headers, auth: sent.auth, socket: sent.socket }
    if (sent.payload !== undefined) call.body = sent.payload
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${REQUEST_TIMEOUT} ms`)), REQUEST_TIMEOUT)
    })
    try {
      return await Promise.race([this.api.call(call), timeout])
    } finally {
      clearTimeout(timer)
    }
  }

  /** Sends one request, checks its answer, and updates the model from it. Throws on any violation. */
  async run (sent: Sent, op: string): Promise<void> {
    const clock = { before: Date.now() }
    const prediction = predict(sent, this.model, clock)
    let answer: Answer
    try {
      answer = await this.send(sent)
    } catch (err) {
      throw new Error(`${describe(sent)}\n  failed: ${(err as Error).message}`)
    }
    this.cases++
    const router = routerAnswer(answer)
    const label = `${answer.statusCode}${router ? ' (router)' : prediction.outside === true ? ' (host)' : ''}`
    this.statuses.set(label, (this.statuses.get(label) ?? 0) + 1)
    const counts = this.ops.get(op) ?? { all: 0, ok: 0 }
    counts.all++
    if (answer.statusCode < 300) counts.ok++
    this.ops.set(op, counts)

    // The model follows what the server did, so that one wrong answer does not cascade.
    const applied = this.apply(sent, answer)
    const problems = [...this.shape(sent, answer, prediction)]
    if (prediction.statuses !== 'any' && !prediction.statuses.includes(answer.statusCode)) {
      problems.push(`status ${answer.statusCode}, expected ${prediction.statuses.join(' or ')} (${prediction.why})`)
    } else if (answer.statusCode < 300 && prediction.check !== undefined) {
      const complaint = prediction.check(answer)
      if (complaint !== undefined) problems.push(complaint)
    }
    if (applied !== undefined) problems.push(applied)
    if (problems.length > 0) {
      const failure = `${describe(sent)}\n  answered ${answer.statusCode} ${answer.body.slice(0, 500)}\n  ${problems.join('\n  ')}`
      this.firstFailure ??= failure
      throw new Error(failure)
    }
  }

  /** The rules every answer follows, whatever was sent. */
  private * shape (sent: Sent, answer: Answer, prediction: Prediction): Generator<string> {
    const status = answer.statusCode
    if (status >= 500) yield `a ${status}: never a 5xx`
    if (sent.method === 'HEAD' || status === 204) {
      if (answer.body !== '') yield `a ${sent.method} ${status} with a body`
      return
    }
    if (routerAnswer(answer)) {
      if (prediction.router !== true) yield 'the router refused a path that SPEC.md routes'
      return
    }
    if (prediction.outside === true) return
    if (!/^application\/json/.test(String(answer.headers['content-type']))) yield `Content-Type ${String(answer.headers['content-type'])}, not JSON`
    let body: unknown
    try { body = answer.json() } catch { yield 'a body that is not JSON'; return }
    if (/key_sha256/.test(answer.body)) yield 'an answer shows key_sha256'
    const rotation = routeOf(urlOf(sent).pathname).kind === 'rotate' && status === 200
    if (status !== 201 && !rotation && /sak_[A-Za-z0-9_-]{49}/.test(answer.body)) yield 'an answer other than a create or a rotation shows a secret'
    if (status < 400) return
    if (!isObject(body) || !isDeepStrictEqual(Object.keys(body).sort(), ['code', 'message'])) { yield 'the error body is not { message, code }'; return }
    if (body.code !== SENSU_CODE[status]) yield `code ${String(body.code)} for ${status}; SPEC.md says ${SENSU_CODE[status]}`
    if (typeof body.message !== 'string' || body.message.trim() === '') yield 'an error without a message'
    else if (body.message.includes(this.api.root) || /\n\s+at /.test(body.message)) yield 'an error message with an etcd key or a stack'
    if (status === 401 && answer.headers['www-authenticate'] === undefined) yield 'a 401 without WWW-Authenticate'
    if (status === 405 && answer.headers.allow === undefined) yield 'a 405 without Allow'
  }

  /** Updates the model from a 2xx; returns a complaint when the server changed something the model does not know. */
  private apply (sent: Sent, answer: Answer): string | undefined {
    if (answer.statusCode >= 300) return
    const route = routeOf(urlOf(sent).pathname)
    if (route.kind === 'apikeys' && sent.method === 'DELETE') {
      const username = answer.json()?.username
      for (const key of this.model.ofUser(username)) this.model.deleted(key)
      this.model.fenced.set(username, this.model.maxRevision)
      return
    }
    if (route.kind === 'apikeys') {
      // GET /apikeys: its tokens are reused on namespaced lists too (valid where their start lies).
      const token = answer.headers['sensu-continue']
      if (typeof token === 'string') this.model.tokens.push({ ns: '', token })
      return
    }
    if (route.kind === 'rotate') {
      const key = this.model.get(route.ns, route.name)
      if (key === undefined) return `a rotation of ${route.ns}/${route.name}, which the model does not hold`
      const grace = sent.payload === undefined || sent.payload === '' ? 0 : JSON.parse(sent.payload).grace_seconds ?? 0
      this.model.rotated(key, answer.json(), String(answer.headers.etag), grace)
      return
    }
    if (route.kind !== 'collection' && route.kind !== 'item') return `a ${answer.statusCode} on a path that is no route`
    if (route.kind === 'collection' && answer.statusCode === 200) {
      const token = answer.headers['sensu-continue']
      if (typeof token === 'string') this.model.tokens.push({ ns: route.ns, token })
      if (this.model.tokens.length > 200) this.model.tokens.splice(0, 100)
      return
    }
    if (route.kind === 'collection' && answer.statusCode === 201) {
      const body = answer.json()
      if (body?.metadata?.namespace !== route.ns || typeof body.key !== 'string') return 'a 201 whose body is not a key of the URL\'s namespace'
      this.model.created(route.ns, body, String(answer.headers.etag))
      return
    }
    if (route.kind !== 'item') return `a ${answer.statusCode} to ${sent.method} on a collection`
    const key = this.model.get(route.ns, route.name)
    if (key === undefined) return `a ${answer.statusCode} to ${sent.method} ${route.ns}/${route.name}, which the model does not hold`
    if (sent.method === 'GET') this.model.sawEtag(answer.headers.etag)
    if (sent.method === 'PATCH' && answer.statusCode === 200) this.model.patched(key, answer.json(), String(answer.headers.etag))
    if (sent.method === 'DELETE' && answer.statusCode === 204) this.model.deleted(key)
  }

  /** A plan that authenticates with a key of a user who has none left (a revoke-all) gets one first. */
  async ensureKeyOf (plan: Plan) {
    if (plan.auth.kind !== 'key' || this.model.ofUser(plan.auth.user).length > 0) return
    const body = JSON.stringify({ username: plan.auth.user })
    await this.run({ method: 'POST', path: `/namespaces/${AUTH_NAMESPACE}/apikey`, headers: { 'content-type': 'application/json' }, auth: adminAuth, payload: body, socket: false }, 'seed')
  }

  /** etcd holds exactly the model: each live key's record and digest entry, each revoked user's fence, nothing else. */
  async checkEtcd (): Promise<string[]> {
    const problems: string[] = []
    const snapshot = await this.api.snapshot()
    const root = this.api.root
    for (const username of this.model.fenced.keys()) {
      const fence = `${root}/apikey-fences/${encodeURIComponent(JSON.stringify(username).slice(1, -1))}`
      if (JSON.parse(snapshot[fence] ?? '{}').username !== username) problems.push(`etcd lacks the fence of ${JSON.stringify(username)}`)
      delete snapshot[fence]
    }
    const expected = new Map<string, ModelKey>()
    /** A rotation's old digest entry: etcd removes it when its grace ends, so it may or may not be there. */
    const optionalKeys = new Set<string>()
    for (const key of this.model.keys.values()) {
      expected.set(`${root}/apikeys/${key.ns}/${key.name}`, key)
      expected.set(`${root}/apikey-digests/${digest(key.secret)}`, key)
      if (key.previous !== undefined) {
        expected.set(`${root}/apikey-digests/${digest(key.previous)}`, key)
        optionalKeys.add(`${root}/apikey-digests/${digest(key.previous)}`)
      }
    }
    for (const [etcdKey, value] of Object.entries(snapshot)) {
      const key = expected.get(etcdKey)
      if (key === undefined) { problems.push(`etcd holds ${etcdKey} = ${value.slice(0, 200)}, which no 2xx made`); continue }
      if (etcdKey.startsWith(`${root}/apikey-digests/`)) {
        if (value !== `${key.ns}/${key.name}`) problems.push(`${etcdKey} points at ${value}, not ${key.ns}/${key.name}`)
        continue
      }
      // What only the store reads: the digest, and a rotation's previous digest and its end.
      const { key_sha256: sha, previous_sha256: previous, previous_until: _until, ...record } = JSON.parse(value)
      if (previous !== undefined && (key.previous === undefined || previous !== digest(key.previous))) problems.push(`${etcdKey} keeps a previous digest that is not its last rotation's`)
      if (sha !== digest(key.secret)) problems.push(`${etcdKey} holds another digest than its secret's`)
      if (!isDeepStrictEqual(record, key.record)) problems.push(`${etcdKey} holds ${JSON.stringify(record).slice(0, 300)}; the last answer said ${JSON.stringify(key.record).slice(0, 300)}`)
    }
    for (const etcdKey of expected.keys()) if (!(etcdKey in snapshot) && !optionalKeys.has(etcdKey)) problems.push(`etcd lacks ${etcdKey}`)
    return problems
  }

  histogram (): string {
    const statuses = [...this.statuses].sort(([a], [b]) => a.localeCompare(b)).map(([s, n]) => `${s}: ${n}`).join(', ')
    const ops = [...this.ops].map(([op, { all, ok }]) => `${op} ${ok}/${all}`).join(', ')
    return `${this.cases} answers by status: ${statuses}\n2xx by operation: ${ops}`
  }

  share2xx (): number {
    let ok = 0
    for (const [label, n] of this.statuses) if (label.startsWith('2')) ok += n
    return ok / Math.max(1, this.cases)
  }
}

/**
 * Fastify's router answers a bad escape (400 FST_ERR_BAD_URL) or a parameter over maxParamLength
 * (414 FST_ERR_MAX_PARAM_LENGTH) itself, before any hook, in its own body: the host's
 * `frameworkErrors` decides it, not the plugin (see the report of issue 4).
 */
function routerAnswer (answer: Answer): boolean {
  if (answer.statusCode !== 400 && answer.statusCode !== 414) return false
  try {
    const code = answer.json()?.code
    return (answer.statusCode === 400 && code === 'FST_ERR_BAD_URL') || (answer.statusCode === 414 && code === 'FST_ERR_MAX_PARAM_LENGTH')
  } catch {
    return false
  }
}

function describe (sent: Sent): string {
  const payload = sent.payload === undefined ? '' : ` body(${Buffer.byteLength(sent.payload)} bytes) ${JSON.stringify(sent.payload.slice(0, 300))}`
  const auth = sent.auth === null ? 'no auth' : sent.auth.startsWith('Key ') ? `Key ${sent.auth.slice(4, 14)}…` : JSON.stringify(sent.auth.slice(0, 40))
  return `${sent.socket ? '[socket] ' : ''}${sent.method} ${sent.path.slice(0, 300)} ${auth} headers ${JSON.stringify(sent.headers).slice(0, 300)}${payload}`
}

/** Keys of every caller the plans name, in a namespace the plans never touch, so that they outlive the run. */
async function seed (fuzz: Fuzz) {
  const create = async (ns: string, body: Json, auth = adminAuth) => {
    await fuzz.run({ method: 'POST', path: `/namespaces/${ns}/apikey`, headers: { 'content-type': 'application/json' }, auth, payload: JSON.stringify(body), socket: false }, 'seed')
  }
  for (const username of ['admin', 'fuzzer', 'other']) {
    await create(AUTH_NAMESPACE, { username })
    await create(AUTH_NAMESPACE, { username })
  }
  for (const ns of NAMESPACES) {
    await create(ns, { metadata: { labels: { team: 'ops' } }, url: 'https://asset-url.tar.gz' })
    await create(ns, { username: 'fuzzer' }, keyAuth(fuzz.model.ofUser('fuzzer')[0].secret))
    await create(ns, { username: 'other', filters: null })
  }
}

// ---------------------------------------------------------------------------
// The runs

/** TAP is line-based: a message keeps to printable ASCII, everything else escaped. */
const ascii = (text: string) => text.replace(/[^\x20-\x7e\n]/g, c => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)

/**
 * Runs a property. A failure names the first request that broke a rule (with its answer and the
 * rule), the counterexample fast-check shrank it to, and the seed that replays the run.
 */
async function holds<T> (t: Test, fuzz: Fuzz, property: fc.IAsyncPropertyWithHooks<T>, numRuns: number): Promise<boolean> {
  fuzz.firstFailure = undefined
  const details = await fc.check(property, { numRuns, seed: SEED })
  if (!details.failed) return true
  const error = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance)
  t.fail(ascii([
    `failed at case ${details.numRuns} (FUZZ_SEED=${details.seed}):`,
    fuzz.firstFailure ?? error,
    `shrunk ${details.numShrinks} times to: ${fc.stringify(details.counterexample).slice(0, 1500)}`,
    ...(fuzz.firstFailure === error ? [] : [`which failed with: ${error}`])
  ].join('\n')))
  return false
}

/**
 * etcd holds exactly the model, every revoked secret is refused and every live one authenticates:
 * the end of each run, so that each subtest checks the store it changed.
 */
async function storeHoldsTheModel (t: Test, fuzz: Fuzz) {
  const problems = await fuzz.checkEtcd()
  t.ok(problems.length === 0, `${fuzz.model.keys.size} keys in the model, ${fuzz.model.revoked.length} revoked: etcd holds them and nothing else`, { problems: problems.slice(0, 20).map(ascii) })
  for (const { secret } of fuzz.model.revoked.slice(-20)) {
    const res = await fuzz.send({ method: 'GET', path: `/namespaces/${AUTH_NAMESPACE}/apikey`, headers: {}, auth: keyAuth(secret), socket: false })
    // A 429 goes only to invalid credentials past the failure limit: a refusal too.
    if (res.statusCode !== 401 && res.statusCode !== 429) t.fail(`a revoked secret answered ${res.statusCode}`)
  }
  const live = [...fuzz.model.keys.values()]
  // A disabled key is live but refused (SPEC: Lifecycle), and the limit's 429 is a refusal too.
  for (const key of live.filter(k => k.record.disabled === true).slice(0, 5)) {
    const res = await fuzz.send({ method: 'GET', path: `/namespaces/${AUTH_NAMESPACE}/apikey`, headers: {}, auth: keyAuth(key.secret), socket: false })
    if (res.statusCode !== 401 && res.statusCode !== 429) t.fail(`a disabled key's secret answered ${res.statusCode}`)
  }
  for (const key of live.filter(k => k.record.disabled !== true).slice(0, 20)) {
    const res = await fuzz.send({ method: 'GET', path: `/namespaces/${AUTH_NAMESPACE}/apikey`, headers: {}, auth: keyAuth(key.secret), socket: false })
    if (res.statusCode !== 200) t.fail(`a live secret answered ${res.statusCode}`)
  }
  t.strictSame(unhandled, [], 'no unhandled rejection')
}

const unhandled: unknown[] = []
const onUnhandled = (err: unknown) => { unhandled.push(err) }
process.on('unhandledRejection', onUnhandled)
t.teardown(() => { process.off('unhandledRejection', onUnhandled) })

t.test(`${RUNS} fuzzed requests through inject(), then ${SOCKET_RUNS} raw paths over a socket`, async t => {
  // Every request comes from one address, so the bad credentials mixed in pass the failure limit
  // early on; the model holds every valid caller to be served all the same. It predicts no write
  // limit's 429: a fast machine sends the fuzzer's writes faster than the default allows
  // (test/write-limit.test.ts tests the limit).
  const api = await buildApp(t, etcd, { authFailureLimit: { max: 10, timeWindow: 10 * 60_000 }, writeLimit: false, lastUseInterval: 86_400_000 })
  const fuzz = new Fuzz(api)
  await seed(fuzz)
  t.comment(`fast-check seed ${SEED} (FUZZ_SEED=${SEED} replays this run)`)
  const started = Date.now()

  await t.test('inject', async t => {
    const held = await holds(t, fuzz, fc.asyncProperty(planArb, async plan => {
      await fuzz.ensureKeyOf(plan)
      await fuzz.run(fuzz.renderer.render(plan), plan.op)
    }), RUNS)
    t.comment(fuzz.histogram())
    await storeHoldsTheModel(t, fuzz)
    if (!held) return
    t.ok((fuzz.statuses.get('429') ?? 0) > 0, `${fuzz.statuses.get('429') ?? 0} requests with bad credentials were refused past the failure limit`)
    t.equal((await api.call({ path: `/namespaces/${AUTH_NAMESPACE}/apikey` })).statusCode, 200, 'and the admin is still served from that address')
    t.ok(fuzz.cases >= RUNS, `${fuzz.cases} cases (at least ${RUNS})`)
    t.ok(fuzz.share2xx() >= 0.25, `${(fuzz.share2xx() * 100).toFixed(1)}% of the answers are 2xx (at least 25%, so the cases reach the store)`)
  })

  await t.test('raw paths over a socket', async t => {
    const before = fuzz.cases
    const socketPlan = fc.record({
      method: fc.constantFrom<Method>('GET', 'GET', 'DELETE', 'PATCH', 'HEAD', 'POST'),
      ns: fc.oneof({ weight: 2, arbitrary: fc.constant('fuzz') }, { weight: 1, arbitrary: socketSegment }),
      name: fc.option(socketSegment, { freq: 4 }),
      tail: fc.option(fc.array(socketSegment, { minLength: 1, maxLength: 2 }), { freq: 4 }),
      user: fc.boolean(),
      pick: fc.nat()
    })
    const held = await holds(t, fuzz, fc.asyncProperty(socketPlan, async ({ method, ns, name, tail, user, pick: n }) => {
      const live = fuzz.model.inNamespace('fuzz')
      const fill = (segment: string) => segment.replaceAll('{name}', pick(live, n)?.name ?? 'none')
      let path = `/namespaces/${fill(ns)}/apikey`
      if (name !== null) path += `/${fill(name)}`
      if (name !== null && tail !== null) path += `/${tail.map(fill).join('/')}`
      const userKey = pick(fuzz.model.ofUser('fuzzer'), n)
      const auth = user && userKey !== undefined ? keyAuth(userKey.secret) : adminAuth
      const payload = method === 'PATCH' || method === 'POST' ? '{"metadata":{"labels":{"via":"socket"}}}' : undefined
      const headers: Record<string, string> = payload === undefined ? {} : { 'content-type': 'application/json' }
      await fuzz.run({ method, path, headers, auth, payload, socket: true }, 'socket')
    }), SOCKET_RUNS)
    await storeHoldsTheModel(t, fuzz)
    if (held) t.ok(fuzz.cases - before >= SOCKET_RUNS, `${fuzz.cases - before} raw paths sent over a socket`)
  })
  t.comment(`${fuzz.cases} requests in ${((Date.now() - started) / 1000).toFixed(1)} s`)
  t.comment(fuzz.histogram())
})

t.test('hostile sizes: a record grown by PATCH, and a namespace of big keys', async t => {
  const api = await buildApp(t, etcd, { lastUseInterval: 86_400_000 })
  const fuzz = new Fuzz(api)
  const big = 'x'.repeat(60_000)
  const key = await api.createKey('grow')
  // Each PATCH adds a label of 60 kB: the record grows until the plugin refuses, with a 4xx.
  let refused: Answer | undefined
  for (let i = 0; i < 40 && refused === undefined; i++) {
    const res = await fuzz.send({ method: 'PATCH', path: `/namespaces/grow/apikey/${key.name}`, headers: { 'content-type': 'application/merge-patch+json' }, auth: adminAuth, payload: JSON.stringify({ metadata: { labels: { [`l${i}`]: big } } }), socket: false })
    if (res.statusCode !== 200) refused = res
  }
  t.ok(refused === undefined || (refused.statusCode >= 400 && refused.statusCode < 500), `a key grown by merge patches is refused with a 4xx (got ${refused?.statusCode ?? 'none'})`, { body: refused?.body })
  const read = await fuzz.send({ method: 'GET', path: `/namespaces/grow/apikey/${key.name}`, headers: {}, auth: adminAuth, socket: false })
  t.equal(read.statusCode, 200, 'the key still reads')

  // 80 keys of 60 kB: more than gRPC's 4 MiB default message in one range read.
  for (let i = 0; i < 80; i++) await api.createKey('big', { url: big })
  for (const query of ['', '?limit=1000', '?limit=100', '?limit=10']) {
    const res = await fuzz.send({ method: 'GET', path: `/namespaces/big/apikey${query}`, headers: {}, auth: adminAuth, socket: false })
    t.equal(res.statusCode, 200, `a list of big keys (${query || 'no limit'}) answers 200`, { body: res.body.slice(0, 200) })
  }
  const other = await fuzz.send({ method: 'POST', path: '/namespaces/small/apikey', headers: {}, auth: adminAuth, socket: false })
  t.equal(other.statusCode, 201, 'and the API still serves other namespaces')
})
