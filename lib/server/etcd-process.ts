// The etcd process toolkit: the flags every etcd of this project runs with, a spawn that dies
// with its parent, the health wait, free ports. Used by the embedded etcd, the test helpers and
// the benchmark.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { accessSync, constants } from 'node:fs'
import { once } from 'node:events'
import { createServer, type Server } from 'node:net'
import { delimiter, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

/**
 * etcd's history is compacted every 5 minutes, as the Kubernetes API server compacts it: writes
 * cannot fill etcd's space with old revisions, and a continue token (which reads at its first
 * page's revision) stays valid for 5 to 10 minutes. Every etcd this project starts runs with them.
 */
export const ETCD_COMPACTION_FLAGS = ['--auto-compaction-mode=periodic', '--auto-compaction-retention=5m']

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
  /** etcd's --log-level; default etcd's own (info). */
  logLevel?: string
}

/** The flags of one etcd member: a new cluster, zap's JSON logs, the compaction of every etcd here. */
export function etcdFlags ({ name, dataDir, clientUrl, peerUrl, listenPeerUrl = peerUrl, initialCluster = `${name}=${peerUrl}`, logLevel }: MemberFlags): string[] {
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
    ...(logLevel === undefined ? [] : [`--log-level=${logLevel}`]),
    ...ETCD_COMPACTION_FLAGS
  ]
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

/**
 * Spawns `command` so that it gets `deathSignal` when this process dies, even by SIGKILL, where
 * util-linux's setpriv exists (else a plain spawn), instead of living on with its ports and data.
 */
export function spawnWithParent (command: string, args: string[], options: SpawnOptions, deathSignal: 'TERM' | 'KILL'): ChildProcess {
  const setpriv = findOnPath('setpriv')
  return setpriv === undefined
    ? spawn(command, args, options)
    : spawn(setpriv, ['--pdeathsig', deathSignal, '--', command, ...args], options)
}

/** An error's message with its cause, on one line. */
function oneLine (err: unknown): string {
  let message = err instanceof Error ? err.message : String(err)
  // fetch() puts the useful part in `cause`.
  const cause = err instanceof Error ? err.cause : undefined
  if (cause instanceof Error && !message.includes(cause.message)) message += `: ${cause.message}`
  return message.split('\n').map((l) => l.trim()).filter(Boolean).join(' | ')
}

/** Thrown by waitForHealth when etcd did not say it is healthy in time. */
export class EtcdHealthTimeoutError extends Error {}

/**
 * Polls `${endpoint}/health` until etcd says it is healthy. `checkAlive` is called before each
 * try and throws if etcd is gone for good, so that a crashed etcd fails fast instead of at the
 * timeout (EtcdHealthTimeoutError).
 */
export async function waitForHealth (endpoint: string, timeoutMs: number, checkAlive: () => Promise<void> | void): Promise<void> {
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
      throw new EtcdHealthTimeoutError(`etcd at ${endpoint} not healthy after ${timeoutMs} ms (last: ${last})`)
    }
    await sleep(100)
  }
}

/** Whether something listens on `port` of loopback already. */
export async function portInUse (port: number): Promise<boolean> {
  const probe = createServer()
  return await new Promise(resolve => {
    probe.once('error', () => resolve(true))
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(false)))
  })
}

/** Ports that are free right now on `host` (default every interface), asked for together so that they differ. */
export async function freePorts (count: number, host = '0.0.0.0'): Promise<number[]> {
  const servers: Server[] = []
  try {
    for (let i = 0; i < count; i++) {
      const server = createServer()
      servers.push(server)
      server.listen(0, host)
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
