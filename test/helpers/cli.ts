// The `apikeys` command line (dist/cli/apikeys.js) run as a user runs it: a child process against a
// standalone server on real etcd, without a terminal, or on a pseudo-terminal (script(1)).
import { once } from 'node:events'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ADMIN_TOKEN, BASE, uniqueRoot } from './app.js'
import type { EtcdHandle } from './etcd.js'
import { REPO, ensureBuilt, freePorts, request, spawnOwned, startServer, tempDir, waitForReady, type ServerProcess } from './standalone.js'

export const APIKEYS_BIN = join(REPO, 'dist', 'cli', 'apikeys.js')

export interface Run { code: number | null, stdout: string, stderr: string }

export interface RunOptions {
  /** The environment besides PATH and HOME (nothing else of this process's is passed on). */
  env?: Record<string, string>
  cwd?: string
  /** Written to its standard input, then closed; without it, stdin is /dev/null. */
  input?: string
}

const baseEnv = () => ({ PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? tmpdir() })

/** Runs `node dist/cli/apikeys.js ...args` to its end, without a terminal. */
export async function runCli (args: string[], options: RunOptions = {}): Promise<Run> {
  return await runToEnd(process.execPath, [APIKEYS_BIN, ...args], options)
}

/** Single-quoted for sh. */
const quoted = (word: string) => `'${word.replace(/'/g, "'\\''")}'`

/**
 * Runs it on a pseudo-terminal (`script -qec CMD /dev/null`): its stdin and stdout are a terminal,
 * `input` is typed into it. What it printed comes back on stdout, stderr included, with the echo.
 */
export async function runCliOnTerminal (args: string[], options: RunOptions = {}): Promise<Run> {
  const command = [process.execPath, APIKEYS_BIN, ...args].map(quoted).join(' ')
  return await runToEnd('script', ['-qec', command, '/dev/null'], options)
}

async function runToEnd (command: string, args: string[], { env = {}, cwd = REPO, input }: RunOptions): Promise<Run> {
  const child = spawnOwned(command, args, { cwd, env: { ...baseEnv(), ...env }, stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk })
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  if (input !== undefined) child.stdin?.end(input)
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
  const [code] = await once(child, 'close')
  clearTimeout(timer)
  return { code, stdout, stderr }
}

export interface CliServer {
  server: ServerProcess
  url: string
  dataDir: string
  /** The environment that points the command line at this server as its admin. */
  env: Record<string, string>
  /** A request to the server's API as its admin: what the tests check the command line against. */
  api (method: string, path: string, body?: unknown): Promise<{ status: number, body: any, headers: Record<string, unknown> }>
}

/** A standalone server on `etcd`, under a root of its own, with ADMIN_TOKEN as its admin token; stopped in teardown. */
export async function startCliServer (t: { teardown(fn: () => unknown): void }, etcd: EtcdHandle): Promise<CliServer> {
  await ensureBuilt()
  const [port] = await freePorts(1)
  const dataDir = await tempDir(t, 'apikeys-cli-')
  const server = startServer({
    PORT: String(port),
    DATA_DIR: dataDir,
    ETCD_ENDPOINTS: etcd.endpoints.join(','),
    ETCD_ROOT: uniqueRoot(),
    APIKEY_ADMIN_TOKEN: ADMIN_TOKEN,
    AUTH_FAILURE_MAX: '0',
    // last_used_at within a second of a use, not a minute (test/cli-lifecycle.test.ts waits for it).
    LAST_USE_INTERVAL_MS: '1000'
  })
  t.teardown(() => server.stop())
  const url = `http://127.0.0.1:${port}`
  await waitForReady(server, `${url}/ready`)
  return {
    server,
    url,
    dataDir,
    env: { APIKEYS_URL: url, APIKEYS_TOKEN: ADMIN_TOKEN },
    async api (method, path, body) {
      const answer = await request(`${url}${BASE}${path}`, {
        method,
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body)
      })
      return { status: answer.status, headers: answer.headers, body: answer.body === '' ? undefined : JSON.parse(answer.body) }
    }
  }
}

/**
 * The rows of the tabular list: the header, its rule, then one line a key whose cells stand two or
 * more spaces apart (an empty last cell, no labels, is left off the line).
 */
export function tableRows (stdout: string): { header: string[], rows: string[][] } {
  const lines = stdout.split('\n').filter(line => line !== '')
  const cells = (line: string) => line.trim().split(/ {2,}/)
  if (!/^─+( +─+)+$/.test(lines[1] ?? '')) throw new Error(`no table in: ${stdout}`)
  return { header: cells(lines[0]), rows: lines.slice(2).map(cells) }
}

/** One line on stderr, `Error: ...`: no stack trace, no second line. */
export const ONE_ERROR_LINE = /^Error: [^\n]+\n$/
