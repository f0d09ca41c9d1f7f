// The baseline of the HTTP layer: a bare Fastify route with the standalone server's own Fastify
// options (its logger, request ids, limits: serverOptions of lib/server/server.ts), no plugin and
// no hook, answering GET of the API's item path with a fixed JSON body (BENCH_BARE_BODY: the
// API's answer for one key), as a route with nothing to look up would. bench/run.ts transpiles
// this file and starts it as a separate process on the same Node; BENCH_REPO names the
// repository whose dist/ it takes the options from.
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

type ServerModule = typeof import('../lib/server/server.js')
type ConfigModule = typeof import('../lib/server/config.js')

const repo = process.env.BENCH_REPO
if (repo === undefined) throw new Error('BENCH_REPO must name the repository whose dist/ to run')
const body = process.env.BENCH_BARE_BODY
if (body === undefined) throw new Error('BENCH_BARE_BODY must hold the JSON body to answer')
const dist = (file: string) => pathToFileURL(join(repo, 'dist', file)).href
const { serverOptions } = await import(dist('server/server.js')) as ServerModule
const { loadConfig } = await import(dist('server/config.js')) as ConfigModule

// The script runs from a temporary folder: Fastify is the repository's own.
const Fastify = createRequire(join(repo, 'package.json'))('fastify') as typeof import('fastify').default
const config = loadConfig(process.env)
const app = Fastify(serverOptions(config))
const answer = JSON.parse(body) as object

app.get('/api/core/v2/namespaces/:namespace/apikey/:apikey', async () => answer)
app.get('/ready', async () => ({ status: 'ready' }))

await app.listen({ port: config.port, host: config.host })

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    app.close().then(() => process.exit(0), () => process.exit(1))
  })
}
