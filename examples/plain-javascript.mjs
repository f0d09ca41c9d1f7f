// The plugin from plain JavaScript (ESM): register it, make a key, use it.
//   ETCD_ENDPOINTS=http://127.0.0.1:2379 node examples/plain-javascript.mjs
import Fastify from 'fastify'
import apiKeys, { anyOf, apiKeyAuth, bearerTokens } from 'fastify-etcd-apikeys'

const app = Fastify()
await app.register(apiKeys, {
  etcd: { hosts: (process.env.ETCD_ENDPOINTS ?? 'http://127.0.0.1:2379').split(',') },
  root: process.env.ETCD_ROOT ?? '/examples',
  authenticate: anyOf(bearerTokens(['example-admin-token']), apiKeyAuth())
})

const created = await app.inject({
  method: 'POST',
  url: '/api/core/v2/namespaces/default/apikey',
  headers: { authorization: 'Bearer example-admin-token' },
  payload: { username: 'alice' }
})
const { key: secret, metadata } = created.json()
const listed = await app.inject({
  url: '/api/core/v2/namespaces/default/apikey',
  headers: { authorization: `Key ${secret}` }
})
const verified = await app.apiKeys.verify(secret)
console.log(JSON.stringify({
  created: created.statusCode,
  listedAsAlice: listed.json().map(k => k.username),
  verified: verified?.metadata.name === metadata.name
}))
await app.close()
