// The results of a run as text tables (stdout) and as JSON (bench/results/<timestamp>.json).
import type { LoadResult } from './measure.js'
import type { MillionResult, MillionStage } from './million.js'
import { mib, type BareResult, type ClientCpuResult, type OperationResult, type PageResult, type RevocationResult, type RssResult, type SmallEtcdResult } from './sections.js'

export interface Machine {
  cpus: number
  cpuModel: string
  memoryBytes: number
  node: string
  etcd: string
  kernel: string
  loadAverageAtStart: number[]
  loadAverageAtEnd?: number[]
}

export interface RunResults {
  startedAt: string
  label: string
  machine: Machine
  settings: Record<string, unknown>
  /** Whose dist/ the servers ran. */
  server: { repo: string, commit?: string }
  operations: Record<string, OperationResult>
  /** Keys the main table's etcd held after it (the whole keyspace, other roots included). */
  etcdKeys?: number
  bare?: BareResult
  small?: SmallEtcdResult | { skipped: string }
  pages?: PageResult[]
  rss?: RssResult
  revocation?: RevocationResult
  clientCpu?: ClientCpuResult
  million?: MillionResult
}

/** Columns padded to their widest cell; numbers right-aligned. */
function table (header: string[], rows: string[][]): string {
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map(row => row[i].length)))
  const line = (cells: string[]) => cells.map((cell, i) => i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i])).join('  ')
  return [line(header), ...rows.map(line)].join('\n')
}

const fixed = (value: number | undefined, digits: number) => value === undefined || Number.isNaN(value) ? '-' : value.toFixed(digits)
const rate = (value: number) => fixed(value, 0)
const ms = (value: number) => fixed(value, value < 10 ? 2 : 1)
const micros = (value: number | undefined) => fixed(value, 0)

/** Operations that ended unexpectedly, or ran out of keys, as one note each. */
function notes (name: string, side: string, result: LoadResult): string[] {
  const out: string[] = []
  const unexpected = Object.entries(result.unexpected)
  if (unexpected.length > 0) out.push(`${name} (${side}): unexpected answers ${unexpected.map(([what, n]) => `${what}×${n}`).join(', ')}`)
  if (result.exhausted === true) out.push(`${name} (${side}): ran out of preloaded keys after ${result.seconds.toFixed(1)} s (raise BENCH_DELETE_POOL)`)
  return out
}

export function formatResults (results: RunResults): string {
  const { machine, settings } = results
  const parts: string[] = [
    `${results.label}, ${results.startedAt}`,
    `${machine.cpus} CPUs (${machine.cpuModel}), ${mib(machine.memoryBytes)} MiB, Node ${machine.node}, etcd ${machine.etcd}, ` +
      `load average ${machine.loadAverageAtStart.map(n => n.toFixed(2)).join(' ')} at start`,
    `server: dist/ of ${results.server.repo}${results.server.commit === undefined ? '' : ` (HEAD ${results.server.commit.slice(0, 7)})`}`
  ]
  const operations = Object.entries(results.operations)
  if (operations.length > 0) {
    parts.push('', `Operations at concurrency ${String(settings.connections)}, ${String(settings.duration)} s per side ` +
      '(latency in ms; CPU in µs per operation, by process)')
    parts.push(table(
      ['operation', 'API req/s', 'p50', 'p99', 'raw ops/s', 'p50', 'p99', 'API/raw', 'server CPU', 'autocannon CPU', 'etcd CPU (API)', 'etcd3 client CPU', 'etcd CPU (raw)'],
      operations.map(([name, { api, raw, ratio, cpu }]) => [
        name, rate(api.rate), ms(api.p50), ms(api.p99), rate(raw.rate), ms(raw.p50), ms(raw.p99), fixed(ratio, 2),
        micros(cpu.server), micros(cpu.loadGenerator), micros(cpu.etcdForApi), micros(cpu.rawClient), micros(cpu.etcdForRaw)
      ])
    ))
    const problems = operations.flatMap(([name, { api, raw }]) => [...notes(name, 'API', api), ...notes(name, 'raw', raw)])
    if (problems.length > 0) parts.push(...problems.map(note => `  note: ${note}`))
  }
  const readPath = readPathTable(results)
  if (readPath.length > 0) parts.push('', ...readPath)
  if (results.pages !== undefined) {
    const pages = results.pages
    parts.push('', `Page of 100, at concurrency ${String(settings.pageConnections)}, ${String(settings.pageDuration)} s each: ` +
      'latency in ms, p50 / p99 (pages read)')
    const both = (r: LoadResult) => `${ms(r.p50)} / ${ms(r.p99)} (${r.ops})`
    parts.push(table(
      ['keys in namespace', 'API first page', 'API later page', 'raw first page', 'raw later page'],
      pages.map(p => [String(p.keys), both(p.api.first), both(p.api.next), both(p.raw.first), both(p.raw.next)])
    ))
    const [small, large] = pages
    if (small !== undefined && large !== undefined) {
      const growth = (pick: (p: PageResult) => LoadResult) => fixed(pick(large).p50 / pick(small).p50, 2)
      parts.push(`  p50 at ${large.keys} keys over p50 at ${small.keys}: API first page ${growth(p => p.api.first)}, ` +
        `later page ${growth(p => p.api.next)}; raw first page ${growth(p => p.raw.first)}, later page ${growth(p => p.raw.next)}`)
    }
  }
  if (results.rss !== undefined) {
    const r = results.rss
    parts.push('', `Streamed list of ${r.keys} keys without limit: server RSS idle ${mib(r.idle)} MiB, peak ${mib(r.peak)} MiB, ` +
      `growth ${mib(r.growth)} MiB (${r.method}); ${mib(r.bodyBytes)} MiB sent in ${r.seconds.toFixed(2)} s`)
  }
  if (results.revocation !== undefined) {
    const r = results.revocation
    parts.push('', `Revocation over ${r.keys} keys, from server A's 204 to server B's first 401: p50 ${ms(r.p50)} ms, ` +
      `p99 ${ms(r.p99)} ms, max ${ms(r.max)} ms (one request to B takes ${ms(r.roundTripP50)} ms at p50); ` +
      `requests B accepted after the delete: ${r.acceptedAfterDelete}`)
  }
  if (results.clientCpu !== undefined) {
    const c = results.clientCpu
    const idle = c.etcdIdleMicrosPerMs === undefined ? '' : `, etcd's less its idle ${(c.etcdIdleMicrosPerMs / 10).toFixed(1)}% of a core`
    parts.push('', `Client CPU per etcd read of one key (${c.calls} calls each): µs of CPU per call, of this process and of etcd${idle}; calls/s`)
    const cells = (f: ClientCpuResult['clients'][string]['sequential']) => [micros(f.cpuMicrosPerCall), micros(f.etcdMicrosPerCall), rate(f.callsPerSecond)]
    parts.push(table(
      ['client', 'one at a time: client µs', 'etcd µs', 'calls/s', `${String(settings.connections)} at a time: client µs`, 'etcd µs', 'calls/s'],
      Object.entries(c.clients).map(([name, figures]) => [name, ...cells(figures.sequential), ...cells(figures.concurrent)])
    ))
  }
  if (results.million !== undefined) parts.push('', ...formatMillion(results.million, settings))
  return parts.join('\n') + '\n'
}

const thousands = (n: number) => n.toLocaleString('en-US')

/**
 * get and verify on the main etcd and on the small one, against raw etcd3 and against the bare
 * Fastify route: the read path's two baselines side by side.
 */
function readPathTable (results: RunResults): string[] {
  const { bare, small, settings } = results
  const rows: string[][] = []
  const row = (where: string, name: string, op: OperationResult | undefined) => {
    if (op === undefined) return
    rows.push([where, name, rate(op.api.rate), rate(op.raw.rate), fixed(op.ratio, 2),
      bare === undefined ? '-' : fixed(op.api.rate / bare.load.rate, 2), micros(op.cpu.server), micros(op.cpu.rawClient)])
  }
  const main = `main etcd (${results.etcdKeys === undefined ? '?' : thousands(results.etcdKeys)} keys)`
  row(main, 'get', results.operations.get)
  row(main, 'verify', results.operations.verify)
  if (small !== undefined && 'operations' in small) {
    const where = `small etcd (${thousands(small.etcdKeys)} keys)`
    row(where, 'get', small.operations.get)
    row(where, 'verify', small.operations.verify)
  }
  const out: string[] = []
  if (rows.length > 0) {
    out.push(`Read path at concurrency ${String(settings.connections)}: the API against raw etcd3 (same etcd) and against a bare ` +
      'Fastify route answering the same JSON (CPU in µs per operation)')
    out.push(table(['etcd', 'operation', 'API req/s', 'raw ops/s', 'API/raw', 'API/bare', 'server CPU', 'etcd3 client CPU'], rows))
  }
  if (bare !== undefined) {
    out.push(`  bare Fastify route (the same options and requests as get, no plugin): ${rate(bare.load.rate)} req/s, p50 ${ms(bare.load.p50)} ms, ` +
      `p99 ${ms(bare.load.p99)} ms, ${micros(bare.cpu.server)} µs of server CPU and ${micros(bare.cpu.loadGenerator)} µs of autocannon CPU per request`)
    out.push(...notes('bare', 'route', bare.load).map(note => `  note: ${note}`))
  }
  if (small !== undefined && 'skipped' in small) out.push(`  small etcd: skipped (${small.skipped})`)
  if (small !== undefined && 'operations' in small) {
    const problems = Object.entries(small.operations).flatMap(([name, { api, raw }]) => [...notes(name, 'small, API', api), ...notes(name, 'small, raw', raw)])
    out.push(...problems.map(note => `  note: ${note}`))
  }
  return out
}

function formatMillion (m: MillionResult, settings: Record<string, unknown>): string[] {
  const { small, large } = m
  const both = (r: LoadResult) => `${ms(r.p50)} / ${ms(r.p99)} (${r.ops})`
  const row = (s: MillionStage) => [String(s.keys), String(s.cacheKeys), both(s.page), both(s.verify), mib(s.heapUsed), mib(s.external), mib(s.rss)]
  return [
    `A million keys: ${m.large.keys} keys written into etcd in ${m.loadSeconds.toFixed(0)} s` +
      (m.etcdDbBytes === undefined ? '' : ` (etcd's database ${mib(m.etcdDbBytes)} MiB)`) +
      `; a fresh server answered /ready after ${m.listeningSeconds.toFixed(1)} s and its cache held them all after ${m.readySeconds.toFixed(1)} s`,
    `  /health while the cache loaded: ${m.health.answers} answers (${m.health.failures} failed), p50 ${ms(m.health.p50)} ms, p99 ${ms(m.health.p99)} ms, max ${ms(m.health.max)} ms`,
    `  cache memory per key (a record and its digest entry; heap + external after a full GC, less the ${small.keys}-key server's): ${m.bytesPerKey.toFixed(0)} bytes; ` +
      `the server's peak RSS ${mib(m.peakRss)} MiB`,
    `  page of 100 and verify at concurrency ${String(settings.pageConnections)}, ${String(settings.pageDuration)} s each: latency in ms, p50 / p99 (requests)`,
    table(['keys', 'cache keys', 'page of 100', 'verify (Key)', 'heap MiB', 'external MiB', 'RSS MiB'], [row(small), row(large)]),
    `  p50 at ${large.keys} keys over p50 at ${small.keys}: page ${fixed(large.page.p50 / small.page.p50, 2)}, verify ${fixed(large.verify.p50 / small.verify.p50, 2)}`
  ]
}
