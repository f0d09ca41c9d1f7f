// The standalone server as a user runs it: `node dist/cli.js` (what `npm start` runs after its
// build), as a child process with an environment of the test's choosing.
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

export const CLI = resolve('dist/cli.js')

export interface RunningServer {
  url: string
  process: ChildProcess
  /** Every line the server wrote to stdout and stderr so far. */
  lines: string[]
  /** SIGTERM, and the exit code once it has exited (null if it had to be killed after `within` ms). */
  stop(within?: number): Promise<number | null>
}

export async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise(resolve => server.close(resolve))
  return port
}

/** A temporary folder, removed in teardown. */
export async function tempDir (t: { teardown(fn: () => unknown): void }, name = 'apikeys-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), name))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

/** Runs the CLI to its end: for starts that must fail. */
export async function runToExit (env: NodeJS.ProcessEnv, timeout = 30_000): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const child = spawn(process.execPath, [CLI], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', chunk => { stdout += chunk })
  child.stderr.on('data', chunk => { stderr += chunk })
  const timer = setTimeout(() => child.kill('SIGKILL'), timeout)
  const [code] = await once(child, 'exit') as [number | null]
  clearTimeout(timer)
  return { code, stdout, stderr }
}

/**
 * Starts the server and resolves once `/health` answers. `env` is added to a minimal environment
 * (PATH, HOME) so that no variable of the test's own leaks in.
 */
export async function startServer (t: { teardown(fn: () => unknown): void }, env: NodeJS.ProcessEnv, { timeout = 30_000 } = {}): Promise<RunningServer> {
  const port = Number(env.PORT ?? await freePort())
  const child = spawn(process.execPath, [CLI], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, PORT: String(port), ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const lines: string[] = []
  for (const stream of [child.stdout, child.stderr]) {
    let rest = ''
    stream.setEncoding('utf8')
    stream.on('data', (chunk: string) => {
      const parts = (rest + chunk).split('\n')
      rest = parts.pop() ?? ''
      lines.push(...parts)
    })
  }
  let exitCode: number | null | undefined
  const exited = once(child, 'exit').then(([code]) => { exitCode = code as number | null })
  const stop = async (within = 15_000) => {
    if (exitCode === undefined) child.kill('SIGTERM')
    const done = await Promise.race([exited.then(() => true), sleep(within).then(() => false)])
    if (!done) {
      child.kill('SIGKILL')
      await exited
      return null
    }
    return exitCode ?? null
  }
  t.teardown(() => stop())
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + timeout
  for (;;) {
    if (exitCode !== undefined) throw new Error(`the server exited (${exitCode}) at start:\n${lines.join('\n')}`)
    if (Date.now() > deadline) throw new Error(`the server did not answer /health in time:\n${lines.join('\n')}`)
    const up = await fetch(`${url}/health`).then(res => res.ok, () => false)
    if (up) return { url, process: child, lines, stop }
    await sleep(100)
  }
}
