// Proves test/helpers/etcd.ts: a dedicated etcd can be frozen, thawed, stopped
// and started again on the same address with its data.
import t from 'tap'
import { Etcd3 } from 'etcd3'
import { connect } from 'node:net'
import { dedicatedEtcd } from './helpers/etcd.js'

const etcd = await dedicatedEtcd()
t.teardown(() => etcd.close())

// A fresh client for every check: etcd3's default circuit breaker refuses a host
// for 5 s after 3 failed calls, which would blur what this test is about.
async function getWithin1s (key: string): Promise<string | null> {
  const client = new Etcd3({ hosts: etcd.endpoints })
  try {
    return await client.get(key).options({ deadline: new Date(Date.now() + 1000) }).string()
  } finally {
    client.close()
  }
}

/** Each test writes a key of its own, so that it stands alone. */
async function put (key: string, value: string): Promise<void> {
  const client = new Etcd3({ hosts: etcd.endpoints })
  try {
    await client.put(key).value(value)
  } finally {
    client.close()
  }
}

/** 'connected', or the error code of a plain TCP connection to the client port. */
async function tcpConnect (): Promise<string> {
  const { hostname, port } = new URL(etcd.endpoints[0] ?? '')
  return await new Promise((resolve) => {
    const socket = connect({ host: hostname, port: Number(port), timeout: 2000 })
    socket.once('connect', () => { socket.destroy(); resolve('connected') })
    socket.once('timeout', () => { socket.destroy(); resolve('timeout') })
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message))
  })
}

t.test('put and get', async (t) => {
  await put('k', 'v1')
  t.equal(await getWithin1s('k'), 'v1')
})

t.test('freeze: calls time out; thaw: they work again', async (t) => {
  await put('frozen', 'v2')
  await etcd.freeze()
  t.teardown(() => etcd.thaw()) // in case an assertion below throws
  t.equal(await tcpConnect(), 'connected', 'the port still accepts connections')
  const started = Date.now()
  await t.rejects(getWithin1s('frozen'), 'a get with a 1 s deadline fails while frozen')
  t.ok(Date.now() - started < 5000, 'and fails by its deadline')
  await etcd.thaw()
  t.equal(await getWithin1s('frozen'), 'v2')
})

t.test('stop: calls fail; start: same address, same data', async (t) => {
  await put('stopped', 'v3')
  await etcd.stop()
  t.equal(await tcpConnect(), 'ECONNREFUSED', 'the address refuses connections')
  await t.rejects(getWithin1s('stopped'), 'a get fails while stopped')
  await etcd.start()
  t.equal(await getWithin1s('stopped'), 'v3', 'the key written before the stop is still there')
})
