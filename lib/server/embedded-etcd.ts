import type { ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createWriteStream, mkdirSync } from 'node:fs'
import { open, readFile, rename } from 'node:fs/promises'
import { once } from 'node:events'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Etcd3, EtcdAuthenticationFailedError, EtcdUserExistsError, type IOptions } from 'etcd3'
import { EtcdHealthTimeoutError, etcdFlags, findOnPath, portInUse, spawnWithParent, waitForHealth } from './etcd-process.js'

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

export interface EtcdCredentials { username: string, password: string }

export interface EmbeddedEtcd {
  endpoints: string[]
  /** What opens it: no client gets in without them. */
  auth: EtcdCredentials
  pid: number
  stop(): Promise<void>
}

/** The file in etcd's data folder that holds its root password (mode 0600), made at first start. */
export const ROOT_PASSWORD_FILE = 'root-password'
const ROOT = 'root'

export { ETCD_COMPACTION_FLAGS, findOnPath } from './etcd-process.js'

/** etcd exited while it was starting. */
class EtcdExitedError extends Error {}

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

/**
 * etcd takes every `ETCD_*` variable as one of its flags, and refuses to start when one is also
 * given as a flag: the server's own ETCD_DATA_DIR, ETCD_CERT_FILE... must not reach it.
 */
function etcdEnvironment (env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(env).filter(([name]) => !name.startsWith('ETCD')))
}

/**
 * What etcd said last, for an error message: its error lines (a zap JSON line shortened to its
 * message and error), else its last lines.
 */
export function lastWords (output: string, count = 3): string {
  const lines = output.split('\n').map(line => line.trim()).filter(Boolean).map(line => {
    try {
      const { level, msg, error } = JSON.parse(line) as { level?: string, msg?: string, error?: string }
      return { text: error === undefined ? String(msg) : `${msg}: ${error}`, severe: ['error', 'dpanic', 'panic', 'fatal'].includes(String(level)) }
    } catch {
      // etcd 3.4's default logger (capnslog) marks errors ` E | ` and fatal ones ` C | `; Go's own crash says `panic:`.
      return { text: line, severe: / [EC] \| /.test(line) || line.startsWith('panic:') }
    }
  })
  const severe = lines.filter(line => line.severe)
  const chosen = (severe.length > 0 ? severe : lines).slice(-count).map(line => line.text)
  return chosen.length > 0 ? chosen.join(' | ') : '(it printed nothing)'
}

/** The last `limit` characters of what the streams carry. */
function keepTail (streams: Array<NodeJS.ReadableStream | null>, limit = 64 * 1024): () => string {
  let tail = ''
  for (const stream of streams) stream?.on('data', (chunk: Buffer) => { tail = (tail + chunk.toString('utf8')).slice(-limit) })
  return () => tail
}

/**
 * Starts etcd as a child process on loopback, as sensu-backend runs its embedded etcd: one
 * member, data in `dataDir` (so keys survive a restart), resolved once `/health` answers and etcd
 * is locked (see lockEtcd).
 */
export async function startEmbeddedEtcd (options: EmbeddedEtcdOptions): Promise<EmbeddedEtcd> {
  const binary = options.binary ?? findOnPath('etcd')
  if (binary === undefined) throw new EtcdNotFoundError()
  for (const [name, port] of [['ETCD_CLIENT_PORT', options.clientPort], ['ETCD_PEER_PORT', options.peerPort]] as const) {
    if (await portInUse(port)) {
      throw new Error(`port ${port} (${name}) is in use, so the embedded etcd cannot start. If an etcd already runs ` +
        `there (Debian's etcd-server package starts one), use it: ETCD_ENDPOINTS=http://127.0.0.1:${options.clientPort} ` +
        `(for the embedded etcd of a server that runs on ${options.dataDir}, with ETCD_USERNAME=root and ETCD_PASSWORD ` +
        `from ${join(options.dataDir, ROOT_PASSWORD_FILE)}); or choose other ports with ETCD_CLIENT_PORT and ETCD_PEER_PORT.`)
    }
  }
  mkdirSync(options.dataDir, { recursive: true, mode: 0o700 })
  mkdirSync(dirname(options.logFile), { recursive: true, mode: 0o700 })
  const client = `http://127.0.0.1:${options.clientPort}`
  const peer = `http://127.0.0.1:${options.peerPort}`
  const log = createWriteStream(options.logFile, { flags: 'a' })
  const args = etcdFlags({ name: 'embedded', dataDir: options.dataDir, clientUrl: client, peerUrl: peer })
  // etcd gets SIGTERM when this process dies, even by SIGKILL, instead of living on with the ports and the data folder.
  const child: ChildProcess = spawnWithParent(binary, args, { stdio: ['ignore', 'pipe', 'pipe'], env: etcdEnvironment(process.env) }, 'TERM')
  child.stdout?.pipe(log, { end: false })
  child.stderr?.pipe(log, { end: false })
  const output = keepTail([child.stdout, child.stderr])
  let exited = false
  child.once('exit', () => { exited = true })
  // 'close' comes once etcd has exited and all it wrote has been read: its last words included.
  const closed = once(child, 'close')
  const endLog = async () => {
    await closed
    if (!log.writableEnded) await new Promise(resolve => log.end(resolve))
  }
  const stop = async () => {
    if (!exited) {
      child.kill('SIGTERM')
      const stopped = await Promise.race([closed.then(() => true), sleep(10_000, undefined, { ref: false }).then(() => false)])
      if (!stopped) child.kill('SIGKILL')
    }
    await endLog()
  }

  try {
    await waitForHealth(client, options.startTimeout ?? 30_000, () => { if (exited) throw new EtcdExitedError() })
  } catch (err) {
    if (err instanceof EtcdExitedError) {
      await endLog()
      throw new Error(`the embedded etcd exited at start: ${lastWords(output())} (all it said is in ${options.logFile})`)
    }
    await stop()
    if (err instanceof EtcdHealthTimeoutError) {
      throw new Error(`the embedded etcd did not become healthy in time: ${lastWords(output())} (all it said is in ${options.logFile})`)
    }
    throw err
  }
  let auth: EtcdCredentials
  try {
    auth = await lockEtcd(client, options.dataDir)
  } catch (err) {
    await stop()
    throw err
  }
  return { endpoints: [client], auth, pid: child.pid as number, stop }
}

/** An etcd client with a deadline on every call: this etcd is local, a call that hangs is a fault. */
function localClient (endpoint: string, auth?: EtcdCredentials): Etcd3 {
  const options: IOptions = {
    hosts: [endpoint],
    defaultCallOptions: context => context.isStream ? {} : { deadline: Date.now() + 10_000 },
    ...(auth && { auth })
  }
  return new Etcd3(options)
}

/** Whether etcd refuses a client without credentials. */
async function authEnabled (open: Etcd3): Promise<boolean> {
  try {
    await open.get('/').string()
    return false
  } catch (err) {
    if (/user name is empty|permission denied|invalid auth token/.test((err as Error).message)) return true
    throw err
  }
}

async function readPassword (file: string): Promise<string | undefined> {
  try {
    const password = (await readFile(file, 'utf8')).trim()
    return password === '' ? undefined : password
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

/** A new root password, on disk (mode 0600) before etcd knows it, so that it is never lost. */
async function writePassword (file: string): Promise<string> {
  const password = randomBytes(32).toString('base64url')
  const next = `${file}.new`
  const handle = await open(next, 'w', 0o600)
  try {
    await handle.writeFile(password + '\n')
    await handle.sync()
  } finally {
    await handle.close()
  }
  await rename(next, file)
  return password
}

/**
 * Switches etcd's authentication on, with a root user whose password is made here and kept in
 * `<dataDir>/root-password` (mode 0600, in the 0700 data folder), so that no process without it
 * reads or writes etcd. Every step can be done again: a start that stopped half-way (password
 * written, authentication not yet on) finishes the job, and a data folder made before etcd was
 * locked is locked with its keys as they are.
 */
async function lockEtcd (endpoint: string, dataDir: string): Promise<EtcdCredentials> {
  const file = join(dataDir, ROOT_PASSWORD_FILE)
  const open = localClient(endpoint)
  try {
    let password = await readPassword(file)
    if (await authEnabled(open)) {
      if (password === undefined) {
        throw new Error(`the embedded etcd in ${dataDir} is locked, but the file of its root password, ${file}, is missing or empty: ` +
          'put that file back from a backup of this folder; without it, this data cannot be opened')
      }
      await checkPassword(endpoint, { username: ROOT, password }, file)
      return { username: ROOT, password }
    }
    password ??= await writePassword(file)
    const root = open.user(ROOT)
    try {
      await root.create(password)
    } catch (err) {
      if (!(err instanceof EtcdUserExistsError)) throw err
      await root.setPassword(password)
    }
    // The role root is etcd's own: it reads and writes every key. Granting it twice is no error.
    await root.addRole(ROOT)
    await open.auth.authEnable()
    return { username: ROOT, password }
  } finally {
    open.close()
  }
}

async function checkPassword (endpoint: string, auth: EtcdCredentials, file: string): Promise<void> {
  const locked = localClient(endpoint, auth)
  try {
    await locked.get('/').string()
  } catch (err) {
    if (err instanceof EtcdAuthenticationFailedError) {
      throw new Error(`the root password in ${file} does not open the embedded etcd beside it: put back the file that belongs to this data folder`)
    }
    throw err
  } finally {
    locked.close()
  }
}
