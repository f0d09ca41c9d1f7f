// Every example runs, as a user would run it, against real etcd. The plain JavaScript examples
// import the package by its name, so they prove the built package (dist/) from ESM and CommonJS;
// curl.sh runs against the standalone server (dist/cli.js) as `npm start` starts it.
import t from 'tap'
import { execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { sharedEtcd } from './helpers/etcd.js'
import { uniqueRoot } from './helpers/app.js'
import {
  REPO, ensureBuilt, freePorts, logLines, processGone, request, startProcess, startServer, tempDir, waitForReady
} from './helpers/standalone.js'
import { build } from '../examples/embed.js'

const run = promisify(execFile)
await ensureBuilt()
const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

async function runExample (file: string): Promise<any> {
  const { stdout } = await run(process.execPath, [file], {
    env: { ...process.env, ETCD_ENDPOINTS: etcd.endpoints.join(','), ETCD_ROOT: uniqueRoot() },
    timeout: 60_000
  })
  return JSON.parse(stdout.trim().split('\n').at(-1) ?? '')
}

t.test('plain JavaScript, ESM', async t => {
  t.same(await runExample('examples/plain-javascript.mjs'), { created: 201, listedAsAlice: ['alice'], verified: true })
})

t.test('CommonJS require', async t => {
  t.same(await runExample('examples/commonjs.cjs'), { created: 201, verified: true })
})

t.test('embed.ts: a backend with its own login', async t => {
  const app = await build({ etcd: etcd.endpoints, root: uniqueRoot() })
  t.teardown(() => app.close())
  await app.ready()
  t.notOk(app.server.listening, 'build() does not listen')
  const KEYS = '/api/core/v2/namespaces/default/apikey'
  const login = async (username: string, password: string) =>
    await app.inject({ method: 'POST', url: '/login', payload: { username, password } })
  const bearer = (session: string) => ({ authorization: `Bearer ${session}` })

  t.equal((await login('alice', 'bob-password')).statusCode, 401, 'its login refuses a wrong password')
  const alice = (await login('alice', 'alice-password')).json().session
  const bob = (await login('bob', 'bob-password')).json().session
  t.match(alice, /^[\w-]{20,}$/, 'and gives a session')
  t.same((await app.inject({ url: '/me', headers: bearer(bob) })).json(), { username: 'bob' }, 'its own routes know the session')

  t.equal((await app.inject({ method: 'POST', url: KEYS })).statusCode, 401, 'the plugin: no session, no key')
  const created = await app.inject({ method: 'POST', url: KEYS, headers: bearer(bob) })
  t.equal(created.statusCode, 201, 'a session creates a key', { body: created.body })
  t.equal(created.json().username, 'bob', 'for the session\'s user')
  const forAlice = await app.inject({ method: 'POST', url: KEYS, headers: bearer(bob), payload: { username: 'alice' } })
  t.equal(forAlice.statusCode, 403, 'bob is no admin: no key for alice')
  const forCarol = await app.inject({ method: 'POST', url: KEYS, headers: bearer(alice), payload: { username: 'carol' } })
  t.equal(forCarol.statusCode, 201, 'alice, an admin by her role, makes one for carol')

  const { key: secret, metadata: { name } } = created.json()
  const reports = await app.inject({ url: '/reports', headers: { authorization: `Key ${secret}` } })
  t.equal(reports.statusCode, 200, '/reports with the key: 200', { body: reports.body })
  t.equal(reports.json().for, 'bob', 'as the key\'s user')
  t.equal((await app.inject({ url: '/reports' })).statusCode, 401, '/reports without a key: 401')
  t.equal((await app.inject({ url: '/reports', headers: bearer(bob) })).statusCode, 401, 'a session is no key')
  t.equal((await app.inject({ url: '/reports', headers: { authorization: `Key ${secret.slice(0, -8)}AAAAAAAA` } })).statusCode, 401, 'nor is a forged one')
  t.equal((await app.inject({ method: 'DELETE', url: `${KEYS}/${name}`, headers: bearer(bob) })).statusCode, 204, 'bob revokes his key')
  t.equal((await app.inject({ url: '/reports', headers: { authorization: `Key ${secret}` } })).statusCode, 401, 'which then no longer opens /reports')
})

t.test('embed.ts run directly (tsx) listens on PORT', async t => {
  const [port] = await freePorts(1) as [number]
  // What `npx tsx examples/embed.ts` runs, without npx in between (it would not pass SIGTERM on).
  const embed = startProcess(process.execPath, [join(REPO, 'node_modules/tsx/dist/cli.mjs'), 'examples/embed.ts'],
    { ...process.env, ETCD_ENDPOINTS: etcd.endpoints.join(','), PORT: String(port) })
  t.teardown(() => embed.stop(5_000))
  await waitForReady(embed, `http://127.0.0.1:${port}/me`, { status: 401 })
  t.equal((await request(`http://127.0.0.1:${port}/reports`)).status, 401, '/reports without a key: 401')
  t.match((await embed.stop(10_000)), { timedOut: false }, 'stops on SIGTERM')
  await t.rejects(request(`http://127.0.0.1:${port}/me`), 'and no longer listens')
})

t.test('curl.sh against the standalone server (npm start, embedded etcd)', async t => {
  const dir = await tempDir(t, 'apikeys-curl-')
  const [port, clientPort, peerPort] = await freePorts(3) as [number, number, number]
  const base = `http://127.0.0.1:${port}`
  // As `npm start` in dir: data in ./data, where curl.sh finds the admin token by default.
  const server = startServer({ PORT: String(port), DATA_DIR: join(dir, 'data'), ETCD_CLIENT_PORT: String(clientPort), ETCD_PEER_PORT: String(peerPort) }, dir)
  const embedded = { pid: 0 }
  // (tap runs teardowns last-registered first: this one before the removal of dir.)
  t.teardown(async () => {
    await server.stop(10_000)
    // An embedded etcd that outlived its server would hold its ports and dir.
    if (embedded.pid > 0 && !await processGone(embedded.pid, 0)) process.kill(embedded.pid, 'SIGKILL')
  })
  await waitForReady(server, `${base}/ready`)
  const serving = logLines(server.stdout()).find(line => line.msg === 'serving the APIKey API')
  embedded.pid = Number(/embedded, pid (\d+)/.exec(serving?.etcd ?? '')?.[1])
  t.ok(embedded.pid > 0, 'the server runs its embedded etcd', { serving })

  const curlSh = async (env: Record<string, string>) => {
    const child = spawn(join(REPO, 'examples/curl.sh'), [], { cwd: dir, env: { PATH: process.env.PATH ?? '', BASE_URL: base, ...env } })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', chunk => { stdout += chunk })
    child.stderr.on('data', chunk => { stderr += chunk })
    const [code] = await once(child, 'close')
    return { code, stdout, stderr, statuses: [...stdout.matchAll(/^(\d{3}) /gm)].map(m => Number(m[1])) }
  }
  const ok = await curlSh({})
  t.equal(ok.code, 0, 'it exits 0', ok)
  t.same(ok.statuses, [200, 201, 200, 200, 204], 'list, create, get, patch, delete: the statuses SPEC.md gives', ok)
  t.match(ok.stdout, /^201 POST .*\n.*Location: \/api\/core\/v2\/namespaces\/default\/apikey\/[0-9a-f-]{36} /m, 'and the Location it goes on with')

  const refused = await curlSh({ TOKEN: 'not-the-admin-token-0123' })
  t.equal(refused.code, 1, 'another status stops it non-zero', refused)
  t.same(refused.statuses, [401], 'at the first step, printing that status', refused)

  const exit = await server.stop(10_000)
  t.same(exit, { code: 0, signal: null, timedOut: false }, 'SIGTERM: the server exits 0 within 10 s')
  t.ok(await processGone(embedded.pid, 10_000), 'and its embedded etcd is stopped')
})
