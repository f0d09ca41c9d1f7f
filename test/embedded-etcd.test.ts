// The embedded etcd as `npm start` runs it: locked (no client without the server's credentials
// reads or writes it), compacted every 5 minutes, in the folder ETCD_DATA_DIR names, an old
// unlocked data folder locked at start with its keys, and etcd's own words when it refuses to start.
import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ROOT_PASSWORD_FILE, startEmbeddedEtcd, type EtcdCredentials } from '../lib/server/embedded-etcd.js'
import { etcdFlags, ownTempDir, runEtcdProcess } from './helpers/etcd.js'
import { buildApp, keyAuth } from './helpers/app.js'
import { ensureBuilt, findOnPath, freePorts, logLines, request, runCheckConsistency, startServer, tempDir, waitForReady } from './helpers/standalone.js'
import { waitFor } from './helpers/wait.js'

const etcdPath = findOnPath('etcd')
const etcdctlPath = findOnPath('etcdctl')
/** These tests run etcd and etcdctl as a user does: from PATH. */
const skip = (etcdPath === undefined || etcdctlPath === undefined) && 'no etcd and etcdctl on PATH (apt-get install etcd-server etcd-client)'
await ensureBuilt()

const NS_PATH = '/api/core/v2/namespaces/default/apikey'

/** etcdctl against `endpoint`, with credentials or without; never throws. */
async function etcdctl (endpoint: string, args: string[], auth?: EtcdCredentials): Promise<{ code: number, stdout: string, stderr: string }> {
  const user = auth === undefined ? [] : [`--user=${auth.username}:${auth.password}`]
  return await new Promise(resolve => {
    execFile(etcdctlPath as string, [`--endpoints=${endpoint}`, '--command-timeout=5s', ...user, ...args], { env: { PATH: process.env.PATH, ETCDCTL_API: '3' } }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : Number((err as { code?: unknown }).code ?? 1), stdout, stderr })
    })
  })
}

/** What the server's etcd is, from its log line `etcd: embedded, pid N, ...`. */
function embeddedPid (stdout: string): number {
  const line = logLines(stdout).find(record => typeof record.etcd === 'string' && record.etcd.startsWith('embedded'))
  const pid = Number(/pid (\d+)/.exec(line?.etcd ?? '')?.[1])
  if (!Number.isInteger(pid)) throw new Error(`no embedded etcd pid in the server's log: ${stdout}`)
  return pid
}

/**
 * etcd on `dataDir` with the embedded one's name and ports but not started by this project (as an
 * older version of it did: no lock); its log in `logFile`.
 */
async function plainEtcd (dataDir: string, clientPort: number, peerPort: number, extra: string[] = []) {
  const endpoint = `http://127.0.0.1:${clientPort}`
  const flags = etcdFlags({ name: 'embedded', dataDir, clientUrl: endpoint, peerUrl: `http://127.0.0.1:${peerPort}` })
  const dir = await ownTempDir()
  const etcd = await runEtcdProcess({ etcdPath: etcdPath as string, dir, args: [...flags, ...extra], endpoint })
  return Object.assign(etcd, { logFile: join(dir, 'etcd.log') })
}

t.test('npm start with ETCD_DATA_DIR: etcd keeps its data there, locked, compacted every 5 minutes', { skip }, async t => {
  const dir = await tempDir(t)
  const keysDir = join(dir, 'keys')
  const [port, clientPort, peerPort] = await freePorts(3)
  const env = { DATA_DIR: join(dir, 'data'), ETCD_DATA_DIR: keysDir, PORT: String(port), ETCD_CLIENT_PORT: String(clientPort), ETCD_PEER_PORT: String(peerPort) }
  const url = `http://127.0.0.1:${port}`
  const endpoint = `http://127.0.0.1:${clientPort}`
  let server = startServer(env)
  t.teardown(() => server.stop())
  await waitForReady(server, `${url}/ready`)

  const token = readFileSync(join(dir, 'data', 'admin-token'), 'utf8').trim()
  const admin = { authorization: `Bearer ${token}` }
  const created = await request(`${url}${NS_PATH}`, { method: 'POST', headers: admin })
  t.equal(created.status, 201, 'the server creates a key')
  const location = `${url}${created.headers.location}`
  t.equal((await request(location, { headers: admin })).status, 200, 'and reads it')
  t.ok(statSync(join(keysDir, 'member')).isDirectory(), 'etcd\'s data is in ETCD_DATA_DIR')

  // What `ps` shows of the etcd the server started.
  const cmdline = readFileSync(`/proc/${embeddedPid(server.stdout())}/cmdline`, 'utf8').split('\0')
  t.ok(cmdline.some(arg => arg.endsWith('etcd')), `the pid in the log is etcd's (${cmdline[0]})`)
  t.ok(cmdline.includes('--auto-compaction-mode=periodic') && cmdline.includes('--auto-compaction-retention=5m'),
    'etcd runs with --auto-compaction-mode=periodic --auto-compaction-retention=5m')

  // Locked: etcdctl without credentials can neither write nor read.
  const passwordFile = join(keysDir, ROOT_PASSWORD_FILE)
  t.equal(statSync(passwordFile).mode & 0o777, 0o600, 'the root password is kept with mode 0600')
  t.equal(statSync(keysDir).mode & 0o777, 0o700, 'in a folder of mode 0700')
  const put = await etcdctl(endpoint, ['put', '/intruder', 'x'])
  t.not(put.code, 0, 'etcdctl put without credentials fails')
  t.match(put.stderr, /user name is empty/, `etcd says why: ${put.stderr.trim().split('\n').at(-1)}`)
  const get = await etcdctl(endpoint, ['get', '--prefix', '/sensu.io/'])
  t.not(get.code, 0, 'etcdctl get without credentials fails')
  t.equal(get.stdout, '', 'and shows nothing')
  const root = { username: 'root', password: readFileSync(passwordFile, 'utf8').trim() }
  const asRoot = await etcdctl(endpoint, ['get', '--prefix', '--keys-only', '/'], root)
  t.equal(asRoot.code, 0, 'with the root password etcdctl reads')
  t.notMatch(asRoot.stdout, /intruder/, 'and the write without credentials did not happen')
  t.match(asRoot.stdout, /\/sensu\.io\/apikeys\/default\//, 'the key is there')

  // The running server's etcd is reached with the credentials, and refused without.
  const withoutCredentials = await runCheckConsistency({ ...env, ETCD_ENDPOINTS: endpoint })
  t.equal(withoutCredentials.code, 2, 'check-consistency through ETCD_ENDPOINTS without credentials cannot check')
  const withCredentials = await runCheckConsistency({ ...env, ETCD_ENDPOINTS: endpoint, ETCD_USERNAME: root.username, ETCD_PASSWORD: root.password })
  t.match(withCredentials, { code: 0, stdout: /1 records, 1 digest entries, consistent/ }, 'with ETCD_USERNAME and ETCD_PASSWORD it checks')
  t.notOk(withoutCredentials.stderr.includes(root.password) || withCredentials.stdout.includes(root.password), 'the password is not printed')

  t.match(await server.stop(), { code: 0 })
  // The server stopped: check-consistency opens the locked data itself.
  t.match(await runCheckConsistency(env), { code: 0, stdout: /1 records, 1 digest entries, consistent/ }, 'npm run check-consistency opens the locked data')

  server = startServer(env)
  await waitForReady(server, `${url}/ready`)
  t.equal((await request(location, { headers: admin })).status, 200, 'after a restart the key is still there')
  t.equal(readFileSync(passwordFile, 'utf8').trim(), root.password, 'and the root password is the same')
  const output = server.stdout() + server.stderr()
  t.ok(output.split('\n').length > 3, 'the server\'s output was captured')
  t.notOk(output.includes(root.password), 'the root password is in no log line')
})

t.test('a data folder of an unlocked etcd is locked at start, its keys kept', { skip }, async t => {
  const dir = await tempDir(t)
  const dataDir = join(dir, 'etcd')
  const [clientPort, peerPort] = await freePorts(2)
  const endpoint = `http://127.0.0.1:${clientPort}`
  const options = { dataDir, clientPort, peerPort, logFile: join(dir, 'etcd.log') }

  const old = await plainEtcd(dataDir, clientPort, peerPort)
  t.equal((await etcdctl(endpoint, ['put', '/sensu.io/old', 'kept'])).code, 0, 'an old etcd, written without credentials')
  await old.close()

  let embedded = await startEmbeddedEtcd(options)
  t.teardown(() => embedded.stop())
  t.not((await etcdctl(endpoint, ['get', '/sensu.io/old'])).code, 0, 'after the start, a read without credentials fails')
  t.equal((await etcdctl(endpoint, ['get', '--print-value-only', '/sensu.io/old'], embedded.auth)).stdout, 'kept\n', 'and the key is there for the credentials')
  const password = embedded.auth.password
  t.equal(readFileSync(join(dataDir, ROOT_PASSWORD_FILE), 'utf8').trim(), password, 'which are kept in the data folder')
  await embedded.stop()

  embedded = await startEmbeddedEtcd(options)
  t.equal(embedded.auth.password, password, 'a second start opens it with the same password')
  await embedded.stop()

  rmSync(join(dataDir, ROOT_PASSWORD_FILE))
  await t.rejects(startEmbeddedEtcd(options), { message: new RegExp(`is locked, but the file of its root password, ${join(dataDir, ROOT_PASSWORD_FILE)}, is missing.*put that file back`) },
    'locked, its password file gone: refused, with what to do')
  t.equal(await fetch(`${endpoint}/health`).then(() => 'up', () => 'down'), 'down', 'and the etcd it started is stopped')
})

t.test('a start that stopped after writing the password, before locking, is finished', { skip }, async t => {
  const dir = await tempDir(t)
  const dataDir = join(dir, 'etcd')
  const [clientPort, peerPort] = await freePorts(2)
  const endpoint = `http://127.0.0.1:${clientPort}`
  const old = await plainEtcd(dataDir, clientPort, peerPort)
  t.equal((await etcdctl(endpoint, ['put', '/k', 'v'])).code, 0)
  await old.close()
  writeFileSync(join(dataDir, ROOT_PASSWORD_FILE), 'written-before-the-crash\n', { mode: 0o600 })

  const embedded = await startEmbeddedEtcd({ dataDir, clientPort, peerPort, logFile: join(dir, 'etcd.log') })
  t.teardown(() => embedded.stop())
  t.equal(embedded.auth.password, 'written-before-the-crash', 'the password on disk is the one etcd is locked with')
  t.not((await etcdctl(endpoint, ['get', '/k'])).code, 0, 'locked')
  t.equal((await etcdctl(endpoint, ['get', '--print-value-only', '/k'], embedded.auth)).stdout, 'v\n', 'the key kept')
})

t.test('etcd refusing to start: its own last words in the error', { skip }, async t => {
  const dir = await tempDir(t)
  const keysDir = join(dir, 'keys')
  // A write-ahead log etcd cannot read.
  mkdirSync(join(keysDir, 'member', 'wal'), { recursive: true, mode: 0o700 })
  writeFileSync(join(keysDir, 'member', 'wal', '0000000000000000-0000000000000000.wal'), 'not a wal\n')
  const [port, clientPort, peerPort] = await freePorts(3)
  const server = startServer({ DATA_DIR: join(dir, 'data'), ETCD_DATA_DIR: keysDir, PORT: String(port), ETCD_CLIENT_PORT: String(clientPort), ETCD_PEER_PORT: String(peerPort) })
  const { code } = await server.exited
  t.equal(code, 1, 'exit code 1')
  const stderr = server.stderr()
  t.match(stderr, /^fastify-etcd-apikeys: the embedded etcd exited at start: .*wal: max entry size limit exceeded.*\(all it said is in .*etcd\.log\)\n$/,
    `one line with etcd's own words: ${stderr.trim()}`)
  t.match(readFileSync(join(dir, 'data', 'etcd.log'), 'utf8'), /max entry size limit exceeded/, 'and the log file has them too')
})

t.test('the server goes on once etcd\'s auth token has expired', { skip }, async t => {
  const dir = await tempDir(t)
  const dataDir = join(dir, 'etcd')
  const [clientPort, peerPort] = await freePorts(2)
  const embedded = await startEmbeddedEtcd({ dataDir, clientPort, peerPort, logFile: join(dir, 'etcd.log') })
  const { auth } = embedded
  await embedded.stop()
  // The same locked data, with tokens that expire after 2 s of disuse instead of 5 minutes.
  const etcd = await plainEtcd(dataDir, clientPort, peerPort, ['--auth-token-ttl=2', '--log-level=info'])
  t.teardown(() => etcd.close())
  const api = await buildApp(t, etcd, { etcd: { hosts: etcd.endpoints, auth } })
  const key = await api.createKey('default')
  t.equal((await api.call({ path: key.location.replace('/api/core/v2', ''), auth: keyAuth(key.secret) })).statusCode, 200)

  // etcd says when it drops a token; the server's was last used just above.
  const dropped = () => (readFileSync(etcd.logFile, 'utf8').match(/deleted a simple token/g) ?? []).length
  await waitFor(() => dropped() > 0, { timeout: 30_000, what: 'etcd to drop a token ("deleted a simple token" in its log)' })
  t.equal((await api.call({ path: key.location.replace('/api/core/v2', ''), auth: keyAuth(key.secret) })).statusCode, 200, 'a key still authenticates')
  const another = await api.call({ method: 'POST', path: '/namespaces/default/apikey', body: {} })
  t.equal(another.statusCode, 201, 'and a key is created')
})
