// etcd as a process of the binary on PATH (dying with this process), restorable from a snapshot,
// or as a gRPC proxy.
import { execFile, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { closeSync, openSync, readFileSync, rmSync } from 'node:fs'
import { rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { findOnPath, freePorts, spawnWithParent, waitForHealth } from '../../lib/server/etcd-process.js'
import { etcdFlags } from './etcd-flags.js'
import { STARTUP_TIMEOUT_MS, STOP_TIMEOUT_S, atExit, lastLines, ownTempDir, type ControllableEtcd, type EtcdHandle } from './etcd-harness.js'

export async function startBinaryEtcd (etcdPath: string): Promise<ControllableEtcd> {
  const dir = await ownTempDir()
  const [clientPort, peerPort] = await freePorts(2) as [number, number]
  const endpoint = `http://127.0.0.1:${clientPort}`
  const args = etcdFlags({ name: 'etcd', dataDir: join(dir, 'data'), clientUrl: endpoint, peerUrl: `http://127.0.0.1:${peerPort}` })
  return await runEtcdProcess({ etcdPath, dir, args, endpoint })
}

/**
 * An etcd process with `args`, its log in `dir`; resolves once `endpoint`/health is ok. close()
 * (or this process's exit) kills it and removes `dir`.
 */
export async function runEtcdProcess ({ etcdPath, dir, args, endpoint }: { etcdPath: string, dir: string, args: string[], endpoint: string }): Promise<ControllableEtcd> {
  const logFile = join(dir, 'etcd.log')

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
      // The kernel kills etcd if this process dies in any way, even by SIGKILL (where setpriv
      // exists); the exit hook above only covers normal exits.
      child = spawnWithParent(etcdPath, args, { cwd: dir, stdio: ['ignore', log, log] }, 'KILL')
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
