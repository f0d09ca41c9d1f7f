// Options: defaults, a wrong option failing register with its name, the boot failing without etcd,
// and the plugin closing only the etcd client it made.
import t from 'tap'
import Fastify from 'fastify'
import { Etcd3 } from 'etcd3'
import { createServer } from 'node:net'
import apiKeys, { anyOf, apiKeyAuth, bearerTokens, type ApiKeysOptions } from '../lib/index.js'
import { sharedEtcd } from './helpers/etcd.js'
import { ADMIN_TOKEN, adminAuth, uniqueRoot } from './helpers/app.js'

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

const authenticate = bearerTokens([ADMIN_TOKEN])

async function register (options: Partial<ApiKeysOptions>) {
  const app = Fastify()
  try {
    await app.register(apiKeys, { etcd: { hosts: etcd.endpoints }, root: uniqueRoot(), authenticate, ...options } as ApiKeysOptions)
    await app.ready()
    return app
  } catch (err) {
    await app.close()
    throw err
  }
}

t.test('a wrong option fails register with a message that names it', async t => {
  const wrong: Array<[string, Record<string, unknown>]> = [
    ['authenticate', { authenticate: undefined }],
    ['authenticate', { authenticate: 'secret' }],
    ['authorize', { authorize: true }],
    ['root', { root: 'sensu.io' }],
    ['root', { root: '/sensu.io/' }],
    ['basePath', { basePath: 'api' }],
    ['basePath', { basePath: '/api/' }],
    ['keyPrefix', { keyPrefix: '' }],
    ['keyPrefix', { keyPrefix: 'has space' }],
    ['bodyLimit', { bodyLimit: 0 }],
    ['bodyLimit', { bodyLimit: '64k' }],
    ['requestTimeout', { requestTimeout: -1 }],
    ['requestTimeout', { requestTimeout: 1.5 }],
    ['lastUseInterval', { lastUseInterval: 0 }],
    ['lastUseInterval', { lastUseInterval: '60s' }],
    ['lastUseInterval', { lastUseInterval: 86_400_001 }],
    ['etcd', { etcd: 'http://127.0.0.1:2379' }],
    ['etcd.hosts', { etcd: { hosts: '127.0.0.1:2379' } }],
    ['etcd.hosts', { etcd: { hosts: [] } }],
    ['etcd.hosts', { etcd: { hosts: ['http://a:1', 'https://b:2'] } }],
    ['authFailureLimit', { authFailureLimit: 5 }],
    ['authFailureLimit.max', { authFailureLimit: { max: 0 } }],
    ['authFailureLimit.timeWindow', { authFailureLimit: { timeWindow: '1m' } }],
    ['maxKeysPerUser', { maxKeysPerUser: 0 }],
    ['writeLimit', { writeLimit: 10 }],
    ['writeLimit', { writeLimit: true }],
    ['writeLimit.perSecond', { writeLimit: { perSecond: 0 } }],
    ['writeLimit.perSecond', { writeLimit: { perSecond: '10' } }],
    ['writeLimit.burst', { writeLimit: { burst: 0.5 } }],
    ['cache', { cache: 'yes' }]
  ]
  for (const [name, options] of wrong) {
    await t.rejects(register(options), { message: new RegExp(`option "${name.replace('.', '\\.')}"`) }, `${name}: ${JSON.stringify(options)}`)
  }
})

t.test('an etcd that cannot be reached fails the boot, not the first request', async t => {
  // A port that accepts nothing: a server that was listening and is closed again.
  const server = createServer()
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise(resolve => server.close(resolve))
  const started = Date.now()
  await t.rejects(register({ etcd: { hosts: `http://127.0.0.1:${port}` }, requestTimeout: 800 }), { message: /etcd did not answer within 800 ms/ })
  t.ok(Date.now() - started < 5000, 'within the request timeout, not a hang')
})

t.test('basePath and keyPrefix', async t => {
  const app = await register({ basePath: '/custom/v1', keyPrefix: 'acme_', authenticate: anyOf(authenticate, apiKeyAuth()) })
  t.teardown(() => app.close())
  const res = await app.inject({ method: 'POST', url: '/custom/v1/namespaces/default/apikey', headers: { authorization: adminAuth } })
  t.equal(res.statusCode, 201)
  t.match(res.json().key, /^acme_[A-Za-z0-9_-]{49}$/, 'the secret carries the prefix')
  t.equal(res.headers.location, `/custom/v1/namespaces/default/apikey/${res.json().metadata.name}`)
  t.equal((await app.inject({ url: String(res.headers.location), headers: { authorization: `Key ${res.json().key}` } })).statusCode, 200)
  t.equal((await app.inject({ url: '/api/core/v2/namespaces/default/apikey', headers: { authorization: adminAuth } })).statusCode, 404, 'nothing at the default basePath')
})

t.test('the plugin closes only the etcd client it made', async t => {
  const own = new Etcd3({ hosts: etcd.endpoints })
  t.teardown(() => own.close())
  const hosted = await register({ etcd: own })
  t.equal(hosted.apiKeys.etcd, own, 'it uses the host\'s client')
  await hosted.close()
  t.equal(await own.get('/nothing-here'), null, 'which still works after the app closed')

  const made = await register({})
  const client = made.apiKeys.etcd
  await made.close()
  await t.rejects(client.get('/nothing-here').exec(), { message: /client was already closed/ }, 'its own client is closed with the app')
})

t.test('defaults', async t => {
  const { defaults } = await import('../lib/index.js')
  t.same(defaults, {
    etcd: { hosts: 'http://127.0.0.1:2379' },
    root: '/sensu.io',
    basePath: '/api/core/v2',
    keyPrefix: 'sak_',
    bodyLimit: 65536,
    requestTimeout: 5000,
    authFailureLimit: { max: 30, timeWindow: 60_000 },
    maxKeysPerUser: 100,
    writeLimit: { perSecond: 10, burst: 20 },
    cache: true,
    metrics: false,
    metricsPath: '/metrics',
    lastUseInterval: 60_000
  })
})
