import { spawn, type ChildProcess } from 'node:child_process'
import { accessSync, constants, createWriteStream, mkdirSync } from 'node:fs'
import { once } from 'node:events'
import { createServer } from 'node:net'
import { delimiter, dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

export interface EmbeddedEtcdOptions {
  dataDir: string
  clientPort: number
  peerPort: number
  /** Where etcd's own output goes. */
  logFile: string
  /** The etcd binary; default `etcd` from PATH. */
  binary?: string
  startTimeout?: number
}

export interface EmbeddedEtcd {
  endpoints: string[]
  pid: number
  stop(): Promise<void>
}

export class EtcdNotFoundError extends Error {
  constructor () {
    super([
      'no etcd to use: ETCD_ENDPOINTS is not set and there is no etcd binary on PATH. Either',
      '  - install etcd (apt-get install etcd-server, or brew install etcd) and start again: the server runs it for you;',
      '  - set ETCD_ENDPOINTS=http://host:2379 to use an etcd cluster you run; or',
      '  - run the whole stack with docker compose up.'
    ].join('\n'))
  }
}

/** An executable named `name` in one of `extra` or of PATH's folders. */
export function findOnPath (name: string, extra: string[] = []): string | undefined {
  for (const folder of [...extra, ...(process.env.PATH ?? '').split(delimiter)]) {
    if (folder === '') continue
    const candidate = join(folder, name)
    try {
      accessSync(candidate, constants.X_OK)
      return candidate
    } catch {}
  }
  return undefined
}

async function portInUse (port: number): Promise<boolean> {
  const probe = createServer()
  return await new Promise(resolve => {
    probe.once('error', () => resolve(true))
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(false)))
  })
}

async function healthy (url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) })
    return res.ok && (await res.json() as { health?: string }).health === 'true'
  } catch {
    return false
  }
}

/**
 * Starts etcd as a child process on loopback, as sensu-backend runs its embedded etcd: one
 * member, data in `dataDir` (so keys survive a restart), resolved once `/health` answers.
 */
export async function startEmbeddedEtcd (options: EmbeddedEtcdOptions): Promise<EmbeddedEtcd> {
  const binary = options.binary ?? findOnPath('etcd')
  if (binary === undefined) throw new EtcdNotFoundError()
  for (const [name, port] of [['ETCD_CLIENT_PORT', options.clientPort], ['ETCD_PEER_PORT', options.peerPort]] as const) {
    if (await portInUse(port)) {
      throw new Error(`port ${port} (${name}) is in use, so the embedded etcd cannot start. If an etcd already runs ` +
        `there (Debian's etcd-server package starts one), use it: ETCD_ENDPOINTS=http://127.0.0.1:${options.clientPort}; ` +
        'or choose other ports with ETCD_CLIENT_PORT and ETCD_PEER_PORT.')
    }
  }
  mkdirSync(options.dataDir, { recursive: true, mode: 0o700 })
  mkdirSync(dirname(options.logFile), { recursive: true })
  const client = `http://127.0.0.1:${options.clientPort}`
  const peer = `http://127.0.0.1:${options.peerPort}`
  const log = createWriteStream(options.logFile, { flags: 'a' })
  // Where util-linux's setpriv exists, etcd gets SIGTERM when this process dies, even by SIGKILL,
  // instead of living on with the ports and the data folder.
  const setpriv = findOnPath('setpriv')
  const args = [
    '--name', 'embedded',
    '--data-dir', options.dataDir,
    '--listen-client-urls', client,
    '--advertise-client-urls', client,
    '--listen-peer-urls', peer,
    '--initial-advertise-peer-urls', peer,
    '--initial-cluster', `embedded=${peer}`
  ]
  const child: ChildProcess = setpriv === undefined
    ? spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(setpriv, ['--pdeathsig', 'TERM', '--', binary, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  child.stdout?.pipe(log)
  child.stderr?.pipe(log)
  let exited = false
  child.once('exit', () => { exited = true })
  const stop = async () => {
    if (exited) return
    const done = once(child, 'exit')
    child.kill('SIGTERM')
    const stopped = await Promise.race([done.then(() => true), sleep(10_000, undefined, { ref: false }).then(() => false)])
    if (!stopped) {
      child.kill('SIGKILL')
      await done
    }
    log.end()
  }

  const deadline = Date.now() + (options.startTimeout ?? 30_000)
  while (!await healthy(client)) {
    if (exited) {
      log.end()
      throw new Error(`the embedded etcd exited at start; see ${options.logFile}`)
    }
    if (Date.now() > deadline) {
      await stop()
      throw new Error(`the embedded etcd did not become healthy in time; see ${options.logFile}`)
    }
    await sleep(100)
  }
  return { endpoints: [client], pid: child.pid as number, stop }
}
