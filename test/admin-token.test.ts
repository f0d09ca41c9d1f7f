// The standalone server's admin tokens: the admin token file is trusted only when no one but the
// server's user can have read or written it, several tokens (file or APIKEY_ADMIN_TOKEN) are each
// accepted, and DATA_DIR and the file are made private on first start. No token reaches the output.
import t, { type Test } from 'tap'
import { chmodSync, chownSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { ConfigError, loadConfig } from '../lib/server/config.js'
import { sharedEtcd } from './helpers/etcd.js'
import { BASE, uniqueRoot } from './helpers/app.js'
import { ensureBuilt, freePorts, logLines, startServer, tempDir, waitForReady, type ServerProcess } from './helpers/standalone.js'

await ensureBuilt()
const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

const TOKEN_A = 'first-admin-token-0123456789'
const TOKEN_B = 'second-admin-token-abcdefghij'
const TOKEN_C = 'third-admin-token-not-given-0'

/** The server's environment: its own port, DATA_DIR, root under the tests' etcd; `extra` on top. */
async function serverEnv (dataDir: string, extra: Record<string, string> = {}): Promise<Record<string, string>> {
  const [port] = await freePorts(1)
  return { PORT: String(port), DATA_DIR: dataDir, ETCD_ENDPOINTS: etcd.endpoints.join(','), ETCD_ROOT: uniqueRoot(), LOG_LEVEL: 'trace', ...extra }
}

/** Starts the server and waits until it answers; stopped in teardown. */
async function start (t: Test, env: Record<string, string>): Promise<{ server: ServerProcess, url: string }> {
  const server = startServer(env)
  t.teardown(() => server.stop())
  const url = `http://127.0.0.1:${env.PORT}`
  await waitForReady(server, `${url}/health`)
  return { server, url }
}

/** The status of a list with `Authorization: Bearer <token>`. */
async function listAs (url: string, token: string): Promise<number> {
  const res = await fetch(`${url}${BASE}/namespaces/default/apikey`, { headers: { authorization: `Bearer ${token}` } })
  await res.arrayBuffer()
  return res.status
}

/** Stops the server and checks its output: captured (`atLeast` lines), and holding none of `tokens`. */
async function checkOutput (t: Test, server: ServerProcess, tokens: string[], atLeast: number) {
  t.match(await server.stop(), { code: 0, timedOut: false }, 'the server stops cleanly')
  const output = server.stdout() + server.stderr()
  const lines = output.split('\n').filter(line => line.trim() !== '')
  t.ok(lines.length >= atLeast, `its output was captured: ${lines.length} lines`)
  t.equal(logLines(output).length, lines.length, 'every line is JSON')
  tokens.forEach((token, i) => t.notOk(output.includes(token), `no line carries admin token ${i + 1}`))
}

t.test('an admin token file the server cannot trust stops the start: one line naming the file and the problem', async t => {
  const root = await tempDir(t)
  const cases: Array<[string, (dataDir: string, file: string) => void, RegExp]> = [
    ['mode 0644', (_, file) => writeFileSync(file, `${TOKEN_A}\n`, { mode: 0o644 }), /has mode 0644; it must be 0600: chmod 600 /],
    ['mode 0640', (_, file) => writeFileSync(file, `${TOKEN_A}\n`, { mode: 0o640 }), /has mode 0640; it must be 0600/],
    ['a symbolic link to a good file', (dataDir, file) => {
      const target = join(dataDir, 'elsewhere')
      writeFileSync(target, `${TOKEN_A}\n`, { mode: 0o600 })
      symlinkSync(target, file)
    }, /is a symbolic link; it must be a regular file/],
    ['a token too short', (_, file) => writeFileSync(file, 'short-token\n', { mode: 0o600 }), /has a bad line 1: each line must hold one token of at least 16 printable characters/],
    ['a good token, then one too short', (_, file) => writeFileSync(file, `${TOKEN_A}\nshort-token\n`, { mode: 0o600 }), /has a bad line 2: /],
    ['an empty file', (_, file) => writeFileSync(file, '', { mode: 0o600 }), /holds no token: write one a line .* or delete the file/],
    ['blank lines only', (_, file) => writeFileSync(file, '\n  \n\n', { mode: 0o600 }), /holds no token/],
    ['a folder', (_, file) => mkdirSync(file), /is not a regular file/]
  ]
  if (process.getuid?.() === 0) {
    cases.push(['owned by another user', (_, file) => {
      writeFileSync(file, `${TOKEN_A}\n`, { mode: 0o600 })
      chownSync(file, 65534, 65534)
    }, /is owned by uid 65534, not by the server's user \(uid 0\): chown it/])
  } else {
    t.comment('not root: the case of a file owned by another user is not run (no way to make one)')
  }
  for (const [title, make, problem] of cases) {
    const dataDir = join(root, title.replace(/\W+/g, '-'))
    mkdirSync(dataDir, { mode: 0o700 })
    const file = join(dataDir, 'admin-token')
    make(dataDir, file)
    // The modes asked for above are cut by the umask: set them as meant.
    if (title.startsWith('mode ')) chmodSync(file, Number.parseInt(title.slice(5), 8))
    const server = startServer(await serverEnv(dataDir))
    // A server that trusts the file would run on: stopped after a while, it fails the checks below.
    const code = await Promise.race([server.exited.then(exit => exit.code), sleep(30_000).then(() => 'still running')])
    if (code === 'still running') await server.stop()
    const stderr = server.stderr()
    t.equal(code, 1, `${title}: exit code 1`)
    t.equal(server.stdout(), '', `${title}: nothing on stdout`)
    t.equal(stderr.split('\n').filter(line => line !== '').length, 1, `${title}: one line on stderr`)
    t.ok(stderr.includes(`the admin token file ${file} `), `${title}: it names the file`)
    t.match(stderr, problem, `${title}: and says the problem`)
    t.notOk(stderr.includes(TOKEN_A) || stderr.includes('short-token'), `${title}: and shows no token`)
  }
})

t.test('a file with two tokens: each authenticates, another does not', async t => {
  const dataDir = await tempDir(t)
  chmodSync(dataDir, 0o700)
  const file = join(dataDir, 'admin-token')
  // Blank lines, spaces around a token and Windows line ends are forgiven; 0400 is stricter than 0600.
  writeFileSync(file, `${TOKEN_A}\r\n\n  ${TOKEN_B}  \n`)
  chmodSync(file, 0o400)
  const { server, url } = await start(t, await serverEnv(dataDir))
  t.equal(await listAs(url, TOKEN_A), 200, 'the first token')
  t.equal(await listAs(url, TOKEN_B), 200, 'the second token')
  t.equal(await listAs(url, TOKEN_C), 401, 'a token not in the file')
  t.equal(statSync(file).mode & 0o777, 0o400, 'the file is left as it was')
  await checkOutput(t, server, [TOKEN_A, TOKEN_B, TOKEN_C], 8)
})

t.test('APIKEY_ADMIN_TOKEN with several tokens: each authenticates, another does not', async t => {
  t.same(loadConfig({ APIKEY_ADMIN_TOKEN: `${TOKEN_A},${TOKEN_B}` }).adminTokens, [TOKEN_A, TOKEN_B], 'separated by a comma')
  t.same(loadConfig({ APIKEY_ADMIN_TOKEN: ` ${TOKEN_A}, ${TOKEN_B}\n${TOKEN_C} ` }).adminTokens, [TOKEN_A, TOKEN_B, TOKEN_C], 'by commas, spaces or line ends')
  for (const value of [`${TOKEN_A},short-token`, `${TOKEN_A} short-token`, ' , ', `${TOKEN_A},tökén-with-accents-0123`]) {
    t.throws(() => loadConfig({ APIKEY_ADMIN_TOKEN: value }), { constructor: ConfigError, message: /^APIKEY_ADMIN_TOKEN must be one or more admin tokens separated by commas or spaces, each at least 16 printable characters$/ },
      `refused, without showing it: ${JSON.stringify(value)}`)
  }

  const dataDir = await tempDir(t)
  const { server, url } = await start(t, await serverEnv(dataDir, { APIKEY_ADMIN_TOKEN: `${TOKEN_A}, ${TOKEN_B}` }))
  t.equal(await listAs(url, TOKEN_A), 200, 'the first token')
  t.equal(await listAs(url, TOKEN_B), 200, 'the second token')
  t.equal(await listAs(url, TOKEN_C), 401, 'a third one is refused')
  t.throws(() => statSync(join(dataDir, 'admin-token')), { code: 'ENOENT' }, 'no admin token file is made')
  await checkOutput(t, server, [TOKEN_A, TOKEN_B, TOKEN_C], 8)
})

t.test('first start: DATA_DIR is made 0700 and the admin token file 0600', async t => {
  const dataDir = join(await tempDir(t), 'not', 'yet')
  const { server, url } = await start(t, await serverEnv(dataDir))
  const file = join(dataDir, 'admin-token')
  t.equal(statSync(dataDir).mode & 0o777, 0o700, 'DATA_DIR 0700')
  t.equal(statSync(file).mode & 0o777, 0o600, 'the file 0600')
  const token = readFileSync(file, 'utf8').trim()
  t.match(token, /^[A-Za-z0-9_-]{43}$/, 'one random token, base64url')
  t.equal(await listAs(url, token), 200, 'and it authenticates')
  t.ok(server.stdout().includes(file), 'the log says where the token is kept')
  await checkOutput(t, server, [token], 4)
})

t.test('a DATA_DIR open to others is warned about, not refused', async t => {
  const dataDir = await tempDir(t)
  chmodSync(dataDir, 0o755)
  const { server, url } = await start(t, await serverEnv(dataDir))
  const token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim()
  t.equal(await listAs(url, token), 200, 'the server runs')
  const warning = logLines(server.stdout()).find(line => line.level === 40 && String(line.msg).includes(dataDir))
  t.match(warning?.msg, /has mode 0755: .* chmod 700 /, 'one warning names DATA_DIR and what to do')
  await checkOutput(t, server, [token], 4)
})
