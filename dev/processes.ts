// Processes for the tests and the benchmark alike: this repository, its build, children that die
// with this process, HTTP requests and readiness. (bench/ must not import test/.)
import { spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdirSync, readdirSync, rmSync, statSync } from 'node:fs'
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { spawnWithParent } from '../lib/server/etcd-process.js'

export const REPO = fileURLToPath(new URL('..', import.meta.url))
export const CLI = join(REPO, 'dist', 'server', 'cli.js')

/** Children still running when this process exits are killed (setpriv also covers a SIGKILLed test). */
const running = new Set<ChildProcess>()
process.once('exit', () => { for (const child of running) child.kill('SIGKILL') })

/**
 * Spawns a child that dies with this process, even when this process is SIGKILLed (setpriv,
 * util-linux), and that is killed on exit otherwise.
 */
export function spawnOwned (command: string, args: string[], options: Parameters<typeof spawnWithParent>[2] = {}): ChildProcess {
  const child = spawnWithParent(command, args, options, 'KILL')
  running.add(child)
  child.once('exit', () => running.delete(child))
  return child
}

/** Builds dist/ when dist/server/cli.js is missing or older than a file of lib/; one build at a time across test processes. */
export async function ensureBuilt (): Promise<void> {
  const stale = () => {
    let built = 0
    try { built = statSync(CLI).mtimeMs } catch {}
    const lib = join(REPO, 'lib')
    return readdirSync(lib, { recursive: true }).some(file => statSync(join(lib, String(file))).mtimeMs > built)
  }
  if (!stale()) return
  const lock = join(tmpdir(), `fastify-etcd-apikeys-build-${Buffer.from(REPO).toString('base64url')}.lock`)
  const deadline = Date.now() + 120_000
  for (;;) {
    try {
      mkdirSync(lock)
      break
    } catch {
      if (Date.now() > deadline) throw new Error(`waited 120 s for another build (lock ${lock}); remove it if no build runs`)
      await sleep(200)
    }
  }
  try {
    if (!stale()) return
    const build = spawnSync('npm', ['run', 'build'], { cwd: REPO, encoding: 'utf8', timeout: 120_000 })
    if (build.status !== 0) throw new Error(`npm run build failed: ${build.stdout}${build.stderr}`)
  } finally {
    rmSync(lock, { recursive: true, force: true })
  }
}

export interface Exit { code: number | null, signal: NodeJS.Signals | null }

export interface ServerProcess {
  child: ChildProcess
  /** What it printed so far. */
  stdout(): string
  stderr(): string
  exited: Promise<Exit>
  /** SIGTERM; after `timeoutMs` SIGKILL. Tells how it ended and whether it took too long. */
  stop(timeoutMs?: number): Promise<Exit & { timedOut: boolean }>
}

/** Starts a child of this process (see spawnOwned) and keeps what it prints. */
export function startProcess (command: string, args: string[], env: NodeJS.ProcessEnv, cwd = REPO): ServerProcess {
  const child = spawnOwned(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk })
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  // 'close' rather than 'exit': by then its output has been read to the end.
  const exited = once(child, 'close').then(([code, signal]) => ({ code, signal }) as Exit)
  return {
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    exited,
    async stop (timeoutMs = 10_000) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
      const started = Date.now()
      const exit = await exited
      clearTimeout(timer)
      return { ...exit, timedOut: Date.now() - started >= timeoutMs }
    }
  }
}

export interface Answer { status: number, headers: IncomingHttpHeaders, body: string }

export interface RequestOptions {
  method?: string
  headers?: Record<string, string>
  body?: string
  /** PEM CA to trust (https). */
  ca?: Buffer
  /** Client certificate and key (https). */
  cert?: Buffer
  key?: Buffer
  timeoutMs?: number
}

/** One HTTP or HTTPS request (node's own clients: fetch cannot be given a CA). */
export async function request (url: string, options: RequestOptions = {}): Promise<Answer> {
  const { method = 'GET', headers = {}, body, ca, cert, key, timeoutMs = 10_000 } = options
  const send = url.startsWith('https:') ? httpsRequest : httpRequest
  return await new Promise((resolve, reject) => {
    const req = send(url, { method, headers, ca, cert, key, timeout: timeoutMs }, res => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', chunk => { text += chunk })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url} within ${timeoutMs} ms`)))
    req.on('error', reject)
    req.end(body)
  })
}

/**
 * Polls `url` until it answers `status` (default 200); throws when the process has exited or
 * `timeoutMs` has passed.
 */
export async function waitForReady (server: ServerProcess, url: string, options: RequestOptions & { status?: number } = {}): Promise<void> {
  const { timeoutMs = 30_000, status = 200 } = options
  const deadline = Date.now() + timeoutMs
  let last = 'no answer'
  for (;;) {
    if (server.child.exitCode !== null || server.child.signalCode !== null) {
      throw new Error(`the server exited (${server.child.exitCode ?? server.child.signalCode}) before it was ready: ${server.stderr().trim() || server.stdout().trim()}`)
    }
    try {
      const res = await request(url, { ...options, timeoutMs: 1000 })
      if (res.status === status) return
      last = `${res.status} ${res.body}`
    } catch (err) {
      last = (err as Error).message
    }
    if (Date.now() > deadline) throw new Error(`${url} not ready after ${timeoutMs} ms (last: ${last}); server output: ${server.stdout()}${server.stderr()}`)
    await sleep(100)
  }
}
