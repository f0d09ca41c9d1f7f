// The standalone server (`npm start`): configuration checked at start, the embedded etcd and its
// data across a restart, the admin token kept and never logged, /health and /ready, SIGTERM.
import t from 'tap'
import { statSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { connect, createServer } from 'node:net'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { ConfigError, loadConfig } from '../lib/server/config.js'
import { dedicatedEtcd } from './helpers/etcd.js'
import { ensureBuilt, freePorts, logLines, startServer, tempDir, waitForReady, type ServerProcess } from './helpers/standalone.js'
import { waitFor } from './helpers/wait.js'

await ensureBuilt()

/** Runs the CLI to its end: for starts that must fail. */
async function runToExit (env: Record<string, string>) {
  const server = startServer(env)
  const { code } = await server.exited
  return { code, stdout: server.stdout(), stderr: server.stderr() }
}

/** Starts the server and resolves once /health answers; stopped in teardown. */
async function start (t: { teardown(fn: () => unknown): void }, env: Record<string, string>): Promise<{ server: ServerProcess, url: string }> {
  const server = startServer(env)
  t.teardown(() => server.stop())
  const url = `http://127.0.0.1:${env.PORT}`
  await waitForReady(server, `${url}/health`)
  return { server, url }
}

t.test('a bad variable stops the start with one line that names it', async t => {
  const bad: Array<[Record<string, string>, string]> = [
    [{ PORT: 'abc' }, 'PORT'],
    [{ PORT: '70000' }, 'PORT'],
    [{ ETCD_ENDPOINTS: '127.0.0.1:2379' }, 'ETCD_ENDPOINTS'],
    [{ ETCD_ENDPOINTS: 'http://a:1,b:2' }, 'ETCD_ENDPOINTS'],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
    [{ REQUEST_TIMEOUT_MS: '0' }, 'REQUEST_TIMEOUT_MS'],
    [{ LAST_USE_INTERVAL_MS: '86400001' }, 'LAST_USE_INTERVAL_MS'],
    [{ ETCD_USERNAME: 'root' }, 'ETCD_USERNAME and ETCD_PASSWORD'],
    [{ TLS_CERT_FILE: '/nonexistent/cert.pem', TLS_KEY_FILE: '/nonexistent/key.pem' }, 'TLS_CERT_FILE'],
    [{ ETCD_CA_FILE: '/nonexistent/ca.pem' }, 'ETCD_CA_FILE'],
    [{ APIKEY_ADMIN_TOKEN: 'short secret' }, 'APIKEY_ADMIN_TOKEN']
  ]
  for (const [env, name] of bad) {
    t.throws(() => loadConfig(env), { constructor: ConfigError, message: new RegExp(`^${name} must be`) }, JSON.stringify(env))
  }
  t.throws(() => loadConfig({ APIKEY_ADMIN_TOKEN: 'short secret' }), { message: /^(?!.*short secret)/ }, 'a secret\'s value is never shown')

  // And the process: exit code 1 and that one line.
  const { code, stderr, stdout } = await runToExit({ PORT: 'abc' })
  t.equal(code, 1, 'exit code 1')
  t.equal(stdout, '', 'nothing on stdout')
  t.match(stderr, /^fastify-etcd-apikeys: PORT must be a port number, 0 to 65535 \(got "abc"\)\n$/, 'one line on stderr, naming PORT')
})

t.test('defaults', async t => {
  const config = loadConfig({})
  t.match(config, { port: 8080, host: '127.0.0.1', root: '/sensu.io', admins: ['admin'], requestTimeout: 5000, embeddedEtcd: { clientPort: 2379, peerPort: 2380 } })
  t.match(config.embeddedEtcd.dataDir, /\/data\/etcd$/, 'etcd data in ./data/etcd')
  t.equal(config.etcdEndpoints, undefined, 'no ETCD_ENDPOINTS: the embedded etcd')
})

t.test('without an etcd binary and without ETCD_ENDPOINTS, the message gives the three ways', async t => {
  const dataDir = await tempDir(t)
  const { code, stderr } = await runToExit({ PATH: '/nonexistent', DATA_DIR: dataDir })
  t.equal(code, 1)
  t.match(stderr, /apt-get install etcd-server/, 'install etcd')
  t.match(stderr, /brew install etcd/)
  t.match(stderr, /ETCD_ENDPOINTS/, 'or point at a cluster')
  t.match(stderr, /docker compose up/, 'or run the stack')
})

t.test('an embedded etcd port already in use is said, with what to do', async t => {
  const dataDir = await tempDir(t)
  const busy = createServer()
  await new Promise<void>(resolve => busy.listen(0, '127.0.0.1', resolve))
  t.teardown(() => busy.close())
  const port = (busy.address() as { port: number }).port
  const [peerPort] = await freePorts(1)
  const { code, stderr } = await runToExit({ DATA_DIR: dataDir, ETCD_CLIENT_PORT: String(port), ETCD_PEER_PORT: String(peerPort) })
  t.equal(code, 1)
  t.match(stderr, new RegExp(`port ${port} \\(ETCD_CLIENT_PORT\\) is in use`))
  t.match(stderr, new RegExp(`ETCD_ENDPOINTS=http://127.0.0.1:${port}`), 'and how to use the etcd that runs there')
  t.equal(stderr.trim().split('\n').length, 1, 'on one line')
})

/** The environment of a server on an embedded etcd of its own: free ports, data in `dataDir`. */
async function embeddedEnv (dataDir: string): Promise<Record<string, string>> {
  const [port, clientPort, peerPort] = await freePorts(3)
  return { DATA_DIR: dataDir, PORT: String(port), ETCD_CLIENT_PORT: String(clientPort), ETCD_PEER_PORT: String(peerPort), LOG_LEVEL: 'trace' }
}

t.test('npm start: an embedded etcd, keys that survive a restart, a token never logged', async t => {
  const dataDir = await tempDir(t)
  const env = await embeddedEnv(dataDir)
  let { server, url } = await start(t, env)
  const tokenFile = join(dataDir, 'admin-token')
  const token = readFileSync(tokenFile, 'utf8').trim()
  t.equal(statSync(tokenFile).mode & 0o777, 0o600, 'the admin token is kept with mode 0600')
  t.ok(server.stdout().includes(tokenFile), 'the log says where the token is')
  const auth = { authorization: `Bearer ${token}` }

  const created = await fetch(`${url}/api/core/v2/namespaces/default/apikey`, { method: 'POST', headers: auth })
  t.equal(created.status, 201)
  const requestId = created.headers.get('x-request-id')
  t.match(requestId, /^[0-9a-f-]{36}$/, 'every answer carries its request id')
  const { key: secret, metadata } = await created.json() as { key: string, metadata: { name: string } }
  const location = `${url}${created.headers.get('location')}`
  t.equal((await fetch(location, { headers: { authorization: `Key ${secret}` } })).status, 200, 'the new key authenticates')

  t.match(await server.stop(), { code: 0, timedOut: false }, 'SIGTERM: exit 0')
  const firstRun = server.stdout() + server.stderr()
  t.ok(firstRun.includes('"signal":"SIGTERM"'), 'the log says why it stopped')
  t.equal(await fetch(location).then(() => 'up', () => 'down'), 'down', 'the server no longer listens')

  ;({ server, url } = await start(t, env))
  const again = await fetch(location, { headers: auth })
  t.equal(again.status, 200, 'after a restart the key is still there')
  t.equal(((await again.json()) as { metadata: { name: string } }).metadata.name, metadata.name)
  t.equal(readFileSync(tokenFile, 'utf8').trim(), token, 'and the admin token is the same')
  t.equal((await fetch(location, { headers: { authorization: `Key ${secret}` } })).status, 200, 'and so is the secret')
  t.match(await server.stop(), { code: 0, timedOut: false })

  // The logs, at trace level, of both runs: captured, JSON, request ids, and no credential.
  const output = firstRun + server.stdout() + server.stderr()
  const lines = output.split('\n').filter(line => line.trim() !== '')
  t.ok(lines.length >= 10, `the logs were captured: ${lines.length} lines`)
  const records = logLines(output)
  t.equal(records.length, lines.length, 'every line is JSON')
  t.ok(records.filter(r => r.reqId === requestId).length >= 2, 'a request\'s lines carry its id')
  t.ok(records.filter(r => r.req !== undefined || r.res !== undefined).every(r => typeof r.reqId === 'string'), 'every request line has a request id')
  for (const needle of [token, secret, secret.slice(4, 47)]) {
    t.notOk(lines.some(line => line.includes(needle)), `no log line carries ${needle === token ? 'the admin token' : 'the secret'}`)
  }
})

t.test('/health says the process is up; /ready says whether etcd answers', async t => {
  const etcd = await dedicatedEtcd()
  t.teardown(() => etcd.close())
  const dataDir = await tempDir(t)
  const [port] = await freePorts(1)
  const { url } = await start(t, { DATA_DIR: dataDir, PORT: String(port), ETCD_ENDPOINTS: etcd.endpoints.join(','), REQUEST_TIMEOUT_MS: '1000' })
  const get = async (path: string) => {
    const res = await fetch(`${url}${path}`)
    return { status: res.status, body: await res.json() }
  }
  t.same(await get('/health'), { status: 200, body: { status: 'ok' } })
  t.same(await get('/ready'), { status: 200, body: { status: 'ready' } })
  await etcd.freeze()
  t.teardown(() => etcd.thaw())
  const notReady = await get('/ready')
  t.equal(notReady.status, 503, 'etcd frozen: not ready')
  t.equal(notReady.body.code, 8)
  t.same(await get('/health'), { status: 200, body: { status: 'ok' } }, 'but the process is up')
  await etcd.thaw()
  const ready = await waitFor(async () => {
    const { status } = await get('/ready')
    return status === 200 && status
  }, { timeout: 20_000, interval: 250, what: '/ready to answer 200 once etcd is thawed' })
  t.equal(ready, 200, 'ready again once etcd answers, without a restart')
  t.same(await get('/nowhere'), { status: 404, body: { message: 'no route GET /nowhere', code: 2 } }, 'unknown routes answer JSON')

  const openapi = await get('/openapi.json')
  t.equal(openapi.status, 200, 'the OpenAPI document is served')
  t.same(Object.keys(openapi.body.paths).sort(), [
    '/api/core/v2/apikeys',
    '/api/core/v2/namespaces/{namespace}/apikey',
    '/api/core/v2/namespaces/{namespace}/apikey/{apikey}',
    '/api/core/v2/namespaces/{namespace}/apikey/{apikey}/rotate',
    '/health',
    '/ready'
  ], 'with the routes of the reference, rotate, revoke-all and the probes; the alias and catch-alls hidden')
  const post = openapi.body.paths['/api/core/v2/namespaces/{namespace}/apikey'].post
  t.ok(post.responses['201'].content['application/json'].schema.properties.key, 'made from the TypeBox schemas')
})

/** Sends `text` over a raw connection, and `rest` only after `pause` ms; resolves with the answer and whether the server closed. */
async function rawExchange (port: number, text: string, pause = 0, rest = ''): Promise<{ answer: string, closed: boolean, ms: number }> {
  const started = Date.now()
  const socket = connect(port, '127.0.0.1')
  let answer = ''
  socket.setEncoding('utf8')
  socket.on('data', chunk => { answer += chunk })
  socket.on('error', () => {})
  socket.write(text)
  if (pause > 0) setTimeout(() => { if (!socket.destroyed) socket.write(rest) }, pause)
  const closed = await Promise.race([once(socket, 'close').then(() => true), sleep(15_000).then(() => false)])
  socket.destroy()
  return { answer, closed, ms: Date.now() - started }
}

t.test('a slow client or an oversized request is refused in JSON, the connection closed', async t => {
  const dataDir = await tempDir(t)
  const env: Record<string, string> = { ...await embeddedEnv(dataDir), HTTP_REQUEST_TIMEOUT_MS: '1000' }
  const { server } = await start(t, env)
  const port = Number(env.PORT)

  // Headers that never end: the request must have arrived within HTTP_REQUEST_TIMEOUT_MS.
  const slow = await rawExchange(port, 'GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ', 10_000, '1\r\n\r\n')
  t.ok(slow.closed, `a request still arriving is cut off (after ${slow.ms} ms)`)
  t.ok(slow.ms < 5000, 'within the timeout and Node\'s one-second check, not the 10 s the client takes')
  t.match(slow.answer, /^HTTP\/1\.1 408 /, '408')
  t.same(JSON.parse(slow.answer.split('\r\n\r\n')[1]), { message: 'the request did not arrive in time', code: 1 }, 'in the JSON error shape')

  const big = await rawExchange(port, `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`)
  t.match(big.answer, /^HTTP\/1\.1 431 /, 'headers over 16 KiB: 431')
  t.same(JSON.parse(big.answer.split('\r\n\r\n')[1]), { message: 'the request line and headers exceed 16384 bytes', code: 1 })
  t.ok(big.closed, 'and the connection is closed')

  const url = await rawExchange(port, `GET /api/core/v2/namespaces/${'n'.repeat(20_000)}/apikey HTTP/1.1\r\nHost: x\r\n\r\n`)
  t.match(url.answer, /^HTTP\/1\.1 431 /, 'a URL over the limit too')

  const healthy = await rawExchange(port, 'GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
  t.match(healthy.answer, /^HTTP\/1\.1 200 /, 'a normal request still works')
  t.match(await server.stop(), { code: 0 })
})

t.test('failed authentications are limited per client address, behind a trusted proxy too', async t => {
  const dataDir = await tempDir(t)
  const env: Record<string, string> = { ...await embeddedEnv(dataDir), AUTH_FAILURE_MAX: '3', AUTH_FAILURE_WINDOW_MS: '60000', TRUST_PROXY: '127.0.0.1' }
  const { url } = await start(t, env)
  const token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim()
  const list = (client: string, bearer: string) => fetch(`${url}/api/core/v2/namespaces/default/apikey`, {
    headers: { authorization: `Bearer ${bearer}`, 'x-forwarded-for': client }
  })
  const attacker = '198.51.100.7'
  for (let i = 1; i <= 3; i++) t.equal((await list(attacker, `guess-${i}`)).status, 401, `failure ${i}`)
  const refused = await list(attacker, 'guess-4')
  t.equal(refused.status, 429, 'past AUTH_FAILURE_MAX: 429')
  t.ok(Number(refused.headers.get('retry-after')) > 0, 'with Retry-After')
  t.equal((await list(attacker, token)).status, 200, 'the right token is still served')
  t.equal((await list(attacker, 'guess-5')).status, 429, 'while a wrong one is not')
  t.equal((await list('198.51.100.8', 'guess-1')).status, 401, 'another client behind the same proxy is counted on its own')
})
