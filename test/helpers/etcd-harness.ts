// The test etcd harness: what the ways of starting etcd share (handles, cleanup at exit, temp
// folders, messages).
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'

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

export const DEFAULT_IMAGE = 'gcr.io/etcd-development/etcd:v3.5.17'
export const LOCAL_IMAGE_HINT = 'fastify-etcd-apikeys/etcd:local'
export const STARTUP_TIMEOUT_MS = 30_000
export const STOP_TIMEOUT_S = 10
/** Docker label on every container started here; its value is `<hostname>:<pid>` of the test process. */
export const CONTAINER_LABEL = 'fastify-etcd-apikeys.test-etcd'
export const OWNER = `${hostname()}:${process.pid}`
/** Temp dirs of the binary path are named `<TEMP_PREFIX><pid>-XXXXXX`. */
export const TEMP_PREFIX = 'etcd-test-'

// Ryuk (testcontainers' reaper) runs from an image that usually cannot be pulled
// where these tests run; this module removes its own containers instead (close(),
// process exit, and orphans of dead test processes on the next run).
// Set TESTCONTAINERS_RYUK_DISABLED=false to use Ryuk anyway.
process.env.TESTCONTAINERS_RYUK_DISABLED ??= 'true'

/** Whether a process of this host still runs (for leftovers of test processes that were killed). */
export function pidAlive (pid: number): boolean {
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
export const atExit = new Set<() => void>()
process.once('exit', () => {
  for (const cleanup of [...atExit].reverse()) {
    try { cleanup() } catch {}
  }
})

/** A temporary folder of this process (`<TEMP_PREFIX><pid>-XXXXXX`), once those of dead test processes are removed. */
export async function ownTempDir (): Promise<string> {
  await removeOrphanDirs()
  return await mkdtemp(join(tmpdir(), `${TEMP_PREFIX}${process.pid}-`))
}

/** Removes data dirs left by test processes that died without cleaning up (etcd's WAL alone takes 64 MB). */
async function removeOrphanDirs (): Promise<void> {
  const orphans = (await readdir(tmpdir())).filter((name) => {
    const pid = name.startsWith(TEMP_PREFIX) ? Number(name.slice(TEMP_PREFIX.length).split('-')[0]) : NaN
    return Number.isInteger(pid) && !pidAlive(pid)
  })
  await Promise.all(orphans.map(async (name) => await rm(join(tmpdir(), name), { recursive: true, force: true })))
}

export function oneLine (err: unknown): string {
  let message = err instanceof Error ? err.message : String(err)
  // fetch() and dockerode put the useful part in `cause`.
  const cause = err instanceof Error ? err.cause : undefined
  if (cause instanceof Error && !message.includes(cause.message)) message += `: ${cause.message}`
  return message.split('\n').map((l) => l.trim()).filter(Boolean).join(' | ')
}

export function lastLines (text: string, count = 3): string {
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean)
  return lines.slice(-count).join(' | ') || '(no output)'
}
