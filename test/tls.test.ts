// The standalone server with TLS everywhere, as issue 3 asks: etcd over https with client
// certificates and its own authentication, the API served over HTTPS. The test makes its own
// certificates (openssl) and runs its own etcd binary, since neither the shared etcd nor the
// container image has TLS or auth.
import t, { type Test } from 'tap'
import { spawnSync } from 'node:child_process'
import { closeSync, openSync, readFileSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Etcd3, type IOptions } from 'etcd3'
import {
  ensureBuilt,
  findOnPath,
  freePorts,
  tempDir,
  processGone,
  request,
  spawnOwned,
  startServer,
  waitForReady,
  type ServerProcess
} from './helpers/standalone.js'

const ADMIN_TOKEN = 'tls-test-admin-token-0123456789'
const ROOT_PASSWORD = `root-${Math.random().toString(36).slice(2)}`
const SERVER_USER = 'apikeys'
const SERVER_PASSWORD = `pw-${Math.random().toString(36).slice(2)}`
const BASE = '/api/core/v2/namespaces/default/apikey'

const etcdBinary = findOnPath('etcd', ['/usr/bin'])
if (etcdBinary === undefined) throw new Error('tls.test.ts needs an etcd binary (/usr/bin/etcd or etcd on PATH): apt-get install etcd-server')
const openssl = findOnPath('openssl')
if (openssl === undefined) throw new Error('tls.test.ts needs openssl on PATH: apt-get install openssl')

await ensureBuilt()
// tap runs teardowns last-registered first: the folder goes after etcd and the servers.
const dir = await tempDir(t, 'apikeys-tls-')

// ---------------------------------------------------------------------------
// Certificates: a CA, and signed by it etcd's, a client's and the API server's.

function opensslRun (...args: string[]): void {
  const run = spawnSync(openssl as string, args, { cwd: dir, encoding: 'utf8' })
  if (run.status !== 0) throw new Error(`openssl ${args.join(' ')} failed: ${run.stderr}`)
}

const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']

async function certificate (name: string, extensions: string): Promise<void> {
  opensslRun('req', ...EC_KEY, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`)
  await writeFile(join(dir, `${name}.ext`), `basicConstraints=CA:FALSE\n${extensions}\n`)
  opensslRun('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial',
    '-days', '1', '-out', `${name}.crt`, '-extfile', `${name}.ext`)
}

opensslRun('req', '-x509', ...EC_KEY, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '1', '-subj', '/CN=apikeys-test-ca',
  '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
const LOOPBACK_NAMES = 'subjectAltName=IP:127.0.0.1,DNS:localhost'
// etcd 3.4's gateway dials etcd itself with the server certificate: it needs clientAuth too.
await certificate('etcd', `${LOOPBACK_NAMES}\nextendedKeyUsage=serverAuth,clientAuth`)
// Not named like an etcd user: with --client-cert-auth etcd takes the CN as the user name.
await certificate('client', 'extendedKeyUsage=clientAuth')
await certificate('api', `${LOOPBACK_NAMES}\nextendedKeyUsage=serverAuth`)
const file = (name: string) => join(dir, name)
const pem = (name: string) => readFileSync(file(name))

// ---------------------------------------------------------------------------
// etcd with TLS on its client URL, client certificates required, then auth enabled.

const [clientPort, peerPort, apiPort] = await freePorts(3) as [number, number, number]
const endpoint = `https://127.0.0.1:${clientPort}`
const etcdLog = file('etcd.log')
const log = openSync(etcdLog, 'a')
const etcd = spawnOwned(etcdBinary, [
  '--name', 'tls-test',
  '--data-dir', file('etcd-data'),
  '--listen-client-urls', endpoint,
  '--advertise-client-urls', endpoint,
  '--listen-peer-urls', `http://127.0.0.1:${peerPort}`,
  '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`,
  '--initial-cluster', `tls-test=http://127.0.0.1:${peerPort}`,
  '--cert-file', file('etcd.crt'),
  '--key-file', file('etcd.key'),
  '--client-cert-auth',
  '--trusted-ca-file', file('ca.crt'),
  '--logger', 'zap',
  '--log-level', 'warn'
], { stdio: ['ignore', log, log] })
closeSync(log)
t.teardown(async () => {
  etcd.kill('SIGTERM')
  if (!await processGone(etcd.pid as number, 10_000)) etcd.kill('SIGKILL')
})

const clientCert = { ca: pem('ca.crt'), cert: pem('client.crt'), key: pem('client.key') }
{
  const deadline = Date.now() + 30_000
  for (;;) {
    if (etcd.exitCode !== null) throw new Error(`etcd exited (${etcd.exitCode}): ${readFileSync(etcdLog, 'utf8')}`)
    const health = await request(`${endpoint}/health`, { ...clientCert, timeoutMs: 1000 }).catch(() => undefined)
    if (health?.status === 200 && JSON.parse(health.body).health === 'true') break
    if (Date.now() > deadline) throw new Error(`etcd at ${endpoint} not healthy after 30 s: ${readFileSync(etcdLog, 'utf8')}`)
    await sleep(100)
  }
}

const tlsCredentials: IOptions['credentials'] = {
  rootCertificate: pem('ca.crt'),
  certChain: pem('client.crt'),
  privateKey: pem('client.key')
}
function etcdClient (auth?: { username: string, password: string }): Etcd3 {
  return new Etcd3({ hosts: [endpoint], credentials: tlsCredentials, ...(auth && { auth }) })
}

// root (needed to enable auth) and a user for the server that may only touch its root /sensu.io/.
{
  const setup = etcdClient()
  try {
    await setup.user('root').create(ROOT_PASSWORD)
    await setup.user('root').addRole('root')
    const role = await setup.role(SERVER_USER).create()
    await role.grant({ permission: 'Readwrite', range: setup.range({ prefix: '/sensu.io/' }) })
    await setup.user(SERVER_USER).create(SERVER_PASSWORD)
    await setup.user(SERVER_USER).addRole(SERVER_USER)
    await setup.auth.authEnable()
  } finally {
    setup.close()
  }
}
const root = etcdClient({ username: 'root', password: ROOT_PASSWORD })
t.teardown(() => root.close())

/** The server's environment: etcd over TLS with a client certificate and a password, HTTPS. */
const fullEnv = (): Record<string, string> => ({
  PORT: String(apiPort),
  HOST: '127.0.0.1',
  DATA_DIR: file('data'),
  ETCD_ENDPOINTS: endpoint,
  ETCD_CA_FILE: file('ca.crt'),
  ETCD_CERT_FILE: file('client.crt'),
  ETCD_KEY_FILE: file('client.key'),
  ETCD_USERNAME: SERVER_USER,
  ETCD_PASSWORD: SERVER_PASSWORD,
  TLS_CERT_FILE: file('api.crt'),
  TLS_KEY_FILE: file('api.key'),
  APIKEY_ADMIN_TOKEN: ADMIN_TOKEN
})

/** Starts the server; teardown kills it if a test left it running. */
function serve (t: Test, env: Record<string, string>): ServerProcess {
  const server = startServer(env)
  t.teardown(async () => { await server.stop(5_000) })
  return server
}

/** A start that must fail: it exits non-zero, within `withinMs`, with one line on stderr. */
async function failedStart (t: Test, env: Record<string, string>, withinMs: number): Promise<string> {
  const started = Date.now()
  const server = serve(t, env)
  let timer: ReturnType<typeof setTimeout> | undefined
  const exit = await Promise.race([server.exited, new Promise<undefined>(resolve => { timer = setTimeout(() => resolve(undefined), withinMs) })])
  clearTimeout(timer)
  t.ok(exit, `the server exits within ${withinMs / 1000} s`, { stdout: server.stdout() })
  t.ok(exit !== undefined && exit.code !== 0 && exit.code !== null, 'with a non-zero code', { exit })
  const stderr = server.stderr().trim()
  // Node's own warnings, apart (grpc-js gives the IP address of https://127.0.0.1:port as the TLS
  // server name, and Node would warn about it, DEP0123: the CLI keeps that one quiet).
  const lines = stderr.split('\n')
  const nodeWarnings = lines.filter(line => /^\(node:\d+\) |^\(Use `node --trace-/.test(line))
  const own = lines.filter(line => !nodeWarnings.includes(line))
  t.equal(own.length, 1, 'one line of its own on stderr', { stderr })
  t.match(own[0], /^fastify-etcd-apikeys: \S/, 'saying why', { stderr })
  t.same(nodeWarnings, [], 'and no Node warning')
  for (const secret of [SERVER_PASSWORD, ROOT_PASSWORD, 'wrong-password-4d1f', ADMIN_TOKEN]) {
    t.notOk(server.stdout().includes(secret) || stderr.includes(secret), 'no password or token in its output')
  }
  t.comment(`failed start in ${Date.now() - started} ms: ${stderr}`)
  return own[0]
}

t.test('etcd refuses a client without its password, so auth is really on', async t => {
  const anonymous = etcdClient()
  t.teardown(() => anonymous.close())
  await t.rejects(anonymous.get('/sensu.io/apikeys/x').string(), /permission denied|user name/i, 'a client certificate alone is not enough')
  const server = etcdClient({ username: SERVER_USER, password: SERVER_PASSWORD })
  t.teardown(() => server.close())
  t.equal(await server.get('/sensu.io/apikeys/x').string(), null, 'the server\'s user reads under /sensu.io/')
  await t.rejects(server.get('/elsewhere').string(), /permission denied/i, 'and nowhere else')
})

t.test('over HTTPS, against etcd with TLS, client certificates and auth', async t => {
  const server = serve(t, fullEnv())
  const api = `https://127.0.0.1:${apiPort}`
  const ca = pem('ca.crt')
  await waitForReady(server, `${api}/ready`, { ca })
  const admin = { authorization: `Bearer ${ADMIN_TOKEN}` }

  await t.rejects(request(`${api}/health`), /self-signed|unable to verify|certificate/i, 'its certificate is not trusted without the CA')
  await t.rejects(request(`http://127.0.0.1:${apiPort}/health`), 'it does not answer plain HTTP')

  const created = await request(`${api}${BASE}`, {
    ca,
    method: 'POST',
    headers: { ...admin, 'content-type': 'application/json' },
    body: JSON.stringify({ metadata: { labels: { over: 'tls' } } })
  })
  t.equal(created.status, 201, 'creates a key', { body: created.body })
  const { key: secret, metadata: { name } } = JSON.parse(created.body)
  t.match(secret, /^sak_/, 'with its secret')
  t.equal(created.headers.location, `${BASE}/${name}`, 'Location names it')

  const read = await request(`${api}${created.headers.location}`, { ca, headers: admin })
  t.equal(read.status, 200, 'reads it', { body: read.body })
  t.equal(JSON.parse(read.body).metadata.name, name, 'the same key')
  t.notOk(read.body.includes(secret), 'without its secret')

  const listed = await request(`${api}${BASE}`, { ca, headers: { authorization: `Key ${secret}` } })
  t.equal(listed.status, 200, 'authenticates with Authorization: Key', { body: listed.body })
  t.same(JSON.parse(listed.body).map((k: { metadata: { name: string } }) => k.metadata.name), [name], 'and lists the key')
  const forged = await request(`${api}${BASE}`, { ca, headers: { authorization: `Key ${secret.slice(0, -8)}AAAAAAAA` } })
  t.equal(forged.status, 401, 'another secret is refused')

  const stored = await root.getAll().prefix('/sensu.io/apikeys/default/').strings()
  t.same(Object.keys(stored), [`/sensu.io/apikeys/default/${name}`], 'etcd holds it under /sensu.io/apikeys/default/')
  const record = JSON.parse(stored[`/sensu.io/apikeys/default/${name}`])
  t.match(record, { metadata: { name, namespace: 'default', labels: { over: 'tls' } }, username: 'admin' }, 'as the JSON record')
  t.notOk(JSON.stringify(stored).includes(secret), 'without the secret')

  for (const secretValue of [SERVER_PASSWORD, ROOT_PASSWORD, ADMIN_TOKEN, secret]) {
    t.notOk(server.stdout().includes(secretValue) || server.stderr().includes(secretValue), 'no password, token or secret in the logs')
  }
  const exit = await server.stop()
  t.same(exit, { code: 0, signal: null, timedOut: false }, 'SIGTERM: exit 0 within 10 s')
})

t.test('a wrong etcd password: exit non-zero, one line, no password in it', async t => {
  const message = await failedStart(t, { ...fullEnv(), ETCD_PASSWORD: 'wrong-password-4d1f' }, 30_000)
  t.match(message, /authentication failed|password/i, 'the line says the authentication failed')
})

t.test('without the client certificate the server cannot reach etcd', async t => {
  const { ETCD_CERT_FILE: _cert, ETCD_KEY_FILE: _key, ...withoutCert } = fullEnv()
  const message = await failedStart(t, { ...withoutCert, REQUEST_TIMEOUT_MS: '2000' }, 30_000)
  t.match(message, /etcd/, 'the line says etcd is the trouble')
})
