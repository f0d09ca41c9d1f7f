// The standalone server (`node dist/server/cli.js`, what `npm start` runs) as a child process, for the
// tests that run it as a user would: free ports, readiness, HTTP(S) requests, a bounded stop.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { findOnPath, freePorts as freePortsOn } from '../../lib/server/etcd-process.js'
import { CLI, REPO, startProcess, type ServerProcess } from '../../dev/processes.js'

export { findOnPath }
export { CLI, REPO, ensureBuilt, request, spawnOwned, startProcess, waitForReady, type Answer, type Exit, type RequestOptions, type ServerProcess } from '../../dev/processes.js'

/** Ports free right now on loopback, asked for together so that they differ. */
export async function freePorts (count: number): Promise<number[]> {
  return await freePortsOn(count, '127.0.0.1')
}

/** A temporary folder, removed in teardown (tap runs teardowns last-registered first). */
export async function tempDir (t: { teardown(fn: () => unknown): void }, prefix = 'apikeys-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

/**
 * Starts `node dist/server/cli.js` with `env` and nothing else of this process's environment but PATH
 * and HOME, so that an ETCD_ENDPOINTS meant for the tests' etcd does not leak in.
 */
export function startServer (env: Record<string, string>, cwd = REPO): ServerProcess {
  return startProcess(process.execPath, [CLI], { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? tmpdir(), ...env }, cwd)
}

/** Waits until a process is gone; false if it is still there after `timeoutMs`. */
export async function processGone (pid: number, timeoutMs = 10_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      process.kill(pid, 0)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') return true
    }
    if (Date.now() > deadline) return false
    await sleep(50)
  }
}

/** The pino lines the server printed, parsed (other lines are left out). */
export function logLines (output: string): Array<Record<string, any>> {
  return output.split('\n').flatMap(line => {
    try {
      const parsed = JSON.parse(line)
      return typeof parsed === 'object' && parsed !== null ? [parsed] : []
    } catch {
      return []
    }
  })
}

export const CHECK_CONSISTENCY_CLI = join(REPO, 'dist', 'tools', 'check-consistency.js')

/** Runs `node dist/tools/check-consistency.js` (what `npm run check-consistency` runs) to its end. */
export async function runCheckConsistency (env: Record<string, string>, args: string[] = []): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const run = startProcess(process.execPath, [CHECK_CONSISTENCY_CLI, ...args], { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? tmpdir(), ...env })
  const { code } = await run.exited
  return { code, stdout: run.stdout(), stderr: run.stderr() }
}
