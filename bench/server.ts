// The server under test: the standalone server as dist/ builds it (configured by the same
// environment variables), plus one protected route that authenticates `Authorization: Key
// <secret>` through fastify.apiKeys.verify, as a host's own route would. bench/run.ts transpiles
// this file and starts it as a separate process; BENCH_REPO names the repository whose dist/ it runs.
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

type ServerModule = typeof import('../lib/server/server.js')
type ConfigModule = typeof import('../lib/server/config.js')

const repo = process.env.BENCH_REPO
if (repo === undefined) throw new Error('BENCH_REPO must name the repository whose dist/ to run')
const dist = (file: string) => pathToFileURL(join(repo, 'dist', file)).href
// dist/server/ since the standalone server has its folder; dist/ itself in older builds (to compare).
const serverDir = existsSync(join(repo, 'dist', 'server', 'server.js')) ? 'server' : '.'
const { buildServer } = await import(dist(join(serverDir, 'server.js'))) as ServerModule
const { loadConfig } = await import(dist(join(serverDir, 'config.js'))) as ConfigModule

const config = loadConfig(process.env)
const app = await buildServer(config, config.etcdEndpoints ?? [])

app.get('/bench/protected', async (request, reply) => {
  const header = request.headers.authorization
  const secret = typeof header === 'string' && header.startsWith('Key ') ? header.slice(4) : ''
  const key = await app.apiKeys.verify(secret, request)
  if (key === null) return reply.code(401).send({ message: 'unauthenticated', code: 5 })
  return { username: key.username }
})

// For the million section: the cache's status and the process's memory, after a full GC when the
// server runs with --expose-gc.
app.get('/bench/memory', async () => {
  const gc = (globalThis as { gc?: () => void }).gc
  gc?.()
  return { cache: app.apiKeys.cacheStatus(), memory: process.memoryUsage(), gc: gc !== undefined }
})

await app.listen({ port: config.port, host: config.host })

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    app.close().then(() => process.exit(0), () => process.exit(1))
  })
}
