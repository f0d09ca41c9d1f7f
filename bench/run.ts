// The benchmark of issue 6: `npm run bench [-- --only get,list]`. Starts etcd (or uses
// ETCD_ENDPOINTS) and the server built in dist/ as separate processes, measures each operation
// through the API and with raw etcd3 in the same run, prints the tables and writes them as JSON
// to bench/results/. Method and settings: bench/RESULTS.md.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Etcd3 } from 'etcd3'
import { EtcdKeys, rangeEnd } from '../lib/store/key-builder.js'
import { startEmbeddedEtcd, type EmbeddedEtcd } from '../lib/server/embedded-etcd.js'
import { freePorts } from '../lib/server/etcd-process.js'
import { REPO, ensureBuilt } from '../dev/processes.js'
import {
  ADMIN_TOKEN, NAMESPACES, OPERATIONS, SettingsError, loadSettings, startBareServer, startBenchServer, transpileServer,
  type BenchContext, type BenchServer, type Namespace, type Section
} from './environment.js'
import { loadKeys } from './fixtures.js'
import { RawOperations } from './raw.js'
import { closeConnections, httpCall } from './http-call.js'
import { runBare, runClientCpu, runOperation, runPages, runRevocation, runRss, runSmallEtcd } from './sections.js'
import { runMillion } from './million.js'
import { formatResults, type Machine, type RunResults } from './report.js'

/** The pause after filling etcd and before measuring. */
const SETTLE_MS = 2000

const LABEL = process.env.BENCH_LABEL ?? 'fastify-etcd-apikeys benchmark'

const isOperation = (section: Section) => (OPERATIONS as readonly Section[]).includes(section)

const log = (message: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`)

function cpuModel (): string {
  const match = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))
  return match?.[1] ?? cpus()[0]?.model ?? 'unknown'
}

/** The commit a checkout is at (uncommitted changes not told), if it is one. */
function commitOf (repo: string): string | undefined {
  const res = spawnSync('git', ['-C', repo, 'rev-parse', 'HEAD'], { encoding: 'utf8' })
  return res.status === 0 ? res.stdout.trim() : undefined
}

async function etcdVersion (endpoint: string): Promise<string> {
  const res = await httpCall(`${endpoint.replace(/\/$/, '')}/version`)
  return (JSON.parse(res.body) as { etcdserver?: string }).etcdserver ?? 'unknown'
}

async function main () {
  const settings = loadSettings(process.argv.slice(2), process.env)
  const selected = (section: Section) => settings.sections.includes(section)
  const startedAt = new Date()
  const loadAverageAtStart = loadavg()
  // The servers run this repository's dist/, or that of another checkout (to compare builds).
  const serverRepo = process.env.BENCH_SERVER_REPO || REPO
  if (serverRepo === REPO) await ensureBuilt()
  if (!['server/server.js', 'server.js'].some(file => existsSync(join(serverRepo, 'dist', file)))) throw new Error(`no ${join(serverRepo, 'dist', 'server', 'server.js')}: build it first`)

  const resultsFolder = join(REPO, 'bench', 'results')
  mkdirSync(resultsFolder, { recursive: true })
  const stamp = startedAt.toISOString().replace(/[:.]/g, '-')
  const dir = await mkdtemp(join(tmpdir(), 'apikeys-bench-'))
  const cleanups: Array<() => Promise<unknown> | unknown> = [() => rm(dir, { recursive: true, force: true })]
  try {
    let embedded: EmbeddedEtcd | undefined
    const external = process.env.ETCD_ENDPOINTS
    if (external === undefined || external === '') {
      const [clientPort, peerPort] = await freePorts(2, '127.0.0.1')
      embedded = await startEmbeddedEtcd({ dataDir: join(dir, 'etcd'), clientPort, peerPort, logFile: join(dir, 'etcd.log') })
      cleanups.push(() => embedded?.stop())
      log(`etcd started, pid ${embedded.pid}, ${embedded.endpoints[0]}`)
    }
    const endpoints = embedded?.endpoints ?? (external as string).split(',')
    // Its own root on a shared etcd, removed at the end.
    const root = `/apikeys-bench-${startedAt.getTime()}`
    const etcdAuth = embedded?.auth
    const client = new Etcd3({ hosts: endpoints, ...(etcdAuth && { auth: etcdAuth }) })
    const etcdKeys = new EtcdKeys(root)
    cleanups.push(async () => {
      if (embedded === undefined) await client.kv.deleteRange({ key: Buffer.from(root + '/'), range_end: rangeEnd(root + '/') })
      client.close()
    })

    const script = transpileServer(dir)
    const servers: Record<string, Promise<BenchServer>> = {}
    /** A server process started once, on first use; stopped at the end, its output kept beside the results. */
    const serverOnce = (name: string, start: () => Promise<BenchServer>) => {
      servers[name] ??= start().then(started => {
        cleanups.push(async () => {
          await started.stop()
          // Kept beside the results: a 503 is logged with its cause (etcd unavailable, deadline).
          const output = started.output()
          if (output !== '') {
            const file = join(resultsFolder, `${stamp}-server-${name}.log`)
            writeFileSync(file, output)
            log(`server ${name} printed ${output.split('\n').length - 1} lines: ${file}`)
          }
        })
        log(`server ${name} started, pid ${started.pid}, ${started.url}`)
        return started
      })
      return servers[name]
    }
    const server = (name: 'a' | 'b') => serverOnce(name.toUpperCase(), () =>
      startBenchServer({ script, repo: serverRepo, endpoints, etcdAuth, root, dataDir: join(dir, `server-${name}`), logLevel: settings.logLevel }))

    let small: Promise<BenchContext> | undefined
    const ctx: BenchContext = {
      settings,
      client,
      etcdKeys,
      raw: new RawOperations(client, etcdKeys),
      endpoints,
      etcdPid: embedded?.pid,
      etcdAuth,
      admin: `Bearer ${ADMIN_TOKEN}`,
      basePath: '/api/core/v2',
      keys: {},
      async load (namespace) {
        const loaded = ctx.keys[namespace]
        if (loaded !== undefined) return loaded
        const plan = NAMESPACES[namespace]
        const count = plan.keys(settings)
        const started = performance.now()
        const keys = await loadKeys(client, etcdKeys, namespace, count, { withSecrets: plan.secrets })
        const seconds = (performance.now() - started) / 1000
        log(`loaded ${count} keys into ${namespace} in ${seconds.toFixed(1)} s (${Math.round(count / seconds)} keys/s)`)
        ctx.keys[namespace] = keys
        return keys
      },
      serverA: () => server('a'),
      serverB: () => server('b'),
      bareServer: () => serverOnce('bare', async () => {
        // The body server A answers for a key: what the bare route answers too.
        const [key] = await ctx.load('read')
        const answer = await httpCall(`${(await ctx.serverA()).url}${ctx.basePath}/namespaces/${key.namespace}/apikey/${key.name}`, { headers: { authorization: ctx.admin } })
        if (answer.status !== 200) throw new Error(`bare: server A answered ${answer.status} for a key`)
        return await startBareServer({ script: transpileServer(dir, 'bare-server'), body: answer.body, dataDir: join(dir, 'server-bare'), logLevel: settings.logLevel })
      }),
      smallEtcd: () => {
        small ??= (async () => {
          const [clientPort, peerPort] = await freePorts(2, '127.0.0.1')
          const etcd = await startEmbeddedEtcd({ dataDir: join(dir, 'etcd-small'), clientPort, peerPort, logFile: join(dir, 'etcd-small.log') })
          cleanups.push(() => etcd.stop())
          log(`small etcd started, pid ${etcd.pid}, ${etcd.endpoints[0]}`)
          const smallClient = new Etcd3({ hosts: etcd.endpoints, auth: etcd.auth })
          cleanups.push(() => smallClient.close())
          const keys = await loadKeys(smallClient, etcdKeys, 'read', settings.smallEtcdKeys, { withSecrets: true })
          log(`loaded ${keys.length} keys into the small etcd's read namespace`)
          const smallServer = serverOnce('small', () =>
            startBenchServer({ script, repo: serverRepo, endpoints: etcd.endpoints, etcdAuth: etcd.auth, root, dataDir: join(dir, 'server-small'), logLevel: settings.logLevel }))
          const unused = () => { throw new Error('the small etcd has only its read namespace and one server') }
          return {
            ...ctx,
            client: smallClient,
            raw: new RawOperations(smallClient, etcdKeys),
            endpoints: etcd.endpoints,
            etcdPid: etcd.pid,
            etcdAuth: etcd.auth,
            keys: { read: keys },
            load: unused,
            serverA: () => smallServer,
            serverB: unused,
            bareServer: unused,
            smallEtcd: unused,
            freshServer: unused
          }
        })()
        return small
      },
      freshServer: (name) => serverOnce(name, () =>
        startBenchServer({ script, repo: serverRepo, endpoints, etcdAuth, root, dataDir: join(dir, `server-${name}`), logLevel: settings.logLevel, nodeArgs: ['--expose-gc'] })),
      log
    }

    const tableNamespaces = (Object.keys(NAMESPACES) as Namespace[])
      .filter(namespace => (NAMESPACES[namespace].for as readonly Section[]).some(section => isOperation(section) && selected(section)))
    for (const namespace of tableNamespaces) await ctx.load(namespace)
    // Let etcd finish with what it was just given before anything is timed.
    if (tableNamespaces.length > 0) await sleep(SETTLE_MS)

    const machine: Machine = {
      cpus: cpus().length,
      cpuModel: cpuModel(),
      memoryBytes: totalmem(),
      node: process.version,
      etcd: await etcdVersion(endpoints[0]),
      kernel: release(),
      loadAverageAtStart
    }
    const results: RunResults = {
      startedAt: startedAt.toISOString(),
      label: LABEL,
      machine,
      settings: { ...settings, etcd: embedded ? 'started by the run' : 'ETCD_ENDPOINTS' },
      server: { repo: serverRepo, commit: commitOf(serverRepo) },
      operations: {}
    }

    for (const operation of OPERATIONS) {
      if (selected(operation)) results.operations[operation] = await runOperation(ctx, operation)
    }
    // What the main table's etcd held: raw reads slow down as it grows, the cache's do not.
    results.etcdKeys = await client.getAll().count()
    if (selected('bare')) results.bare = await runBare(ctx)
    if (selected('small')) results.small = await runSmallEtcd(ctx)
    // The sections that need the large namespace come last: etcd's CPU per call grows with what it
    // holds, and the figures before them are measured with it as the main table found it.
    if (selected('cpu')) results.clientCpu = await runClientCpu(ctx)
    if (selected('revocation')) results.revocation = await runRevocation(ctx)
    if (selected('pages')) results.pages = await runPages(ctx)
    if (selected('rss')) results.rss = await runRss(ctx)
    if (selected('million')) results.million = await runMillion(ctx)
    machine.loadAverageAtEnd = loadavg()

    const text = formatResults(results)
    process.stdout.write('\n' + text)
    const file = join(resultsFolder, `${stamp}.json`)
    writeFileSync(file, JSON.stringify({ ...results, text }, null, 2) + '\n')
    log(`results written to ${file}`)
  } finally {
    closeConnections()
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup()
      } catch (err) {
        log(`cleanup failed: ${(err as Error).message}`)
      }
    }
  }
}

try {
  await main()
} catch (err) {
  process.stderr.write(`bench: ${err instanceof SettingsError ? err.message : (err as Error).stack ?? String(err)}\n`)
  process.exitCode = 1
}
