// The million-key section of issue 15 (opt-in: `npm run bench -- --only million`): page and
// verify latency with a thousand keys, then etcd filled to a million keys straight through etcd3,
// a fresh server started on it, the time until its cache holds them all (its /health polled all
// along), its memory per key after a full GC, and page and verify latency again.
import { setTimeout as sleep } from 'node:timers/promises'
import { httpLoad, type HttpRequest } from './http-load.js'
import { httpCall } from './http-call.js'
import { latencySummary, memoryOf as processMemory, type LoadResult } from './measure.js'
import { Rotation, loadKeys, type BenchKey } from './fixtures.js'
import type { BenchContext, BenchServer } from './environment.js'

/** What bench/server.ts answers at /bench/memory. */
interface ServerMemory {
  cache: { live: boolean, keys: number, revision: number } | null
  memory: NodeJS.MemoryUsage
  gc: boolean
}

export interface MillionStage {
  /** API keys in etcd (each a record and a digest entry). */
  keys: number
  /** etcd keys the server's cache held when measured. */
  cacheKeys: number
  /** Bytes after a full GC: heap used, and external memory (the cache's typed arrays among it). */
  heapUsed: number
  external: number
  rss: number
  page: LoadResult
  verify: LoadResult
}

export interface MillionResult {
  small: MillionStage
  large: MillionStage
  /** Seconds to write the keys into etcd. */
  loadSeconds: number
  /** Seconds from the fresh server's start to its cache following etcd with every key. */
  readySeconds: number
  /** Seconds from its start to its /ready answering 200 (its cache may still be loading). */
  listeningSeconds: number
  /** /health while the cache loaded: answers, and their latency in ms. */
  health: { answers: number, failures: number, p50: number, p99: number, max: number }
  /** Bytes per API key: (heap + external at `large`) less (at `small`), over the keys added. */
  bytesPerKey: number
  /** The fresh server's peak RSS (VmHWM) once loaded and measured: what the load needed at most. */
  peakRss: number
  etcdDbBytes?: number
}

const MILLION_NAMESPACE = 'million'
const collection = (ctx: BenchContext, namespace: string) => `${ctx.basePath}/namespaces/${namespace}/apikey`

async function memoryOf (server: BenchServer): Promise<ServerMemory> {
  const res = await httpCall(`${server.url}/bench/memory`)
  if (res.status !== 200) throw new Error(`million: /bench/memory answered ${res.status}`)
  return JSON.parse(res.body) as ServerMemory
}

/** Page latency (first page of 100 of `namespace`) and verify latency (`Key` on a host's route). */
async function stage (ctx: BenchContext, server: BenchServer, keys: number, namespace: string, verified: BenchKey[]): Promise<MillionStage> {
  const { pageDuration, pageConnections, warmup } = ctx.settings
  const load = async (next: () => HttpRequest) => {
    const options = { url: server.url, connections: pageConnections, expect: 200, next }
    await httpLoad({ ...options, seconds: warmup })
    return await httpLoad({ ...options, seconds: pageDuration })
  }
  const page = await load(() => ({ path: `${collection(ctx, namespace)}?limit=100`, headers: { authorization: ctx.admin } }))
  const rotation = new Rotation(verified)
  const verify = await load(() => ({ path: '/bench/protected', headers: { authorization: `Key ${(rotation.take() as BenchKey).secret}` } }))
  const { cache, memory, gc } = await memoryOf(server)
  if (!gc) ctx.log('million: the server runs without --expose-gc: memory is measured without a full GC')
  return { keys, cacheKeys: cache?.keys ?? 0, heapUsed: memory.heapUsed, external: memory.external, rss: memory.rss, page, verify }
}

/** Polls the server until its cache follows etcd with at least `keys` etcd keys, and /health all along. */
async function untilLoaded (server: BenchServer, keys: number, started: number): Promise<{ seconds: number, health: number[], failures: number }> {
  const health: number[] = []
  let failures = 0
  for (;;) {
    const before = performance.now()
    const res = await httpCall(`${server.url}/health`).catch(() => undefined)
    if (res?.status === 200) health.push(performance.now() - before)
    else failures++
    const { cache } = await memoryOf(server)
    if (cache?.live === true && cache.keys >= keys) return { seconds: (performance.now() - started) / 1000, health, failures }
    await sleep(100)
  }
}

export async function runMillion (ctx: BenchContext): Promise<MillionResult> {
  const target = ctx.settings.millionKeys
  // A thousand keys whose secrets are kept (verify), and the small namespace (pages).
  const verified = await ctx.load('read')
  await ctx.load('small')
  const smallServer = await ctx.freshServer('million-small')
  const inEtcd = () => Object.values(ctx.keys).reduce((sum, keys) => sum + keys.length, 0)
  await untilLoaded(smallServer, 2 * inEtcd(), performance.now())
  ctx.log(`million: ${inEtcd()} keys, page and verify latency`)
  const smallStage = await stage(ctx, smallServer, inEtcd(), 'small', verified)
  await smallServer.stop()

  const missing = target - inEtcd()
  ctx.log(`million: writing ${missing} keys into etcd`)
  const loadStarted = performance.now()
  await loadKeys(ctx.client, ctx.etcdKeys, MILLION_NAMESPACE, missing)
  const loadSeconds = (performance.now() - loadStarted) / 1000
  ctx.log(`million: ${target} keys in etcd after ${loadSeconds.toFixed(0)} s; starting a fresh server`)
  const status = await ctx.client.maintenance.status().catch(() => undefined)

  const started = performance.now()
  const server = await ctx.freshServer('million-large')
  const listeningSeconds = (performance.now() - started) / 1000
  const loaded = await untilLoaded(server, 2 * target, started)
  ctx.log(`million: the fresh server's cache holds ${target} keys after ${loaded.seconds.toFixed(1)} s`)
  const largeStage = await stage(ctx, server, target, MILLION_NAMESPACE, verified)
  const peakRss = processMemory(server.pid).peak
  await server.stop()

  const bytesPerKey = (largeStage.heapUsed + largeStage.external - smallStage.heapUsed - smallStage.external) / (largeStage.keys - smallStage.keys)
  return {
    small: smallStage,
    large: largeStage,
    loadSeconds,
    readySeconds: loaded.seconds,
    listeningSeconds,
    health: { answers: loaded.health.length, failures: loaded.failures, ...latencySummary(loaded.health) },
    bytesPerKey,
    peakRss,
    ...(status !== undefined && { etcdDbBytes: Number(status.dbSize) })
  }
}
