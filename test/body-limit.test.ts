// A body over bodyLimit gets its 413, readable by a client that sends the whole body before it
// reads (Node's fetch), on a real listening server: inject() has no socket to close. The rest of
// such a body is drained within LINGER_MAX_BYTES and LINGER_MAX_MS, then the connection is closed.
import t, { type Test } from 'tap'
import { connect } from 'node:net'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { Etcd3 } from 'etcd3'
import { sharedEtcd } from './helpers/etcd.js'
import { ADMIN_TOKEN, BASE, adminAuth, buildApp, uniqueRoot, type TestApp } from './helpers/app.js'
import { ensureBuilt, freePorts, startProcess, startServer, tempDir, waitForReady } from './helpers/standalone.js'
import { LINGER_MAX_BYTES, LINGER_MAX_MS } from '../lib/http/lingering-close.js'

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

const MiB = 1024 * 1024
const CREATE = `${BASE}/namespaces/default/apikey`

/** The app of buildApp, listening on a free loopback port; its base URL. */
async function listening (t: Test): Promise<{ api: TestApp, port: number, url: string }> {
  const api = await buildApp(t, etcd)
  await api.app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = api.app.server.address() as AddressInfo
  return { api, port, url: `http://127.0.0.1:${port}` }
}

/**
 * `count` POSTs of `bytes` bytes with Node's fetch, one after the other, from a process of their
 * own: how each ended. (A fetch from the server's own process hardly ever sees the reset.)
 */
async function oversizedPosts (url: string, count: number, bytes: number, headers: Record<string, string>): Promise<string[]> {
  const client = startProcess(process.execPath, ['--input-type=module', '-e', FETCH_CLIENT, JSON.stringify({ url, count, bytes, headers })], { PATH: process.env.PATH ?? '' })
  const { code } = await client.exited
  if (code !== 0) throw new Error(`the fetch client failed: ${client.stderr()}`)
  return JSON.parse(client.stdout()) as string[]
}

const FETCH_CLIENT = `
  const { url, count, bytes, headers } = JSON.parse(process.argv[1])
  const body = Buffer.alloc(bytes, 'a')
  const outcomes = []
  for (let i = 0; i < count; i++) {
    try {
      const res = await fetch(url, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } })
      outcomes.push(res.status + ' ' + await res.text())
    } catch (err) {
      outcomes.push(err.message + ': ' + err.cause?.code)
    }
  }
  process.stdout.write(JSON.stringify(outcomes))
`

/** How a raw exchange ended: what came back, whether the server closed, how much was sent. */
interface Exchange { answer: string, closed: boolean, sent: number }

/**
 * Sends `head` and then body bytes from `chunk()` (undefined: stop sending) over a raw connection,
 * as fast as the connection takes them or every `intervalMs`, until the server closes it or
 * `waitMs` has passed.
 */
async function sendUntilClosed (port: number, head: string, chunk: () => Buffer | undefined, { intervalMs = 0, waitMs = 30_000 } = {}): Promise<Exchange> {
  const socket = connect(port, '127.0.0.1')
  let answer = ''
  let sent = 0
  socket.setEncoding('utf8')
  socket.on('data', text => { answer += text })
  socket.on('error', () => {})
  const closed = new Promise<boolean>(resolve => socket.once('close', () => resolve(true)))
  socket.write(head)
  const pump = async () => {
    for (;;) {
      if (socket.destroyed) return
      const next = chunk()
      if (next === undefined) return
      sent += next.length
      if (!socket.write(next)) await Promise.race([new Promise(resolve => socket.once('drain', resolve)), closed])
      if (intervalMs > 0) await sleep(intervalMs)
    }
  }
  pump().catch(() => {})
  const result = await Promise.race([closed, sleep(waitMs).then(() => false)])
  socket.destroy()
  return { answer, closed: result, sent }
}

const headOf = (headers: string) => `POST ${CREATE} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${adminAuth}\r\n` +
  `Content-Type: application/json\r\n${headers}\r\n`

/** Checks that every outcome is `status` with the JSON error of `code`. */
function allAnswered (t: Test, outcomes: string[], status: number, code: number) {
  t.equal(outcomes.length, 20)
  t.same(outcomes.filter(outcome => !outcome.startsWith(`${status} `)), [], `every 3 MiB POST is answered ${status} (none ends in EPIPE or a reset)`)
  for (const outcome of new Set(outcomes.filter(outcome => outcome.startsWith(`${status} `)))) {
    t.match(JSON.parse(outcome.slice(4)), { message: String, code }, `a ${status} in Sensu's shape`)
  }
}

t.test('the standalone server: 20 POSTs of 3 MiB with fetch, every one answered 413', async t => {
  await ensureBuilt()
  const [port] = await freePorts(1)
  const root = uniqueRoot()
  const server = startServer({
    PORT: String(port), DATA_DIR: await tempDir(t), ETCD_ENDPOINTS: etcd.endpoints.join(','), ETCD_ROOT: root, APIKEY_ADMIN_TOKEN: ADMIN_TOKEN, LOG_LEVEL: 'warn'
  })
  t.teardown(() => server.stop())
  const url = `http://127.0.0.1:${port}`
  await waitForReady(server, `${url}/ready`)
  allAnswered(t, await oversizedPosts(`${url}${CREATE}`, 20, 3 * MiB, { authorization: adminAuth }), 413, 1)
  const client = new Etcd3({ hosts: etcd.endpoints })
  t.teardown(() => client.close())
  t.same(await client.getAll().prefix(`${root}/`).keys(), [], 'nothing was written to etcd')
})

t.test('a host\'s Fastify: 20 POSTs of 3 MiB with fetch, every one answered 413', async t => {
  const { api, url } = await listening(t)
  allAnswered(t, await oversizedPosts(`${url}${CREATE}`, 20, 3 * MiB, { authorization: adminAuth }), 413, 1)
  t.same(await api.snapshot(), {}, 'nothing was written to etcd')
})

t.test('the same POSTs without credentials: every one answered 401', async t => {
  // The 401 goes out before the body is read, so it is an early answer too.
  const { api, url } = await listening(t)
  allAnswered(t, await oversizedPosts(`${url}${CREATE}`, 20, 3 * MiB, {}), 401, 5)
  t.same(await api.snapshot(), {}, 'nothing was written to etcd')
})

t.test('a drained body leaves a sound connection: the next request on it is answered', async t => {
  const { api, port } = await listening(t)
  const body = Buffer.alloc(3 * MiB, 'a')
  const next = `GET ${BASE}/namespaces/default/apikey HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${adminAuth}\r\nConnection: close\r\n\r\n`
  let step = 0
  const parts = [body, Buffer.from(next)]
  const exchange = sendUntilClosed(port, headOf(`Content-Length: ${body.length}\r\n`), () => parts[step++])
  const { answer } = await exchange
  const statuses = [...answer.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map(match => Number(match[1]))
  t.same(statuses, [413, 200], 'the 413, then the next request\'s 200 on the same connection')
  t.same(await api.snapshot(), {}, 'nothing was written to etcd')
})

t.test('a body far past the drain bound: the server closes the connection', async t => {
  const { api, port } = await listening(t)
  const chunk = Buffer.alloc(64 * 1024, 'a')
  const GiB = 1024 * MiB
  // A declared length over bodyLimit (413 at once), and a chunked body that goes over it while
  // read (413 after 64 KiB); both would go on for a GiB, or for ever, if the server read it all.
  const cases: Array<[string, string, () => Buffer]> = [
    ['Content-Length: 1 GiB', `Content-Length: ${GiB}\r\n`, () => chunk],
    ['chunked, without end', 'Transfer-Encoding: chunked\r\n', () => Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')])]
  ]
  for (const [title, header, next] of cases) {
    const { closed, sent, answer } = await sendUntilClosed(port, headOf(header), next)
    t.ok(closed, `${title}: the server closed the connection`)
    // Past the bound the server stops reading; what was sent beyond it sits in socket buffers.
    t.ok(sent < LINGER_MAX_BYTES + 64 * MiB, `${title}: it stopped reading after ${(sent / MiB).toFixed(1)} MiB sent`)
    t.comment(`${title}: ${(sent / MiB).toFixed(1)} MiB sent; answer seen by the client: ${answer.split('\r\n')[0] || 'none'}`)
  }
  t.same(await api.snapshot(), {}, 'nothing was written to etcd')
})

t.test('a body that trickles in: the 413 is read, the connection closed after the time bound', async t => {
  const { api, port } = await listening(t)
  // 1 KiB every 100 ms: 10 MiB would take three hours.
  const { closed, sent, answer } = await sendUntilClosed(port, headOf(`Content-Length: ${10 * MiB}\r\n`), () => Buffer.alloc(1024, 'a'), { intervalMs: 100, waitMs: LINGER_MAX_MS + 20_000 })
  t.match(answer, /^HTTP\/1\.1 413 [^]*\r\n\r\n\{"message":"[^"]+","code":1\}$/, 'the whole 413 reached the client')
  t.ok(closed, `then the server closed the connection (${(sent / 1024).toFixed(0)} KiB sent)`)
  t.same(await api.snapshot(), {}, 'nothing was written to etcd')
})
