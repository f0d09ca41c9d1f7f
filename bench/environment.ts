// What a benchmark run works with: its settings, etcd, the server processes, the preloaded keys.
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'
import ts from 'typescript'
import type { Etcd3 } from 'etcd3'
import type { EtcdKeys } from '../lib/store/key-builder.js'
import type { EtcdCredentials } from '../lib/server/embedded-etcd.js'
import { freePorts } from '../lib/server/etcd-process.js'
import { REPO, startProcess, waitForReady } from '../dev/processes.js'
import type { BenchKey } from './fixtures.js'
import type { RawOperations } from './raw.js'

/** The operations of the main table, each done through the API and with raw etcd3. */
export const OPERATIONS = ['create', 'get', 'list', 'patch', 'delete', 'verify'] as const
/** The other sections of a run. */
export const EXTRAS = ['bare', 'small', 'pages', 'rss', 'revocation', 'cpu'] as const
/** Sections run only when named with --only: a million keys take a quarter of an hour to write and load. */
export const OPT_IN = ['million'] as const
export type Section = typeof OPERATIONS[number] | typeof EXTRAS[number] | typeof OPT_IN[number]
const SECTIONS: readonly Section[] = [...OPERATIONS, ...EXTRAS, ...OPT_IN]
const DEFAULT_SECTIONS: readonly Section[] = [...OPERATIONS, ...EXTRAS]

export interface Settings {
  /** Seconds of measured load per operation and side. */
  duration: number
  /** Seconds of unmeasured load before each measured one. */
  warmup: number
  /** HTTP connections and raw etcd3 workers: the concurrency of the main table. */
  connections: number
  /** Seconds and concurrency of each page-latency measurement. */
  pageDuration: number
  pageConnections: number
  /** Keys in the large namespace (pages, peak RSS). */
  largeNamespaceKeys: number
  /** Keys in etcd for the million section. */
  millionKeys: number
  /** Keys deleted one by one for the revocation delay. */
  revocationKeys: number
  /** etcd calls per client-CPU measurement. */
  cpuCalls: number
  /** Keys preloaded for each side of the delete operation. */
  deletePool: number
  /** Keys of the small etcd's `read` namespace (section `small`). */
  smallEtcdKeys: number
  /** The server's LOG_LEVEL. */
  logLevel: string
  sections: Section[]
}

/** A wrong setting: told in one line, without a stack. */
export class SettingsError extends Error {}

function numberFrom (env: NodeJS.ProcessEnv, name: string, fallback: number, integer = false): number {
  const text = env[name]
  if (text === undefined || text === '') return fallback
  const value = Number(text)
  if (!Number.isFinite(value) || value <= 0 || (integer && !Number.isInteger(value))) {
    throw new SettingsError(`${name} must be a positive ${integer ? 'integer' : 'number'} (got ${JSON.stringify(text)})`)
  }
  return value
}

/** Settings from BENCH_* variables and the `--only` flag (or BENCH_ONLY). */
export function loadSettings (argv: string[], env: NodeJS.ProcessEnv): Settings {
  let only: string | undefined
  try {
    only = parseArgs({ args: argv, options: { only: { type: 'string' } }, strict: true }).values.only ?? env.BENCH_ONLY
  } catch (err) {
    throw new SettingsError(`${(err as Error).message}; usage: npm run bench [-- --only ${SECTIONS.join(',')}]`)
  }
  const sections = only === undefined || only === ''
    ? [...DEFAULT_SECTIONS]
    : only.split(',').map(name => name.trim())
  const unknown = sections.filter(name => !SECTIONS.includes(name as Section))
  if (unknown.length > 0) throw new SettingsError(`unknown section ${unknown.join(', ')}: choose among ${SECTIONS.join(', ')}`)
  const duration = numberFrom(env, 'BENCH_DURATION', 10)
  const warmup = numberFrom(env, 'BENCH_WARMUP', 1)
  return {
    duration,
    warmup,
    connections: numberFrom(env, 'BENCH_CONNECTIONS', 64, true),
    pageDuration: numberFrom(env, 'BENCH_PAGE_DURATION', 4),
    pageConnections: numberFrom(env, 'BENCH_PAGE_CONNECTIONS', 1, true),
    largeNamespaceKeys: numberFrom(env, 'BENCH_LARGE_KEYS', 100_000, true),
    millionKeys: numberFrom(env, 'BENCH_MILLION_KEYS', 1_000_000, true),
    revocationKeys: numberFrom(env, 'BENCH_REVOCATION_KEYS', 200, true),
    cpuCalls: numberFrom(env, 'BENCH_CPU_CALLS', 2000, true),
    // Enough for 3,000 deletes a second; a side that runs out stops early and says so.
    deletePool: numberFrom(env, 'BENCH_DELETE_POOL', Math.ceil(3000 * (duration + warmup)), true),
    smallEtcdKeys: numberFrom(env, 'BENCH_SMALL_KEYS', 200, true),
    logLevel: env.BENCH_LOG_LEVEL ?? 'warn',
    sections: SECTIONS.filter(section => sections.includes(section))
  }
}

/**
 * The namespaces the benchmark fills with keys, and which sections use each. Those of the main
 * table are filled before it; the large one only when a later section needs it, so that the
 * table is not measured just after etcd has written 100,000 keys.
 */
export const NAMESPACES = {
  /** get and verify: 1,000 keys whose secrets are kept. */
  read: { keys: () => 1000, secrets: true, for: ['get', 'verify'] },
  /** list: the first page; pages: the small namespace. */
  small: { keys: () => 1000, secrets: false, for: ['list', 'pages'] },
  patch: { keys: () => 1000, secrets: false, for: ['patch'] },
  'delete-api': { keys: (s: Settings) => s.deletePool, secrets: false, for: ['delete'] },
  'delete-raw': { keys: (s: Settings) => s.deletePool, secrets: false, for: ['delete'] },
  large: { keys: (s: Settings) => s.largeNamespaceKeys, secrets: false, for: ['pages', 'rss'] }
} satisfies Record<string, { keys: (s: Settings) => number, secrets: boolean, for: Section[] }>
export type Namespace = keyof typeof NAMESPACES

export interface BenchServer {
  url: string
  pid: number
  /** What it printed: its log lines at the run's level and above. */
  output(): string
  stop(): Promise<unknown>
}

export interface BenchContext {
  settings: Settings
  client: Etcd3
  etcdKeys: EtcdKeys
  raw: RawOperations
  endpoints: string[]
  /** The etcd process, when this run started it. */
  etcdPid?: number
  /** What opens that etcd (it is locked, as `npm start` runs it). */
  etcdAuth?: EtcdCredentials
  /** `Authorization` of the admin. */
  admin: string
  basePath: string
  keys: Partial<Record<Namespace, BenchKey[]>>
  /** The keys of a namespace, filled on first use. */
  load(namespace: Namespace): Promise<BenchKey[]>
  /** The server the load goes to; started on first use. */
  serverA(): Promise<BenchServer>
  /** A second server on the same etcd; started on first use. */
  serverB(): Promise<BenchServer>
  /** The bare Fastify route (bench/bare-server.ts), answering what server A answers for a key of `read`; started on first use. */
  bareServer(): Promise<BenchServer>
  /**
   * The same, on an etcd process of its own that holds only `settings.smallEtcdKeys` keys of
   * `read` (section `small`): its own client, raw operations and server A; started on first use.
   */
  smallEtcd(): Promise<BenchContext>
  /** A new server on the same etcd, with --expose-gc (see /bench/memory); the caller stops it. */
  freshServer(name: string): Promise<BenchServer>
  log(message: string): void
}

/**
 * bench/<name>.ts (server.ts, bare-server.ts) as plain JavaScript in `dir`: the server process
 * then runs dist/ as it is, with no TypeScript loader in it.
 */
export function transpileServer (dir: string, name = 'server'): string {
  const source = readFileSync(join(REPO, 'bench', `${name}.ts`), 'utf8')
  const { outputText } = ts.transpileModule(source, {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 }
  })
  const file = join(dir, `bench-${name}.mjs`)
  writeFileSync(file, outputText)
  return file
}

/** Arguments for the servers' `node`; for a profile: BENCH_SERVER_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'. */
const serverNodeArgs = () => process.env.BENCH_SERVER_NODE_ARGS?.split(' ').filter(Boolean) ?? []

export const ADMIN_TOKEN = randomBytes(24).toString('base64url')

/**
 * Starts bench/server.ts (transpiled to `script`) on a free port, running the dist/ of `repo`,
 * and waits until it is ready.
 */
export async function startBenchServer (options: { script: string, repo: string, endpoints: string[], etcdAuth?: EtcdCredentials, root: string, dataDir: string, logLevel: string, nodeArgs?: string[] }): Promise<BenchServer> {
  const [port] = await freePorts(1, '127.0.0.1')
  const url = `http://127.0.0.1:${port}`
  const server = startProcess(process.execPath, [...options.nodeArgs ?? [], ...serverNodeArgs(), options.script], {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? options.dataDir,
    BENCH_REPO: options.repo,
    PORT: String(port),
    HOST: '127.0.0.1',
    DATA_DIR: options.dataDir,
    ETCD_ENDPOINTS: options.endpoints.join(','),
    ...(options.etcdAuth && { ETCD_USERNAME: options.etcdAuth.username, ETCD_PASSWORD: options.etcdAuth.password }),
    ETCD_ROOT: options.root,
    APIKEY_ADMIN_TOKEN: ADMIN_TOKEN,
    LOG_LEVEL: options.logLevel,
    // The revocation section is refused on purpose 200 times from one address.
    AUTH_FAILURE_MAX: '0'
  })
  await waitForReady(server, `${url}/ready`)
  return { url, pid: server.child.pid as number, output: () => server.stdout() + server.stderr(), stop: () => server.stop() }
}

/**
 * Starts bench/bare-server.ts (transpiled to `script`): a bare Fastify route answering `body`,
 * with the standalone server's Fastify options from this repository's dist/, on the same Node.
 */
export async function startBareServer (options: { script: string, body: string, dataDir: string, logLevel: string }): Promise<BenchServer> {
  const [port] = await freePorts(1, '127.0.0.1')
  const url = `http://127.0.0.1:${port}`
  const server = startProcess(process.execPath, [...serverNodeArgs(), options.script], {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? options.dataDir,
    BENCH_REPO: REPO,
    BENCH_BARE_BODY: options.body,
    PORT: String(port),
    HOST: '127.0.0.1',
    DATA_DIR: options.dataDir,
    LOG_LEVEL: options.logLevel
  })
  await waitForReady(server, `${url}/ready`)
  return { url, pid: server.child.pid as number, output: () => server.stdout() + server.stderr(), stop: () => server.stop() }
}
