// The plugin from CommonJS: require() of the ES module works on Node.js >= 20.19.
//   ETCD_ENDPOINTS=http://127.0.0.1:2379 node examples/commonjs.cjs
const Fastify = require('fastify')
const { default: apiKeys, bearerTokens } = require('fastify-etcd-apikeys')

async function main () {
  const app = Fastify()
  await app.register(apiKeys, {
    etcd: { hosts: (process.env.ETCD_ENDPOINTS ?? 'http://127.0.0.1:2379').split(',') },
    root: process.env.ETCD_ROOT ?? '/examples',
    authenticate: bearerTokens(['example-admin-token'])
  })
  const created = await app.inject({
    method: 'POST',
    url: '/api/core/v2/namespaces/default/apikey',
    headers: { authorization: 'Bearer example-admin-token' }
  })
  const verified = await app.apiKeys.verify(created.json().key)
  console.log(JSON.stringify({ created: created.statusCode, verified: verified !== null }))
  await app.close()
}
main()
