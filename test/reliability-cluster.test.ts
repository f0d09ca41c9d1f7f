// Issue 5, points 1 to 3: the standalone server on a three-member etcd cluster, under load, while
// the leader is stopped, while two members are stopped (no quorum), and while a member or the whole
// cluster is frozen. Whatever was answered 201 is there afterwards and its secret authenticates;
// a failure is a 503 with Retry-After, within the issue's bounds. Each scenario prints a line
// "reliability: ..." with its figures, for the README. The server runs as its own process, so
// that the load does not share its event loop.
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { etcdCluster, type ClusterMember } from './helpers/cluster.js'
import { inParallel, runLoad, send, type LoadOptions, type LoadRequest, type Outcome } from './helpers/load.js'
import { ensureBuilt, freePorts, logLines, startServer, tempDir, waitForReady, type ServerProcess } from './helpers/standalone.js'

/** The server's deadline for all of one request's etcd work (REQUEST_TIMEOUT_MS, its default). */
const REQUEST_TIMEOUT = 5000
/** The issue's bound on any answer: the deadline plus one second. */
const ANSWER_BOUND = REQUEST_TIMEOUT + 1000
/** The load's own timeout per request, well above the bound, so that a hang shows as a hang. */
const CLIENT_TIMEOUT = 3 * REQUEST_TIMEOUT
/** Scenario 1: the longest the failures may last once the leader is stopped. */
const FAILURE_WINDOW_BOUND = 5000
/** Scenario 3: the share of the requests made while a member is frozen that must succeed. */
const FROZEN_SUCCESS_SHARE = 0.9
/** Not a bound of the issue: how long to wait for a 201 once etcd is back, before calling it stuck. */
const RECOVERY_LIMIT = 30_000
/** Load before a fault, so that the fault hits a server in its stride. */
const LEAD_IN = 2000
/** How long the load runs without quorum. */
const OUTAGE_MS = 6000
const VERIFY_CONCURRENCY = 16

const ADMIN_TOKEN = randomBytes(24).toString('base64url')
const COLLECTION = '/api/core/v2/namespaces/default/apikey'
const ADMIN = { authorization: `Bearer ${ADMIN_TOKEN}` }
const CREATE: LoadRequest = { method: 'POST', path: COLLECTION, headers: { ...ADMIN, 'content-type': 'application/json' }, body: '{}' }

interface CreatedKey { name: string, secret: string }

const readAsAdmin = (key: CreatedKey): LoadRequest => ({ path: `${COLLECTION}/${key.name}`, headers: ADMIN })
/** A key read with its own secret as the credentials: both the record and its digest must be there. */
const readWithOwnSecret = (key: CreatedKey): LoadRequest => ({ path: `${COLLECTION}/${key.name}`, headers: { authorization: `Key ${key.secret}` } })

await ensureBuilt()
const cluster = await etcdCluster()
t.teardown(() => cluster.close())

// ---------------------------------------------------------------------------
// Helpers

interface Api { url: string, server: ServerProcess }

/** A server of the scenario's own (so that no client state carries over), on all three members. */
async function startApi (t: Test): Promise<Api> {
  await cluster.healthy()
  const [port] = await freePorts(1)
  const server = startServer({
    ETCD_ENDPOINTS: cluster.endpoints.join(','),
    APIKEY_ADMIN_TOKEN: ADMIN_TOKEN,
    PORT: String(port),
    REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT),
    DATA_DIR: await tempDir(t),
    LOG_LEVEL: 'warn'
  })
  t.teardown(() => server.stop())
  const url = `http://127.0.0.1:${port}`
  await waitForReady(server, `${url}/ready`)
  return { url, server }
}

/** Starts a fault; returns what ends it, which teardown calls too if the test did not. */
async function inflict (t: Test, begin: () => Promise<void>, end: () => Promise<void>): Promise<() => Promise<void>> {
  let ended: Promise<void> | undefined
  const endOnce = async (): Promise<void> => { ended ??= end(); await ended }
  t.teardown(endOnce)
  await begin()
  return endOnce
}

const load = async (url: string, options: Omit<LoadOptions, 'url' | 'timeoutMs'>) => await runLoad({ url, timeoutMs: CLIENT_TIMEOUT, ...options })

/** Creates and reads back, in turn: every other request is the key just created, read with its own secret. */
const createThenRead: LoadOptions['next'] = ({ previous }) => {
  const key = previous?.request === CREATE ? createdKey(previous) : undefined
  return key === undefined ? CREATE : readWithOwnSecret(key)
}

function createdKey (outcome: Outcome): CreatedKey | undefined {
  if (outcome.request !== CREATE || outcome.status !== 201) return undefined
  const body = JSON.parse(outcome.body ?? '') as { key: string, metadata: { name: string } }
  return { name: body.metadata.name, secret: body.key }
}

const succeeded = (o: Outcome): boolean => o.status !== undefined && o.status < 300
const held = (o: Outcome): number => Math.round(o.end - o.start)
const is503 = (o: Outcome): boolean => o.status === 503 && o.headers?.['retry-after'] !== undefined
const count5xx = (outcomes: Outcome[]): number => outcomes.filter((o) => (o.status ?? 0) >= 500).length

/** One outcome, short, for a failed assertion's message. */
function describe (o: Outcome, since = 0): string {
  const what = o.status === undefined ? o.error : `${o.status} ${o.body?.slice(0, 120)}`
  return `${o.request.method ?? 'GET'} ${o.request.path.replace(COLLECTION, '…')} at ${Math.round(o.start - since)} ms, held ${held(o)} ms: ${what}`
}

/** The failures that are not what the issue allows: a 503 with Retry-After, or (`timeoutAllowed`) the client's timeout. */
const unexpectedFailures = (outcomes: Outcome[], since: number, timeoutAllowed: boolean): string[] =>
  outcomes.filter((o) => !succeeded(o) && !is503(o) && !(timeoutAllowed && o.timedOut === true)).map((o) => describe(o, since))

/** Requests held past the issue's bound. */
const heldTooLong = (outcomes: Outcome[], since: number): string[] =>
  outcomes.filter((o) => o.end - o.start > ANSWER_BOUND).map((o) => describe(o, since))

/** Reads every key back with its own secret; the keys not found, with what was answered. */
async function missingKeys (url: string, keys: CreatedKey[]): Promise<string[]> {
  const missing = await inParallel(keys, VERIFY_CONCURRENCY, async (key) => {
    const res = await send(url, readWithOwnSecret(key), CLIENT_TIMEOUT)
    const name = res.status === 200 ? (JSON.parse(res.body ?? '') as { metadata?: { name?: string } }).metadata?.name : undefined
    return name === key.name ? [] : [`${key.name}: ${describe(res)}`]
  })
  return missing.flat()
}

/** The first failure's start to the last failure's end, relative to `since`. */
function failureSpan (outcomes: Outcome[], since: number): { first: number, last: number } | undefined {
  const failures = outcomes.filter((o) => !succeeded(o))
  if (failures.length === 0) return undefined
  return {
    first: Math.round(Math.min(...failures.map((o) => o.start)) - since),
    last: Math.round(Math.max(...failures.map((o) => o.end)) - since)
  }
}

/** The line for the README; `tail` says what failed, and when. */
function figures (t: Test, scenario: string, acknowledged: number, found: number, outcomes: Outcome[], tail: string): void {
  t.comment(`reliability: ${scenario}: acknowledged ${acknowledged}, found afterwards ${found}, 5xx ${count5xx(outcomes)}, ${tail}`)
}

function failuresOver (outcomes: Outcome[], since: number, fault: string): string {
  const failures = outcomes.filter((o) => !succeeded(o)).length
  const span = failureSpan(outcomes, since)
  return span === undefined ? `failures 0 after the ${fault}` : `failures ${failures} over ${span.first}..${span.last} ms after the ${fault}`
}

/** The first failures, enough to tell what went wrong without flooding the output. */
const firstFew = (lines: string[]): string[] => lines.slice(0, 10).concat(lines.length > 10 ? [`… and ${lines.length - 10} more`] : [])

/** Milliseconds from `since` until a majority names a leader other than `old` (an election's end, for the output). */
async function newLeaderAfter (old: ClusterMember, since: number): Promise<number> {
  while ((await cluster.leader()) === old) await sleep(100)
  return Math.round(performance.now() - since)
}

/** Successes and failures per second from `since` (negative: before it), to show where a failure window lies. */
function timeline (outcomes: Outcome[], since: number): string {
  const seconds = new Map<number, [number, number]>()
  for (const o of outcomes) {
    const second = Math.floor((o.start - since) / 1000)
    const [ok, failed] = seconds.get(second) ?? [0, 0]
    seconds.set(second, succeeded(o) ? [ok + 1, failed] : [ok, failed + 1])
  }
  return [...seconds].sort(([a], [b]) => a - b).map(([second, [ok, failed]]) => `${second}s ${ok}/${failed}`).join(', ')
}

/** What the server logged as the causes of its 503s, the most frequent first. */
function causes (api: Api): string {
  const counts = new Map<string, number>()
  for (const line of logLines(api.server.stdout())) {
    if (line.msg !== 'etcd unavailable') continue
    const cause = String(line.err?.message ?? line.err?.type ?? 'unknown').slice(0, 100)
    counts.set(cause, (counts.get(cause) ?? 0) + 1)
  }
  return [...counts].sort(([, a], [, b]) => b - a).map(([cause, n]) => `${n}× ${cause}`).join('; ') || 'none'
}

/** Where a scenario's failures lie, and why the server says they failed: for the output, not asserted. */
function explain (t: Test, scenario: string, api: Api, outcomes: Outcome[], since: number): void {
  t.comment(`${scenario}: ok/failed by second of start, from the fault: ${timeline(outcomes, since)}`)
  t.comment(`${scenario}: causes of the 503s logged by the server: ${causes(api)}`)
}

async function checkAlive (t: Test, api: Api): Promise<void> {
  t.equal(api.server.child.exitCode ?? api.server.child.signalCode, null, 'the server process is up', { stderr: api.server.stderr().slice(-2000) })
}

/**
 * Scenarios 2 and 3's last part: with no quorum (`begin`), every request is a 503 in time, /ready
 * says not ready, /health and the process stay up; after `end`, the same server serves again.
 */
async function withoutQuorum (t: Test, scenario: string, outageMs: number, begin: () => Promise<void>, end: () => Promise<void>): Promise<void> {
  const api = await startApi(t)
  const before = createdKey(await send(api.url, CREATE, CLIENT_TIMEOUT))
  if (before === undefined) throw new Error('could not create a key before the fault')
  // Every kind of etcd work: a write, a read, and the lookup of a key's secret.
  const requests = [CREATE, readAsAdmin(before), readWithOwnSecret(before)]

  const faultAt = performance.now()
  const endFault = await inflict(t, begin, end)
  const lostAt = performance.now()
  const during = await load(api.url, { clients: 8, durationMs: outageMs, next: ({ n }) => requests[n % requests.length] as LoadRequest })
  const ready = await send(api.url, { path: '/ready' }, CLIENT_TIMEOUT)
  const health = await send(api.url, { path: '/health' }, CLIENT_TIMEOUT)
  await checkAlive(t, api)

  const backAt = performance.now()
  await endFault()
  const etcdBack = performance.now()
  // Polled with creates until one is answered 201; anything but a 503 meanwhile fails at once.
  const polled: Outcome[] = []
  for (;;) {
    const res = await send(api.url, CREATE, CLIENT_TIMEOUT)
    polled.push(res)
    if (succeeded(res) || !is503(res) || performance.now() - etcdBack > RECOVERY_LIMIT) break
    await sleep(250)
  }
  const served = polled.at(-1) as Outcome
  const after = await load(api.url, { clients: 4, durationMs: 2000, next: createThenRead })
  const acknowledged = [...polled, ...after].flatMap((o) => createdKey(o) ?? [])
  const missing = await missingKeys(api.url, acknowledged)

  figures(t, scenario, acknowledged.length, acknowledged.length - missing.length, [...during, ...polled, ...after],
    `failures ${during.filter((o) => !succeeded(o)).length} of ${during.length} requests without quorum, ` +
    `answered within ${Math.max(...during.map(held))} ms; served again ${Math.round(served.end - etcdBack)} ms after etcd was back`)
  t.comment(`${scenario}: the fault took ${Math.round(lostAt - faultAt)} ms, ending it ${Math.round(etcdBack - backAt)} ms; ` +
    `/ready ${ready.status} in ${held(ready)} ms; ${polled.length} polls until a 201`)
  explain(t, scenario, api, [...during, ...polled, ...after], lostAt)

  t.ok(during.length > 0, `${during.length} requests made without quorum`)
  t.same(firstFew(during.filter((o) => !is503(o)).map((o) => describe(o, lostAt))), [], 'every request without quorum is a 503 with Retry-After')
  t.same(firstFew(heldTooLong(during, lostAt)), [], `none is held past requestTimeout + 1 s (${ANSWER_BOUND} ms)`)
  t.equal(ready.status, 503, '/ready says not ready', { body: ready.body })
  t.equal(health.status, 200, '/health stays up', { body: health.body ?? health.error })
  t.equal(served.status, 201, `requests succeed again once etcd is back, without a restart (after ${polled.length} tries)`, { last: describe(served, etcdBack) })
  t.same(firstFew(after.filter((o) => !succeeded(o)).map((o) => describe(o, etcdBack))), [], `and so do all ${after.length} requests after that`)
  t.same(firstFew(missing), [], 'every key created is readable with its secret')
  await checkAlive(t, api)
}

// ---------------------------------------------------------------------------
// Scenarios

t.test('1. the leader stopped while 16 clients create keys for 20 s', async (t) => {
  const api = await startApi(t)
  const leader = await cluster.leader()
  const running = load(api.url, { clients: 16, durationMs: 20_000, next: () => CREATE })
  await sleep(LEAD_IN)
  const stoppedAt = performance.now()
  const elected = newLeaderAfter(leader, stoppedAt)
  const restart = await inflict(t, async () => await leader.stop(), async () => await leader.start())
  const stopMs = performance.now() - stoppedAt
  const samples = await running
  await restart()

  // Afterwards: every acknowledged key, read with its own secret (its digest index entry is there).
  const acknowledged = samples.flatMap((o) => createdKey(o) ?? [])
  const missing = await missingKeys(api.url, acknowledged)
  const span = failureSpan(samples, stoppedAt)

  figures(t, 'leader stopped', acknowledged.length, acknowledged.length - missing.length, samples, failuresOver(samples, stoppedAt, 'fault'))
  t.comment(`leader stopped: ${leader.name}, in ${Math.round(stopMs)} ms; a new leader ${await elected} ms after the stop began; ` +
    `${samples.length} requests, the longest held ${Math.max(...samples.map(held))} ms`)
  explain(t, 'leader stopped', api, samples, stoppedAt)

  t.ok(acknowledged.length > 0, `${acknowledged.length} creates acknowledged`)
  t.same(firstFew(missing), [], 'every key answered 201 is readable, and its secret authenticates')
  t.same(firstFew(unexpectedFailures(samples, stoppedAt, true)), [], 'every failure is a 503 with Retry-After or the client\'s timeout, none a 500')
  t.ok(span === undefined || span.last - span.first <= FAILURE_WINDOW_BOUND,
    `the failures last at most ${FAILURE_WINDOW_BOUND} ms (${span === undefined ? 'none' : `${span.first}..${span.last} ms after the stop`})`)
  await checkAlive(t, api)
})

t.test('2. quorum lost: two members stopped, then started again', async (t) => {
  const leader = await cluster.leader()
  // The leader is left alone, so that it goes on believing it leads for an election timeout.
  const stopped = cluster.members.filter((m) => m !== leader)
  await withoutQuorum(t, 'quorum lost', OUTAGE_MS,
    async () => { await Promise.all(stopped.map(async (m) => await m.stop())) },
    async () => { await Promise.all(stopped.map(async (m) => await m.start())) })
})

for (const role of ['follower', 'leader'] as const) {
  t.test(`3. a ${role} frozen for 10 s while 8 clients create and read keys`, async (t) => {
    const FROZEN_MS = 10_000
    const api = await startApi(t)
    const leader = await cluster.leader()
    const member = role === 'leader' ? leader : cluster.members.find((m) => m !== leader)
    if (member === undefined) throw new Error('no follower')
    const running = load(api.url, { clients: 8, durationMs: LEAD_IN + FROZEN_MS + 2000, next: createThenRead })
    await sleep(LEAD_IN)
    const frozenAt = performance.now()
    const elected = role === 'leader' ? newLeaderAfter(member, frozenAt) : undefined
    const thaw = await inflict(t, async () => await member.freeze(), async () => await member.thaw())
    await sleep(FROZEN_MS - (performance.now() - frozenAt))
    const thawedAt = performance.now()
    await thaw()
    const samples = await running

    const whileFrozen = samples.filter((o) => o.start >= frozenAt && o.start < thawedAt)
    const share = whileFrozen.filter(succeeded).length / whileFrozen.length
    const acknowledged = samples.flatMap((o) => createdKey(o) ?? [])
    const missing = await missingKeys(api.url, acknowledged)

    figures(t, `${role} frozen`, acknowledged.length, acknowledged.length - missing.length, samples,
      `${failuresOver(samples, frozenAt, 'freeze')}; ${(share * 100).toFixed(1)}% of ${whileFrozen.length} requests made while frozen succeeded`)
    t.comment(`${role} frozen: ${member.name}; ${elected === undefined ? '' : `a new leader ${await elected} ms after the freeze; `}` +
      `${samples.length} requests, the longest held ${Math.max(...samples.map(held))} ms`)
    explain(t, `${role} frozen`, api, samples, frozenAt)

    t.ok(whileFrozen.length > 0, `${whileFrozen.length} requests made while frozen`)
    t.ok(share >= FROZEN_SUCCESS_SHARE, `at least ${FROZEN_SUCCESS_SHARE * 100}% of them succeed (${(share * 100).toFixed(1)}%)`)
    t.same(firstFew(heldTooLong(samples, frozenAt)), [], `no request is held past requestTimeout + 1 s (${ANSWER_BOUND} ms)`)
    t.same(firstFew(unexpectedFailures(samples, frozenAt, false)), [], 'every failure is a 503 with Retry-After')
    t.same(firstFew(missing), [], 'every key answered 201 is readable, and its secret authenticates')
    await checkAlive(t, api)
  })
}

t.test('3. the whole cluster frozen, then thawed', async (t) => {
  await withoutQuorum(t, 'cluster frozen', OUTAGE_MS,
    async () => { await Promise.all(cluster.members.map(async (m) => await m.freeze())) },
    async () => { await Promise.all(cluster.members.map(async (m) => await m.thaw())) })
})
