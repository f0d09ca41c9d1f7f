// etcd for the tests: from ETCD_ENDPOINTS, from an image run by testcontainers,
// or from an `etcd` binary on PATH, whichever is found first (see sharedEtcd).
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { closeSync, openSync, readFileSync, rmSync } from 'node:fs'
import { mkdtemp, readdir, rename, rm } from 'node:fs/promises'
import { createServer, type Server } from 'node:net'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import { ETCD_COMPACTION_FLAGS, findOnPath } from '../../lib/server/embedded-etcd.js'
import {
  GenericContainer,
  getContainerRuntimeClient,
  type BoundPorts,
  type ContainerRuntimeClient,
  type WaitStrategy
} from 'testcontainers'

export type EtcdSource = 'ETCD_ENDPOINTS' | 'testcontainers' | 'binary'

export interface EtcdHandle {
  endpoints: string[]
  source: EtcdSource
  /** Stops what it started; a no-op for ETCD_ENDPOINTS. */
  close(): Promise<void>
}

export interface ControllableEtcd extends EtcdHandle {
  source: 'testcontainers' | 'binary'
  /** etcd stops answering, but its port still accepts TCP connections. */
  freeze(): Promise<void>
  /** Undoes freeze(). */
  thaw(): Promise<void>
  /** etcd is stopped: its address refuses connections. */
  stop(): Promise<void>
  /** Starts etcd again on the same address with the same data; resolves once /health is ok. */
  start(): Promise<void>
}

const DEFAULT_IMAGE = 'gcr.io/etcd-development/etcd:v3.5.17'
const LOCAL_IMAGE_HINT = 'fastify-etcd-apikeys/etcd:local'
const STARTUP_TIMEOUT_MS = 30_000
const STOP_TIMEOUT_S = 10
/** Docker label on every container started here; its value is `<hostname>:<pid>` of the test process. */
const CONTAINER_LABEL = 'fastify-etcd-apikeys.test-etcd'
const OWNER = `${hostname()}:${process.pid}`
/** Temp dirs of the binary path are named `<TEMP_PREFIX><pid>-XXXXXX`. */
const TEMP_PREFIX = 'etcd-test-'

// Ryuk (testcontainers' reaper) runs from an image that usually cannot be pulled
// where these tests run; this module removes its own containers instead (close(),
// process exit, and orphans of dead test processes on the next run).
// Set TESTCONTAINERS_RYUK_DISABLED=false to use Ryuk anyway.
process.env.TESTCONTAINERS_RYUK_DISABLED ??= 'true'

// ---------------------------------------------------------------------------
// Public API

let shared: { etcd: Promise<ControllableEtcd>, users: number } | undefined

/**
 * An etcd for tests that only read and write keys. Within one test process,
 * calls share one etcd; it is stopped when the last handle is closed.
 */
export async function sharedEtcd (): Promise<EtcdHandle> {
  const fromEnv = process.env.ETCD_ENDPOINTS?.split(',').map((e) => e.trim()).filter(Boolean)
  if (fromEnv !== undefined && fromEnv.length > 0) {
    announce(`ETCD_ENDPOINTS at ${fromEnv.join(',')}`)
    return { endpoints: fromEnv, source: 'ETCD_ENDPOINTS', close: async () => {} }
  }
  if (shared === undefined) {
    const etcd = startOwnEtcd({ fixedPort: false })
    shared = { etcd, users: 0 }
    etcd.catch(() => { shared = undefined })
  }
  const entry = shared
  entry.users++
  const etcd = await entry.etcd
  let closed = false
  return {
    endpoints: etcd.endpoints,
    source: etcd.source,
    async close () {
      if (closed) return
      closed = true
      if (--entry.users === 0) {
        if (shared === entry) shared = undefined
        await etcd.close()
      }
    }
  }
}

/**
 * An etcd of the caller's own (never ETCD_ENDPOINTS), for tests that freeze,
 * stop, restart or compact it.
 */
export async function dedicatedEtcd (): Promise<ControllableEtcd> {
  return await startOwnEtcd({ fixedPort: true })
}

// ---------------------------------------------------------------------------
// Choosing a source

async function startOwnEtcd ({ fixedPort }: { fixedPort: boolean }): Promise<ControllableEtcd> {
  return await startWithFallback({
    container: async (image) => await startContainerEtcd(image, fixedPort),
    binary: startBinaryEtcd
  })
}

/** The two ways to start an etcd of the tests' own (cluster.ts starts three members each way). */
export interface EtcdStarters<T extends { endpoints: string[] }> {
  /** What is started, for the messages; default one etcd. */
  what?: string
  container (image: string): Promise<T>
  binary (etcdPath: string): Promise<T>
}

/** Starts through testcontainers, or else with the etcd binary on PATH; says on stderr which. */
export async function startWithFallback<T extends { endpoints: string[] }> ({ what, container, binary }: EtcdStarters<T>): Promise<T> {
  const image = process.env.ETCD_IMAGE ?? DEFAULT_IMAGE
  const suffix = what === undefined ? '' : `, ${what},`
  const failures: string[] = []

  try {
    const etcd = await container(image)
    announce(`testcontainers (image ${image})${suffix} at ${etcd.endpoints.join(',')}`)
    return etcd
  } catch (err) {
    const why = oneLine(err)
    failures.push(`testcontainers (image ${image}): ${why}`)
    announce(`testcontainers unavailable (image ${image}): ${why}; trying an etcd binary on PATH`)
  }

  try {
    const etcdPath = findOnPath('etcd')
    if (etcdPath === undefined) throw new Error('no etcd on PATH')
    const etcd = await binary(etcdPath)
    announce(`binary (${etcdPath})${suffix} at ${etcd.endpoints.join(',')}`)
    return etcd
  } catch (err) {
    failures.push(`etcd binary: ${oneLine(err)}`)
  }

  throw new Error([
    'No etcd for the tests. Tried:',
    ...failures.map((f) => `  - ${f}`),
    'Any one of these will do:',
    '  - put an etcd binary on PATH, e.g. `apt-get install etcd-server` (Debian/Ubuntu);',
    '  - start Docker, so that testcontainers can run an etcd image: ETCD_IMAGE (default',
    `    ${DEFAULT_IMAGE}); with no registry at hand, build one from the Debian`,
    `    binaries with \`test/etcd-image/build.sh\` and set ETCD_IMAGE=${LOCAL_IMAGE_HINT};`,
    '  - run etcd yourself and set ETCD_ENDPOINTS=http://127.0.0.1:2379 (comma-separated;',
    '    used by sharedEtcd() only: tests that need dedicatedEtcd() still need one of the above).'
  ].join('\n'))
}

function announce (what: string): void {
  process.stderr.write(`# etcd: ${what}\n`)
}

// ---------------------------------------------------------------------------
// Shared by the container and binary paths

export interface MemberFlags {
  name: string
  dataDir: string
  /** Where it listens for clients, and what it advertises. */
  clientUrl: string
  /** What it advertises to its peers. */
  peerUrl: string
  /** Where it listens for peers; default peerUrl (a container member listens on every interface). */
  listenPeerUrl?: string
  /** `name=peerUrl` of every member, comma-separated; default this member alone. */
  initialCluster?: string
}

export function etcdFlags ({ name, dataDir, clientUrl, peerUrl, listenPeerUrl = peerUrl, initialCluster = `${name}=${peerUrl}` }: MemberFlags): string[] {
  return [
    `--name=${name}`,
    `--data-dir=${dataDir}`,
    `--listen-client-urls=${clientUrl}`,
    `--advertise-client-urls=${clientUrl}`,
    `--listen-peer-urls=${listenPeerUrl}`,
    `--initial-advertise-peer-urls=${peerUrl}`,
    `--initial-cluster=${initialCluster}`,
    '--initial-cluster-state=new',
    '--logger=zap',
    '--log-level=warn',
    // As every etcd this project starts (SPEC.md, Containment).
    ...ETCD_COMPACTION_FLAGS
  ]
}

/**
 * Polls `${endpoint}/health` until etcd says it is healthy. `checkAlive` is
 * called before each try and throws if etcd is gone for good, so that a
 * crashed etcd fails fast instead of at the timeout.
 */
export async function waitForHealth (
  endpoint: string,
  timeoutMs: number,
  checkAlive: () => Promise<void> | void
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let last = 'no answer'
  for (;;) {
    await checkAlive()
    try {
      const res = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(1000) })
      const body = await res.text()
      if (res.ok && (JSON.parse(body) as { health?: unknown }).health === 'true') return
      last = `HTTP ${res.status} ${body.trim()}`
    } catch (err) {
      last = oneLine(err)
    }
    if (Date.now() >= deadline) {
      throw new Error(`etcd at ${endpoint} not healthy after ${timeoutMs} ms (last: ${last})`)
    }
    await sleep(100)
  }
}

/** Ports that are free right now on all interfaces (asked for together, so they differ). */
export async function freePorts (count: number): Promise<number[]> {
  const servers: Server[] = []
  try {
    for (let i = 0; i < count; i++) {
      const server = createServer()
      servers.push(server)
      server.listen(0, '0.0.0.0')
      await once(server, 'listening')
    }
    return servers.map((s) => {
      const address = s.address()
      if (address === null || typeof address === 'string') throw new Error('no port')
      return address.port
    })
  } finally {
    await Promise.all(servers.map(async (s) => await new Promise((resolve) => s.close(resolve))))
  }
}

/** Whether a process of this host still runs (for leftovers of test processes that were killed). */
function pidAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * Cleanups that must run even if a test never calls close(). They must be synchronous. They run
 * last-added first, so that what was made first (a network, a folder) goes after what it holds.
 */
const atExit = new Set<() => void>()
process.once('exit', () => {
  for (const cleanup of [...atExit].reverse()) {
    try { cleanup() } catch {}
  }
})

// ---------------------------------------------------------------------------
// testcontainers

const CLIENT_PORT = 2379

/** dockerode's Container, named without importing dockerode (not a dependency of ours). */
type DockerContainer = Parameters<WaitStrategy['waitUntilReady']>[0]

/** testcontainers' wait strategy, done by waitForHealth. */
class EtcdHealthWait implements WaitStrategy {
  private timeoutMs = STARTUP_TIMEOUT_MS
  constructor (private readonly host: string) {}

  async waitUntilReady (container: DockerContainer, boundPorts: BoundPorts): Promise<void> {
    const endpoint = `http://${this.host}:${boundPorts.getBinding(CLIENT_PORT)}`
    await waitForHealth(endpoint, this.timeoutMs, async () => await assertRunning(container))
  }

  withStartupTimeout (ms: number): this { this.timeoutMs = ms; return this }
  isStartupTimeoutSet (): boolean { return true }
  getStartupTimeout (): number { return this.timeoutMs }
}

async function assertRunning (container: DockerContainer): Promise<void> {
  const { State } = await container.inspect()
  if (State.Running) return
  const logs = await container.logs({ stdout: true, stderr: true, tail: 5 })
  throw new Error(`container exited with code ${State.ExitCode}: ${lastLines(demuxDockerLogs(logs))}`)
}

async function startContainerEtcd (image: string, fixedPort: boolean): Promise<ControllableEtcd> {
  const docker = await dockerHost()
  return await runContainerMember(docker, {
    image,
    command: etcdFlags({ name: 'etcd', dataDir: '/etcd-data', clientUrl: `http://0.0.0.0:${CLIENT_PORT}`, peerUrl: 'http://127.0.0.1:2380' }),
    hostPort: fixedPort ? (await freePorts(1) as [number])[0] : undefined
  })
}

/** The container runtime, and the address of the host its published ports are on. */
export interface DockerHost { runtime: ContainerRuntimeClient, host: string }

/** Connects to the container runtime, and removes what dead test processes of this host left there. */
export async function dockerHost (): Promise<DockerHost> {
  const runtime = await getContainerRuntimeClient()
  await removeOrphans(runtime)
  // The runtime reports 'localhost' for a local socket; Node may resolve that to ::1.
  const host = runtime.info.containerRuntime.host === 'localhost' ? '127.0.0.1' : runtime.info.containerRuntime.host
  return { runtime, host }
}

export interface ContainerMemberOptions {
  image: string
  /** etcd's flags. */
  command: string[]
  /** The host port for the client port; default a random one, which changes over a docker stop/start. */
  hostPort?: number
  /** A user-defined network, and the name the member has on it. */
  network?: { name: string, alias: string }
}

/** One etcd container, removed by close() or at the latest when this process exits; resolves once /health is ok. */
export async function runContainerMember ({ runtime, host }: DockerHost, options: ContainerMemberOptions): Promise<ControllableEtcd> {
  const { image, command, hostPort, network } = options
  const definition = new GenericContainer(image)
    // Upstream images have CMD etcd and no entrypoint, the local one (build.sh)
    // has ENTRYPOINT etcd: setting both makes them behave the same.
    .withEntrypoint(['/usr/local/bin/etcd'])
    .withCommand(command)
    .withExposedPorts(hostPort === undefined ? CLIENT_PORT : { container: CLIENT_PORT, host: hostPort })
    .withLabels({ [CONTAINER_LABEL]: OWNER })
    .withWaitStrategy(new EtcdHealthWait(host))
  if (network !== undefined) definition.withNetworkMode(network.name).withNetworkAliases(network.alias)
  const started = await definition.start()

  const container = runtime.container.getById(started.getId())
  const endpoint = `http://${host}:${started.getMappedPort(CLIENT_PORT)}`
  const removeAtExit = (): void => { dockerSync(runtime, ['rm', '--force', '--volumes', container.id]) }
  atExit.add(removeAtExit)
  let frozen = false

  const etcd: ControllableEtcd = {
    endpoints: [endpoint],
    source: 'testcontainers',
    // docker refuses to pause a paused container or unpause a running one.
    async freeze () { if (!frozen) await container.pause(); frozen = true },
    async thaw () { if (frozen) await container.unpause(); frozen = false },
    async stop () {
      if (frozen) await etcd.thaw()
      await container.stop({ t: STOP_TIMEOUT_S })
    },
    async start () {
      await container.start()
      await waitForHealth(endpoint, STARTUP_TIMEOUT_MS, async () => await assertRunning(container))
    },
    async close () {
      if (!atExit.delete(removeAtExit)) return
      if (frozen) await etcd.thaw()
      await container.remove({ force: true, v: true })
    }
  }
  return etcd
}

/** A user-defined bridge network carrying this process's label, removed by remove() or at exit. */
export async function createNetwork ({ runtime }: DockerHost): Promise<{ name: string, remove(): Promise<void> }> {
  const name = `etcd-test-${process.pid}-${Math.random().toString(36).slice(2, 8)}`
  const network = await runtime.network.create({ Name: name, Driver: 'bridge', Labels: { [CONTAINER_LABEL]: OWNER } })
  const removeAtExit = (): void => { dockerSync(runtime, ['network', 'rm', network.id]) }
  atExit.add(removeAtExit)
  return {
    name,
    async remove () {
      if (atExit.delete(removeAtExit)) await runtime.network.remove(network)
    }
  }
}

/** Removes containers, then networks, left by test processes of this host that died without cleaning up. */
async function removeOrphans (runtime: ContainerRuntimeClient): Promise<void> {
  const { dockerode } = runtime.container
  const filters = { label: [CONTAINER_LABEL] }
  const orphaned = (labels: Record<string, string> | undefined): boolean => {
    const [owner, pid] = (labels?.[CONTAINER_LABEL] ?? '').split(':')
    return owner === hostname() && !pidAlive(Number(pid))
  }
  const containers = await dockerode.listContainers({ all: true, filters })
  await Promise.all(containers.filter((info) => orphaned(info.Labels)).map(async (info) =>
    await runtime.container.getById(info.Id).remove({ force: true, v: true }).catch(() => {})))
  const networks = await dockerode.listNetworks({ filters })
  await Promise.all(networks.filter((info) => orphaned(info.Labels)).map(async (info) =>
    await dockerode.getNetwork(info.Id).remove().catch(() => {})))
}

/** Synchronous, for process exit: the docker CLI, pointed at the socket dockerode uses. */
function dockerSync (runtime: ContainerRuntimeClient, args: string[]): void {
  const { socketPath } = runtime.container.dockerode.modem as { socketPath?: unknown }
  const hostArgs = typeof socketPath === 'string' ? ['--host', `unix://${socketPath}`] : []
  spawnSync('docker', [...hostArgs, ...args], { stdio: 'ignore', timeout: 10_000 })
}

/** The output of `docker logs` for a container without a TTY comes in frames with an 8-byte header. */
function demuxDockerLogs (raw: Buffer): string {
  let text = ''
  for (let i = 0; i + 8 <= raw.length;) {
    const size = raw.readUInt32BE(i + 4)
    text += raw.subarray(i + 8, i + 8 + size).toString()
    i += 8 + size
  }
  return text
}

// ---------------------------------------------------------------------------
// etcd binary on PATH

async function startBinaryEtcd (etcdPath: string): Promise<ControllableEtcd> {
  const dir = await ownTempDir()
  const [clientPort, peerPort] = await freePorts(2) as [number, number]
  const endpoint = `http://127.0.0.1:${clientPort}`
  const args = etcdFlags({ name: 'etcd', dataDir: join(dir, 'data'), clientUrl: endpoint, peerUrl: `http://127.0.0.1:${peerPort}` })
  return await runEtcdProcess({ etcdPath, dir, args, endpoint })
}

/** A temporary folder of this process (`<TEMP_PREFIX><pid>-XXXXXX`), once those of dead test processes are removed. */
export async function ownTempDir (): Promise<string> {
  await removeOrphanDirs()
  return await mkdtemp(join(tmpdir(), `${TEMP_PREFIX}${process.pid}-`))
}

/**
 * An etcd process with `args`, its log in `dir`; resolves once `endpoint`/health is ok. close()
 * (or this process's exit) kills it and removes `dir`.
 */
export async function runEtcdProcess ({ etcdPath, dir, args, endpoint }: { etcdPath: string, dir: string, args: string[], endpoint: string }): Promise<ControllableEtcd> {
  const logFile = join(dir, 'etcd.log')
  // With setpriv (util-linux), the kernel kills etcd if this process dies in
  // any way, even by SIGKILL; the exit hook below only covers normal exits.
  const setpriv = findOnPath('setpriv')
  const [command, commandArgs] = setpriv === undefined
    ? [etcdPath, args]
    : [setpriv, ['--pdeathsig', 'KILL', '--', etcdPath, ...args]]

  let child: ChildProcess | undefined
  const running = (): ChildProcess | undefined =>
    child !== undefined && child.exitCode === null && child.signalCode === null ? child : undefined
  const killAtExit = (): void => {
    running()?.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  }
  atExit.add(killAtExit)

  const launch = async (): Promise<void> => {
    const log = openSync(logFile, 'a')
    try {
      child = spawn(command, commandArgs, { cwd: dir, stdio: ['ignore', log, log] })
    } finally {
      closeSync(log)
    }
    // A test that forgets close() must not keep the process alive: the exit hook kills etcd.
    child.unref()
    const launched = child
    await waitForHealth(endpoint, STARTUP_TIMEOUT_MS, () => {
      if (launched.exitCode !== null || launched.signalCode !== null) {
        throw new Error(`etcd exited (${launched.exitCode ?? launched.signalCode}): ${lastLines(readFileSync(logFile, 'utf8'))}`)
      }
    })
  }
  const signal = (sig: NodeJS.Signals): void => {
    const proc = running()
    if (proc === undefined) throw new Error('etcd is not running')
    proc.kill(sig)
  }
  const terminate = async (): Promise<void> => {
    const proc = running()
    if (proc === undefined) return
    proc.ref()
    const exited = once(proc, 'exit')
    proc.kill('SIGCONT') // a frozen etcd would not act on SIGTERM
    proc.kill('SIGTERM')
    const timer = setTimeout(() => proc.kill('SIGKILL'), STOP_TIMEOUT_S * 1000)
    await exited
    clearTimeout(timer)
  }

  try {
    await launch()
  } catch (err) {
    await terminate()
    atExit.delete(killAtExit)
    await rm(dir, { recursive: true, force: true })
    throw err
  }

  return {
    endpoints: [endpoint],
    source: 'binary',
    async freeze () { signal('SIGSTOP') },
    async thaw () { signal('SIGCONT') },
    stop: terminate,
    async start () {
      if (running() !== undefined) throw new Error('etcd is already running')
      await launch()
    },
    async close () {
      if (!atExit.delete(killAtExit)) return
      await terminate()
      await rm(dir, { recursive: true, force: true })
    }
  }
}

export interface RestorableEtcd extends ControllableEtcd {
  source: 'binary'
  /** `etcdctl snapshot save` into a file of its temp dir; resolves to the file. */
  saveSnapshot(): Promise<string>
  /**
   * Stops etcd, replaces its data with `etcdctl snapshot restore <file> [...flags]` (same name and
   * peer URL), and starts it again on the same ports; resolves once /health is ok.
   */
  restore(file: string, flags?: string[]): Promise<void>
}

/** The binaries restorableEtcd() needs that are not on PATH. */
const missingForRestore = (): string[] => ['etcd', 'etcdctl'].filter(name => findOnPath(name) === undefined)

/**
 * An etcd process (the binary on PATH) that a test can restore from a snapshot, as an operator
 * does. A container would come back on other host ports, so this is the binary only.
 */
export async function restorableEtcd (): Promise<RestorableEtcd> {
  const etcdPath = findOnPath('etcd')
  const etcdctl = findOnPath('etcdctl')
  if (etcdPath === undefined || etcdctl === undefined) throw new Error(`restorableEtcd() needs ${missingForRestore().join(' and ')} on PATH: apt-get install etcd-server etcd-client`)
  const dir = await ownTempDir()
  const [clientPort, peerPort] = await freePorts(2) as [number, number]
  const endpoint = `http://127.0.0.1:${clientPort}`
  const member = { name: 'etcd', dataDir: join(dir, 'data'), clientUrl: endpoint, peerUrl: `http://127.0.0.1:${peerPort}` }
  const etcd = await runEtcdProcess({ etcdPath, dir, args: etcdFlags(member), endpoint })
  const run = (args: string[]) => promisify(execFile)(etcdctl, args, { env: { ...process.env, ETCDCTL_API: '3' } })
  let saved = 0
  return {
    ...etcd,
    source: 'binary',
    async saveSnapshot () {
      const file = join(dir, `snapshot-${++saved}.db`)
      await run([`--endpoints=${endpoint}`, 'snapshot', 'save', file])
      return file
    },
    async restore (file, flags = []) {
      await etcd.stop()
      const restored = join(dir, 'restored')
      await rm(restored, { recursive: true, force: true })
      await run(['snapshot', 'restore', file, `--name=${member.name}`, `--data-dir=${restored}`,
        `--initial-cluster=${member.name}=${member.peerUrl}`, `--initial-advertise-peer-urls=${member.peerUrl}`, ...flags])
      await rm(member.dataDir, { recursive: true, force: true })
      await rename(restored, member.dataDir)
      await etcd.start()
    }
  }
}

/**
 * `etcd grpc-proxy start` in front of `backend` (the etcd binary on PATH): its clients' watches
 * are its own, and outlive a restart of the etcd behind it. stop() and start() cut its clients
 * off from etcd and back, on the same port.
 */
export async function grpcProxy (backend: EtcdHandle): Promise<ControllableEtcd> {
  const etcdPath = findOnPath('etcd')
  if (etcdPath === undefined) throw new Error('grpcProxy() needs etcd on PATH')
  const dir = await ownTempDir()
  const [port] = await freePorts(1) as [number]
  const endpoint = `http://127.0.0.1:${port}`
  const args = ['grpc-proxy', 'start', `--endpoints=${backend.endpoints.map(e => new URL(e).host).join(',')}`, `--listen-addr=127.0.0.1:${port}`]
  return await runEtcdProcess({ etcdPath, dir, args, endpoint })
}

/** Removes data dirs left by test processes that died without cleaning up (etcd's WAL alone takes 64 MB). */
async function removeOrphanDirs (): Promise<void> {
  const orphans = (await readdir(tmpdir())).filter((name) => {
    const pid = name.startsWith(TEMP_PREFIX) ? Number(name.slice(TEMP_PREFIX.length).split('-')[0]) : NaN
    return Number.isInteger(pid) && !pidAlive(pid)
  })
  await Promise.all(orphans.map(async (name) => await rm(join(tmpdir(), name), { recursive: true, force: true })))
}

// ---------------------------------------------------------------------------
// Messages

export function oneLine (err: unknown): string {
  let message = err instanceof Error ? err.message : String(err)
  // fetch() and dockerode put the useful part in `cause`.
  const cause = err instanceof Error ? err.cause : undefined
  if (cause instanceof Error && !message.includes(cause.message)) message += `: ${cause.message}`
  return message.split('\n').map((l) => l.trim()).filter(Boolean).join(' | ')
}

function lastLines (text: string, count = 3): string {
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean)
  return lines.slice(-count).join(' | ') || '(no output)'
}
