// An existing Fastify backend with a login of its own adds API keys: its users manage keys with
// their session, and one of its own routes also takes `Authorization: Key <secret>`.
//   ETCD_ENDPOINTS=http://127.0.0.1:2379 npx tsx examples/embed.ts
//   curl -s -X POST localhost:3000/login -H 'content-type: application/json' \
//     -d '{"username":"alice","password":"alice-password"}'                  # {"session":"..."}
//   curl -s -X POST localhost:3000/api/core/v2/namespaces/default/apikey \
//     -H "Authorization: Bearer $SESSION"                                    # {"key":"sak_...",...}
//   curl -s localhost:3000/reports -H "Authorization: Key $KEY"              # 200; without: 401
import { randomBytes } from 'node:crypto'
import { pathToFileURL } from 'node:url'
import Fastify, { type FastifyRequest } from 'fastify'
import apiKeys from '../lib/index.js' // in your app: from 'fastify-etcd-apikeys'

// The backend's own users (a database, in real life). Admins may manage everyone's keys.
const users = new Map([
  ['alice', { password: 'alice-password', role: 'admin' }],
  ['bob', { password: 'bob-password', role: 'analyst' }]
])

export async function build (options: { etcd?: string[], root?: string, logger?: boolean } = {}) {
  const app = Fastify({ logger: options.logger ?? false })
  const sessions = new Map<string, string>() // session token -> username

  // The backend's own login, and how its own routes find the session's user.
  app.post<{ Body: { username: string, password: string } }>('/login', {
    schema: { body: { type: 'object', required: ['username', 'password'], properties: { username: { type: 'string' }, password: { type: 'string' } } } }
  }, async (request, reply) => {
    const user = users.get(request.body.username)
    if (user?.password !== request.body.password) return reply.code(401).send({ message: 'wrong username or password' })
    const session = randomBytes(24).toString('base64url')
    sessions.set(session, request.body.username)
    return { session }
  })
  const sessionUser = (request: FastifyRequest) => {
    const [scheme, token] = (request.headers.authorization ?? '').split(' ')
    return scheme === 'Bearer' ? sessions.get(token) : undefined
  }
  app.get('/me', async (request, reply) => {
    const username = sessionUser(request)
    return username ? { username } : reply.code(401).send({ message: 'log in first' })
  })

  // The plugin: the APIKey API under /api/core/v2, for the backend's logged-in users.
  await app.register(apiKeys, {
    etcd: { hosts: options.etcd ?? (process.env.ETCD_ENDPOINTS ?? 'http://127.0.0.1:2379').split(',') },
    root: options.root ?? '/sensu.io',
    authenticate: (request) => {
      const username = sessionUser(request)
      return username === undefined ? null : { username, admin: users.get(username)?.role === 'admin' }
    }
  })

  // One of the backend's own routes, for machines: an API key instead of a session.
  app.get('/reports', async (request, reply) => {
    const [scheme, secret] = (request.headers.authorization ?? '').split(' ')
    const key = scheme === 'Key' ? await app.apiKeys.verify(secret, request) : null
    if (key === null) return reply.code(401).send({ message: 'an API key is required: Authorization: Key <secret>' })
    return { for: key.username, reports: [{ name: 'weekly', rows: 42 }] }
  })
  return app
}

// Run directly (not imported by a test): listen until stopped.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const app = await build({ logger: true })
  await app.listen({ port: Number(process.env.PORT ?? 3000), host: process.env.HOST ?? '127.0.0.1' })
}
