// etcd out of space: an etcd with a small quota, filled from outside until it raises its NOSPACE
// alarm. Writes are then a 503 that says so at once (no retries to the deadline), reads go on, and
// the standalone server's /ready is 503 naming the alarm, until the operator recovers as the README
// says: compact to the current revision, defragment, disarm.
import t from 'tap'
import { Writable } from 'node:stream'
import { join } from 'node:path'
import { Etcd3 } from 'etcd3'
import { noop } from 'cockatiel'
import {
  dockerHost, etcdFlags, freePorts, ownTempDir, runContainerMember, runEtcdProcess, startWithFallback, type ControllableEtcd
} from './helpers/etcd.js'
import { ADMIN_TOKEN, buildApp, keyAuth, type TestApp } from './helpers/app.js'
import { checkError } from './helpers/assert.js'
import { waitFor } from './helpers/wait.js'
import { EtcdKeys } from '../lib/store/key-builder.js'
import { loadConfig } from '../lib/server/config.js'
import { buildServer } from '../lib/server/server.js'

/** Small enough to fill in a second with a few puts, large enough for the plugin's own keys. */
const QUOTA_BYTES = 2 * 1024 * 1024
const FILLER_BYTES = 256 * 1024
/** Long, so that a write retried until its deadline could not pass for a prompt answer. */
const REQUEST_TIMEOUT = 20_000
/** Short, so that the uses made during the alarm are written (and refused) while it lasts. */
const LAST_USE_INTERVAL = 200

/** One etcd of this test's own whose database may hold QUOTA_BYTES. */
async function etcdWithQuota (): Promise<ControllableEtcd> {
  const quota = `--quota-backend-bytes=${QUOTA_BYTES}`
  return await startWithFallback({
    what: `with a ${QUOTA_BYTES}-byte quota`,
    container: async image => await runContainerMember(await dockerHost(), {
      image,
      command: [...etcdFlags({ name: 'etcd', dataDir: '/etcd-data', clientUrl: 'http://0.0.0.0:2379', peerUrl: 'http://127.0.0.1:2380' }), quota]
    }),
    binary: async etcdPath => {
      const dir = await ownTempDir()
      const [clientPort, peerPort] = await freePorts(2)
      const endpoint = `http://127.0.0.1:${clientPort}`
      const args = [...etcdFlags({ name: 'etcd', dataDir: join(dir, 'data'), clientUrl: endpoint, peerUrl: `http://127.0.0.1:${peerPort}` }), quota]
      return await runEtcdProcess({ etcdPath, dir, args, endpoint })
    }
  })
}

const alarmsOf = async (client: Etcd3) => (await client.maintenance.alarm({ action: 'Get' })).alarms.map(raised => raised.alarm)

/** Puts big values under one key, outside the app's root, until etcd refuses for want of space; the puts made. */
async function fill (client: Etcd3, key: string): Promise<number> {
  const value = Buffer.alloc(FILLER_BYTES, 'x')
  for (let puts = 0; puts < 10 * QUOTA_BYTES / FILLER_BYTES; puts++) {
    try {
      await client.put(key).value(value)
    } catch (err) {
      if (/database space exceeded/.test(String(err))) return puts
      throw err
    }
  }
  throw new Error(`etcd took ${10 * QUOTA_BYTES} bytes of puts without running out of space`)
}

/** The recovery the README gives (etcdctl compact, defrag, alarm disarm), through etcd's API. */
async function recover (client: Etcd3) {
  const { header } = await client.maintenance.status()
  await client.kv.compact({ revision: header.revision, physical: true })
  await client.maintenance.defragment()
  const { alarms } = await client.maintenance.alarm({ action: 'Get' })
  for (const raised of alarms) await client.maintenance.alarm({ action: 'Deactivate', memberID: raised.memberID, alarm: raised.alarm })
}

const etcd = await etcdWithQuota()
t.teardown(() => etcd.close())

t.test('out of space: writes are a 503 that says so, reads go on, /ready names the alarm; the README\'s recovery works', async t => {
  const api: TestApp = await buildApp(t, etcd, { requestTimeout: REQUEST_TIMEOUT, lastUseInterval: LAST_USE_INTERVAL })
  const bob = await api.createKey('default', { username: 'bob' })
  const mine = await api.createKey('default')
  const carol = await api.createKey('other', { username: 'carol' })

  // The standalone server over the same etcd and root, for /ready.
  let logLines = 0
  const server = await buildServer(loadConfig({
    ETCD_ENDPOINTS: etcd.endpoints.join(','),
    ETCD_ROOT: api.root,
    APIKEY_ADMIN_TOKEN: ADMIN_TOKEN,
    REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT)
  }), etcd.endpoints, { logStream: new Writable({ write (chunk, encoding, done) { logLines++; done() } }) })
  t.teardown(() => server.close())
  await server.ready()
  const ready = () => server.inject({ url: '/ready' })
  t.equal((await ready()).statusCode, 200, '/ready is 200 before')

  // An operator's client: etcd3's default one counts NOSPACE as a failure of the member and would open its circuit.
  const operator = new Etcd3({ hosts: etcd.endpoints, faultHandling: { host: () => noop, global: noop } })
  t.teardown(() => operator.close())
  const puts = await fill(operator, `${api.root}-filler`)
  t.comment(`etcd ran out of space after ${puts} puts of ${FILLER_BYTES} bytes`)
  t.same(await alarmsOf(operator), ['Nospace'], 'etcd raised its NOSPACE alarm')
  const before = await api.snapshot()

  // Writes: at once a 503 saying etcd is out of space, not a retry until the deadline.
  const started = Date.now()
  const writes = [
    await api.call({ method: 'POST', path: '/namespaces/default/apikey', body: {} }),
    await api.call({ method: 'POST', path: '/namespaces/default/apikey', body: {}, auth: keyAuth(bob.secret) }),
    await api.call({ method: 'PATCH', path: `/namespaces/default/apikey/${mine.name}`, body: { metadata: { labels: { a: 'b' } } } })
  ]
  const seconds = (Date.now() - started) / 1000
  for (const res of writes) {
    checkError(t, res, 503, 8, 'a write')
    t.equal(res.headers['retry-after'], '1', 'with Retry-After')
    t.equal(res.json().message, 'etcd is out of space (NOSPACE alarm); writes are refused until an operator compacts, defragments and disarms it')
  }
  t.ok(seconds < REQUEST_TIMEOUT / 1000 / 2, `three refused writes took ${seconds.toFixed(2)} s: answered, not retried until the ${REQUEST_TIMEOUT / 1000} s deadline`)
  t.same(await api.snapshot(), before, 'etcd holds no new key')
  const outOfSpace = api.logs().filter(line => line.level === 50 && /etcd is out of space/.test(line.msg))
  t.equal(outOfSpace.length, 3, 'each refused write logged at error level, for the operator')
  // Creates that arrive together share one etcd transaction (group commit): etcd refuses it too.
  const burst = await Promise.all(Array.from({ length: 10 }, async () => await api.call({ method: 'POST', path: '/namespaces/default/apikey', body: {} })))
  t.same(burst.map(res => res.statusCode), burst.map(() => 503), 'ten creates at once: each a 503')
  t.same(await api.snapshot(), before, 'and etcd holds no new key')

  // Revoking goes on: etcd takes deletes when out of space (they are how space comes back).
  t.equal((await api.call({ method: 'DELETE', path: `/namespaces/default/apikey/${mine.name}` })).statusCode, 204, 'DELETE of a key: 204')
  const revoked = await api.call({ method: 'DELETE', path: '/apikeys?username=carol' })
  t.same([revoked.statusCode, revoked.json()], [200, { username: 'carol', deleted: 1 }], 'revoke-all of a user: 200')
  t.equal((await api.call({ path: '/namespaces/other/apikey', auth: keyAuth(carol.secret) })).statusCode, 401, 'carol\'s key no longer authenticates')
  t.equal((await api.etcd.get(`${api.root}/apikey-fences/carol`).string()), null, 'without a fence (etcd takes no put): her keys were deleted, and none can be made meanwhile')

  // Reads go on: a key made before, the list, and a key authenticating.
  const got = await api.call({ path: `/namespaces/default/apikey/${bob.name}` })
  t.equal(got.statusCode, 200, 'GET a key made before: 200')
  t.same(got.json(), bob.resource)
  const list = await api.call({ path: '/namespaces/default/apikey', auth: keyAuth(bob.secret) })
  t.equal(list.statusCode, 200, 'bob\'s key authenticates and lists: 200')
  t.same(list.json().map((key: { metadata: { name: string } }) => key.metadata.name), [bob.name])
  // Bob's key was used: its last use is a write too, and etcd refuses it (etcd 3.4 counts no put
  // nested in a transaction against its quota; the usage batch carries one it does count).
  const usageRefused = await waitFor(() => api.logs().find(line => line.level === 40 && /apikey last use: etcd did not take the write/.test(line.msg)), { what: 'the usage write to be refused' })
  t.match(usageRefused.error, /space/, `the last use was not written: "${String(usageRefused.error)}"`)
  t.equal(await api.etcd.get(new EtcdKeys(api.root).usage('default', bob.name)).string(), null, 'etcd holds no last use of bob\'s key')

  const notReady = await ready()
  t.equal(notReady.statusCode, 503, '/ready is 503')
  t.equal(notReady.headers['retry-after'], '1', 'with Retry-After')
  t.same(notReady.json(), {
    message: 'etcd raised the NOSPACE alarm: it is out of space and refuses writes until an operator compacts, defragments and disarms it',
    code: 8
  }, 'naming the alarm')
  t.ok(logLines > 0, `the server logged (${logLines} lines)`)

  await recover(operator)
  t.same(await alarmsOf(operator), [], 'compacted, defragmented, disarmed: no alarm')
  const created = await api.call({ method: 'POST', path: '/namespaces/default/apikey', body: {}, auth: keyAuth(bob.secret) })
  t.equal(created.statusCode, 201, 'a write works again')
  t.equal((await api.call({ path: `/${String(created.headers.location)}` })).statusCode, 200, 'and the new key reads back')
  const keys = Object.keys(await api.snapshot()).filter(key => key.startsWith(`${api.root}/apikeys/`))
  t.equal(keys.length, 2, 'etcd holds bob\'s key made before (the others were revoked) and the new one')
  t.equal((await ready()).statusCode, 200, '/ready is 200 again')
})
