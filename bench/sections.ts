// The sections of a run: the main table (each operation through the API and with raw etcd3, at
// the same concurrency), page latency by namespace size, peak RSS of a streamed list, revocation
// delay between two servers, and the client CPU of one etcd call.
import { setTimeout as sleep } from 'node:timers/promises'
import { httpLoad, type HttpRequest } from './http-load.js'
import { httpCall } from './http-call.js'
import { closedLoop, latencySummary, perOperation, memoryOf, processCpuMicros, resetPeakRss, type LoadResult } from './measure.js'
import { Rotation, type BenchKey } from './fixtures.js'
import type { BenchContext, OPERATIONS } from './environment.js'

/** One operation through the API and with raw etcd3, and where the CPU time went. */
export interface OperationResult {
  api: LoadResult
  raw: LoadResult
  /** API requests per second over raw etcd3 operations per second. */
  ratio: number
  /** CPU microseconds per operation, by process. */
  cpu: {
    server?: number
    /** autocannon, in the benchmark's own process. */
    loadGenerator?: number
    etcdForApi?: number
    /** The etcd3 client, in the benchmark's own process. */
    rawClient?: number
    etcdForRaw?: number
  }
}

interface OperationPlan {
  /** Requests to the API; undefined when there is no more work. */
  api: (ctx: BenchContext) => () => HttpRequest | undefined
  expect: number
  /** One raw operation; false when there is no more work. */
  raw: (ctx: BenchContext) => () => Promise<boolean | void>
}

const JSON_TYPE = { 'content-type': 'application/json' }
const MERGE_PATCH_TYPE = { 'content-type': 'application/merge-patch+json' }

function keysOf (ctx: BenchContext, namespace: keyof BenchContext['keys']): BenchKey[] {
  const keys = ctx.keys[namespace]
  if (keys === undefined) throw new Error(`the ${namespace} namespace was not loaded`)
  return keys
}

const collection = (ctx: BenchContext, namespace: string) => `${ctx.basePath}/namespaces/${namespace}/apikey`
const item = (ctx: BenchContext, key: BenchKey) => `${collection(ctx, key.namespace)}/${key.name}`

/** A label value that differs on every call, so that no patch is a no-op the store skips. */
let patchCounter = 0
const nextLabels = () => ({ bench: String(++patchCounter) })

export const OPERATION_PLANS: Record<typeof OPERATIONS[number], OperationPlan> = {
  create: {
    expect: 201,
    api: (ctx) => () => ({ method: 'POST', path: collection(ctx, 'create-api'), headers: JSON_TYPE, body: '{}' }),
    raw: (ctx) => () => ctx.raw.create('create-raw')
  },
  get: {
    expect: 200,
    api: (ctx) => {
      const keys = new Rotation(keysOf(ctx, 'read'))
      return () => ({ path: item(ctx, keys.take() as BenchKey) })
    },
    raw: (ctx) => {
      const keys = new Rotation(keysOf(ctx, 'read'))
      return () => ctx.raw.get(keys.take() as BenchKey)
    }
  },
  list: {
    expect: 200,
    api: (ctx) => () => ({ path: `${collection(ctx, 'small')}?limit=100` }),
    raw: (ctx) => async () => { await ctx.raw.page('small', 100) }
  },
  patch: {
    expect: 200,
    api: (ctx) => {
      const keys = new Rotation(keysOf(ctx, 'patch'))
      return () => ({
        method: 'PATCH',
        path: item(ctx, keys.take() as BenchKey),
        headers: MERGE_PATCH_TYPE,
        body: JSON.stringify({ metadata: { labels: nextLabels() } })
      })
    },
    raw: (ctx) => {
      const keys = new Rotation(keysOf(ctx, 'patch'))
      return () => ctx.raw.patch(keys.take() as BenchKey, nextLabels())
    }
  },
  delete: {
    expect: 204,
    api: (ctx) => {
      const keys = new Rotation(keysOf(ctx, 'delete-api'), true)
      return () => {
        const key = keys.take()
        return key && { method: 'DELETE', path: item(ctx, key) }
      }
    },
    raw: (ctx) => {
      const keys = new Rotation(keysOf(ctx, 'delete-raw'), true)
      return async () => {
        const key = keys.take()
        if (key === undefined) return false
        await ctx.raw.delete(key)
      }
    }
  },
  verify: {
    expect: 200,
    api: (ctx) => {
      const keys = new Rotation(keysOf(ctx, 'read'))
      return () => ({ path: '/bench/protected', headers: { authorization: `Key ${(keys.take() as BenchKey).secret}` } })
    },
    raw: (ctx) => {
      const keys = new Rotation(keysOf(ctx, 'read'))
      return () => ctx.raw.verify(keys.take() as BenchKey)
    }
  }
}

const ownCpuMicros = () => {
  const { user, system } = process.cpuUsage()
  return user + system
}

/** CPU microseconds that each of `pids` (and this process) used while `work` ran. */
async function withCpu<T> (pids: Record<string, number | undefined>, work: () => Promise<T>): Promise<{ result: T, cpu: Record<string, number | undefined> }> {
  const before = Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, processCpuMicros(pid)]))
  const ownBefore = ownCpuMicros()
  const result = await work()
  const cpu: Record<string, number | undefined> = { self: ownCpuMicros() - ownBefore }
  for (const [name, pid] of Object.entries(pids)) {
    const after = processCpuMicros(pid)
    cpu[name] = before[name] === undefined || after === undefined ? undefined : after - (before[name] as number)
  }
  return { result, cpu }
}

export async function runOperation (ctx: BenchContext, name: keyof typeof OPERATION_PLANS): Promise<OperationResult> {
  const plan = OPERATION_PLANS[name]
  const { duration, warmup, connections } = ctx.settings
  const server = await ctx.serverA()

  const nextRequest = plan.api(ctx)
  const load = (seconds: number) => httpLoad({ url: server.url, connections, seconds, expect: plan.expect, next: authorized(ctx, nextRequest) })
  ctx.log(`${name}: API, ${warmup} s warm-up and ${duration} s at ${connections} connections`)
  await load(warmup)
  const api = await withCpu({ server: server.pid, etcd: ctx.etcdPid }, () => load(duration))

  const rawOperation = plan.raw(ctx)
  ctx.log(`${name}: raw etcd3, ${warmup} s warm-up and ${duration} s with ${connections} workers`)
  await closedLoop(connections, warmup, rawOperation)
  const raw = await withCpu({ etcd: ctx.etcdPid }, () => closedLoop(connections, duration, rawOperation))

  const perApi = (micros: number | undefined) => perOperation(micros, api.result.ops)
  const perRaw = (micros: number | undefined) => perOperation(micros, raw.result.ops)
  return {
    api: api.result,
    raw: raw.result,
    ratio: api.result.rate / raw.result.rate,
    cpu: {
      server: perApi(api.cpu.server),
      loadGenerator: perApi(api.cpu.self),
      etcdForApi: perApi(api.cpu.etcd),
      rawClient: perRaw(raw.cpu.self),
      etcdForRaw: perRaw(raw.cpu.etcd)
    }
  }
}

/** The bare Fastify route's load, at the main table's concurrency and with its requests. */
export interface BareResult {
  load: LoadResult
  /** CPU microseconds per request: the bare server's, and autocannon's. */
  cpu: { server?: number, loadGenerator?: number }
}

/**
 * The HTTP layer's own limit: the requests of `get` (the admin's bearer token, names in turn) to
 * a bare Fastify route that answers the same JSON body without looking anything up.
 */
export async function runBare (ctx: BenchContext): Promise<BareResult> {
  await ctx.load('read')
  const server = await ctx.bareServer()
  const { duration, warmup, connections } = ctx.settings
  const next = authorized(ctx, OPERATION_PLANS.get.api(ctx))
  const load = (seconds: number) => httpLoad({ url: server.url, connections, seconds, expect: 200, next })
  ctx.log(`bare: a Fastify route with the same answer, ${warmup} s warm-up and ${duration} s at ${connections} connections`)
  await load(warmup)
  const measured = await withCpu({ server: server.pid }, () => load(duration))
  return {
    load: measured.result,
    cpu: { server: perOperation(measured.cpu.server, measured.result.ops), loadGenerator: perOperation(measured.cpu.self, measured.result.ops) }
  }
}

/** get and verify on an etcd that holds only a few hundred keys, and what it held. */
export interface SmallEtcdResult {
  etcdKeys: number
  operations: Record<'get' | 'verify', OperationResult>
}

/**
 * get and verify as in the main table, on an etcd process of its own holding only the small
 * `read` namespace: raw etcd's reads are fastest there, so the API's margin is smallest.
 */
export async function runSmallEtcd (ctx: BenchContext): Promise<SmallEtcdResult | { skipped: string }> {
  let small
  try {
    small = await ctx.smallEtcd()
  } catch (err) {
    ctx.log(`small: skipped: ${(err as Error).message}`)
    return { skipped: (err as Error).message }
  }
  const etcdKeys = await small.client.getAll().count()
  ctx.log(`small: get and verify on an etcd of its own holding ${etcdKeys} keys`)
  return { etcdKeys, operations: { get: await runOperation(small, 'get'), verify: await runOperation(small, 'verify') } }
}

/** Every request as the admin (the bearer token), unless it brings its own Authorization. */
function authorized (ctx: BenchContext, next: () => HttpRequest | undefined): () => HttpRequest | undefined {
  return () => {
    const request = next()
    return request && { ...request, headers: { authorization: ctx.admin, ...request.headers } }
  }
}

export interface PageResult {
  keys: number
  api: { first: LoadResult, next: LoadResult }
  raw: { first: LoadResult, next: LoadResult }
}

/**
 * Latency of a page of 100 in a namespace of 1,000 and one of 100,000 keys: the first page (etcd's
 * newest revision) and a later one (the continue token's revision), through the API and raw.
 */
export async function runPages (ctx: BenchContext): Promise<PageResult[]> {
  const server = await ctx.serverA()
  const { pageDuration, pageConnections, warmup } = ctx.settings
  const results: PageResult[] = []
  for (const namespace of ['small', 'large'] as const) {
    const fresh = ctx.keys[namespace] === undefined
    const keys = (await ctx.load(namespace)).length
    // Let etcd settle after filling the namespace.
    if (fresh) await sleep(2000)
    ctx.log(`pages: ${keys} keys, ${pageDuration} s per measurement at concurrency ${pageConnections}`)
    const first = await httpCall(`${server.url}${collection(ctx, namespace)}?limit=100`, { headers: { authorization: ctx.admin } })
    const token = first.headers['sensu-continue']
    if (first.status !== 200 || typeof token !== 'string') throw new Error(`pages: the first page answered ${first.status} without a continue token`)
    const apiLoad = async (path: string) => {
      const options = { url: server.url, connections: pageConnections, expect: 200, next: () => ({ path, headers: { authorization: ctx.admin } }) }
      await httpLoad({ ...options, seconds: warmup })
      return await httpLoad({ ...options, seconds: pageDuration })
    }
    const firstPage = await ctx.raw.page(namespace, 100)
    const rawLoad = async (operation: () => Promise<unknown>) => {
      await closedLoop(pageConnections, warmup, operation)
      return await closedLoop(pageConnections, pageDuration, operation)
    }
    results.push({
      keys,
      api: {
        first: await apiLoad(`${collection(ctx, namespace)}?limit=100`),
        next: await apiLoad(`${collection(ctx, namespace)}?limit=100&continue=${encodeURIComponent(token)}`)
      },
      raw: {
        first: await rawLoad(() => ctx.raw.page(namespace, 100)),
        next: await rawLoad(() => ctx.raw.page(namespace, 100, { start: firstPage.last + '\0', revision: firstPage.revision }))
      }
    })
  }
  return results
}

export interface RssResult {
  keys: number
  /** Bytes. */
  idle: number
  peak: number
  growth: number
  /** How the peak was found: VmHWM after resetting it, or VmRSS polled every 10 ms. */
  method: string
  seconds: number
  bodyBytes: number
}

/**
 * Peak RSS of a server while one client lists the large namespace without `limit` (the server
 * streams it), against its RSS when idle just before. The second server is used, fresh: the
 * load of the main table does not weigh on its heap.
 */
export async function runRss (ctx: BenchContext): Promise<RssResult> {
  const keys = (await ctx.load('large')).length
  const server = await ctx.serverB()
  const path = `${server.url}${collection(ctx, 'large')}`
  const headers = { authorization: ctx.admin }
  // Its cache loaded first (its growth is not the list's), the route warmed up, then a pause.
  for (;;) {
    const { cache } = JSON.parse((await httpCall(`${server.url}/bench/memory`)).body) as { cache: { live: boolean } | null }
    if (cache?.live !== false) break
    await sleep(100)
  }
  for (let i = 0; i < 20; i++) await httpCall(`${path}?limit=100`, { headers })
  await sleep(1000)
  const idle = memoryOf(server.pid).rss
  const reset = resetPeakRss(server.pid)
  ctx.log(`rss: listing ${keys} keys without limit (idle RSS ${mib(idle)} MiB)`)
  let polled = idle
  const poll = setInterval(() => { polled = Math.max(polled, memoryOf(server.pid).rss) }, 10)
  const started = performance.now()
  const res = await fetch(path, { headers })
  const body = await res.text()
  const seconds = (performance.now() - started) / 1000
  clearInterval(poll)
  polled = Math.max(polled, memoryOf(server.pid).rss)
  if (res.status !== 200) throw new Error(`rss: the list answered ${res.status}`)
  const items = (JSON.parse(body) as unknown[]).length
  if (items !== keys) throw new Error(`rss: the list held ${items} keys, not ${keys}`)
  const peak = reset ? Math.max(memoryOf(server.pid).peak, polled) : polled
  return { keys, idle, peak, growth: peak - idle, method: reset ? 'VmHWM after clear_refs' : 'VmRSS polled every 10 ms', seconds, bodyBytes: Buffer.byteLength(body) }
}

export interface RevocationResult {
  keys: number
  /** Milliseconds from server A's 204 to server B's first refusal (one round trip to B included). */
  p50: number
  p99: number
  max: number
  /** Milliseconds of one accepted request to B just before the delete: the floor of the figures above. */
  roundTripP50: number
  /** Requests B still accepted after A had answered the delete. */
  acceptedAfterDelete: number
}

/**
 * Revocation delay: keys made through server A, each checked to be accepted by server B, deleted
 * through A, then B asked with the key, one request after another, until it refuses it.
 */
export async function runRevocation (ctx: BenchContext): Promise<RevocationResult> {
  const [a, b] = [await ctx.serverA(), await ctx.serverB()]
  const count = ctx.settings.revocationKeys
  ctx.log(`revocation: ${count} keys, deleted through one server, polled on the other`)
  const created: Array<{ name: string, secret: string }> = []
  for (let i = 0; i < count; i++) {
    const res = await httpCall(`${a.url}${collection(ctx, 'revocation')}`, { method: 'POST', headers: { authorization: ctx.admin, ...JSON_TYPE }, body: '{}' })
    if (res.status !== 201) throw new Error(`revocation: create answered ${res.status}`)
    const { metadata, key } = JSON.parse(res.body) as { metadata: { name: string }, key: string }
    created.push({ name: metadata.name, secret: key })
  }
  const delays: number[] = []
  const roundTrips: number[] = []
  let acceptedAfterDelete = 0
  for (const { name, secret } of created) {
    const asKey = { headers: { authorization: `Key ${secret}` } }
    const before = performance.now()
    const check = await httpCall(`${b.url}/bench/protected`, asKey)
    roundTrips.push(performance.now() - before)
    if (check.status !== 200) throw new Error(`revocation: server B refused a live key (${check.status})`)
    const deleted = await httpCall(`${a.url}${collection(ctx, 'revocation')}/${name}`, { method: 'DELETE', headers: { authorization: ctx.admin } })
    const acknowledged = performance.now()
    if (deleted.status !== 204) throw new Error(`revocation: delete answered ${deleted.status}`)
    for (;;) {
      const res = await httpCall(`${b.url}/bench/protected`, asKey)
      if (res.status === 401) break
      if (res.status !== 200) throw new Error(`revocation: server B answered ${res.status}`)
      acceptedAfterDelete++
      if (performance.now() - acknowledged > 60_000) throw new Error('revocation: server B still accepts a key deleted a minute ago')
    }
    delays.push(performance.now() - acknowledged)
  }
  return { keys: count, ...latencySummary(delays), roundTripP50: latencySummary(roundTrips).p50, acceptedAfterDelete }
}

export interface ClientCpuResult {
  calls: number
  /** etcd's CPU while no call was made (µs per ms), taken off its figures per call. */
  etcdIdleMicrosPerMs?: number
  /** CPU microseconds of this process per call, and calls per second, by client and concurrency. */
  clients: Record<string, { sequential: CpuFigure, concurrent: CpuFigure }>
}

interface CpuFigure {
  cpuMicrosPerCall: number
  /** etcd's CPU per call, when this run started etcd. */
  etcdMicrosPerCall?: number
  callsPerSecond: number
}

/**
 * `calls` calls of `operation`, `workers` at a time: this process's CPU per call, etcd's (less
 * its idle rate, in µs per ms), and the rate.
 */
async function measureCalls (calls: number, workers: number, etcdPid: number | undefined, etcdIdle: number | undefined, operation: () => Promise<unknown>): Promise<CpuFigure> {
  let left = calls
  const cpuBefore = ownCpuMicros()
  const etcdBefore = processCpuMicros(etcdPid)
  const started = performance.now()
  await Promise.all(Array.from({ length: workers }, async () => {
    while (left > 0) {
      left--
      await operation()
    }
  }))
  const elapsed = performance.now() - started
  const seconds = elapsed / 1000
  const etcdAfter = processCpuMicros(etcdPid)
  const etcdBusy = etcdBefore === undefined || etcdAfter === undefined || etcdIdle === undefined
    ? undefined
    : Math.max(0, etcdAfter - etcdBefore - etcdIdle * elapsed)
  return {
    cpuMicrosPerCall: (ownCpuMicros() - cpuBefore) / calls,
    etcdMicrosPerCall: perOperation(etcdBusy, calls),
    callsPerSecond: calls / seconds
  }
}

/** A token of etcd's JSON gateway for a locked etcd: its `Authorization` header. */
async function gatewayToken (endpoint: string, auth: { username: string, password: string }): Promise<string> {
  const res = await fetch(`${endpoint.replace(/\/$/, '')}/v3/auth/authenticate`, { method: 'POST', headers: JSON_TYPE, body: JSON.stringify({ name: auth.username, password: auth.password }) })
  const { token } = await res.json() as { token?: string }
  if (token === undefined) throw new Error(`etcd's gateway did not authenticate: HTTP ${res.status}`)
  return token
}

/**
 * Client CPU of one etcd read of one key: the etcd3 client (gRPC) against etcd's JSON gateway
 * (POST /v3/kv/range) through Node's fetch, node:http with keep-alive, and undici.request when
 * an undici package can be imported; one call at a time and at the main concurrency.
 */
export async function runClientCpu (ctx: BenchContext): Promise<ClientCpuResult> {
  const { cpuCalls: calls, connections } = ctx.settings
  const key = ctx.etcdKeys.record('cpu', 'probe')
  await ctx.client.put(key).value('{}')
  const gatewayUrl = `${ctx.endpoints[0].replace(/\/$/, '')}/v3/kv/range`
  const gatewayBody = JSON.stringify({ key: Buffer.from(key).toString('base64') })
  const gatewayHeaders = { ...JSON_TYPE, ...(ctx.etcdAuth && { authorization: await gatewayToken(ctx.endpoints[0], ctx.etcdAuth) }) }
  const found = (answer: unknown) => {
    if ((answer as { kvs?: unknown[] }).kvs?.length !== 1) throw new Error('cpu: the key was not found')
  }
  const clients: Record<string, () => Promise<void>> = {
    'etcd3 (gRPC)': async () => {
      const res = await ctx.client.kv.range({ key: Buffer.from(key) })
      found(res)
    },
    'gateway, fetch': async () => {
      const res = await fetch(gatewayUrl, { method: 'POST', body: gatewayBody, headers: gatewayHeaders })
      found(await res.json())
    },
    'gateway, node:http': async () => {
      const res = await httpCall(gatewayUrl, { method: 'POST', body: gatewayBody, headers: gatewayHeaders })
      found(JSON.parse(res.body))
    }
  }
  // Not a dependency of this package: measured when some other package brought it in.
  const undici = await import('undici').catch(() => undefined)
  if (undici !== undefined) {
    clients['gateway, undici.request'] = async () => {
      const res = await undici.request(gatewayUrl, { method: 'POST', body: gatewayBody, headers: gatewayHeaders })
      found(await res.body.json())
    }
  }
  // etcd's own background work (its GC, bbolt commits) is not the calls': its idle rate is taken off.
  const idleBefore = processCpuMicros(ctx.etcdPid)
  await sleep(IDLE_SAMPLE_MS)
  const idleAfter = processCpuMicros(ctx.etcdPid)
  const etcdIdle = idleBefore === undefined || idleAfter === undefined ? undefined : (idleAfter - idleBefore) / IDLE_SAMPLE_MS
  ctx.log(`cpu: ${calls} reads of one key per measurement, by ${Object.keys(clients).join(', ')}` +
    (etcdIdle === undefined ? '' : `; etcd uses ${(etcdIdle / 10).toFixed(1)}% of a core when idle`))
  const results: ClientCpuResult['clients'] = {}
  for (const [name, operation] of Object.entries(clients)) {
    await measureCalls(Math.min(calls, 300), connections, ctx.etcdPid, etcdIdle, operation)
    results[name] = {
      sequential: await measureCalls(calls, 1, ctx.etcdPid, etcdIdle, operation),
      concurrent: await measureCalls(calls, connections, ctx.etcdPid, etcdIdle, operation)
    }
  }
  return { calls, etcdIdleMicrosPerMs: etcdIdle, clients: results }
}

/** How long etcd's idle CPU rate is sampled. */
const IDLE_SAMPLE_MS = 2000

export const mib = (bytes: number) => (bytes / 1024 / 1024).toFixed(1)
