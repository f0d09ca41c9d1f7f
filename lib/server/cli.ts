#!/usr/bin/env node
// The standalone server: `npm start`. Configuration from environment variables (README).
import { join } from 'node:path'
import closeWithGrace from 'close-with-grace'
import { ConfigError, loadConfig } from './config.js'
import { startEmbeddedEtcd, type EmbeddedEtcd } from './embedded-etcd.js'
import { buildServer } from './server.js'
import { describeError, silenceTlsIpWarning } from './command-line.js'

silenceTlsIpWarning()

function fail (message: string): never {
  process.stderr.write(`fastify-etcd-apikeys: ${message}\n`)
  process.exit(1)
}

async function main () {
  let config
  try {
    config = loadConfig(process.env)
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message)
    throw err
  }

  let embedded: EmbeddedEtcd | undefined
  if (config.etcdEndpoints === undefined) {
    try {
      embedded = await startEmbeddedEtcd({ ...config.embeddedEtcd, logFile: join(config.dataDir, 'etcd.log') })
    } catch (err) {
      fail((err as Error).message)
    }
  }
  const endpoints = config.etcdEndpoints ?? embedded?.endpoints ?? []

  let app
  try {
    // The embedded etcd is locked: the server opens it with the credentials it was locked with.
    app = await buildServer(embedded === undefined ? config : { ...config, etcdAuth: embedded.auth }, endpoints)
    await app.listen({ port: config.port, host: config.host })
  } catch (err) {
    await app?.close()
    await embedded?.stop()
    fail(`cannot start: ${describeError(err)}`)
  }
  app.log.info({ etcd: embedded ? `embedded, pid ${embedded.pid}, data in ${config.embeddedEtcd.dataDir}` : endpoints.join(',') }, 'serving the APIKey API')

  // SIGTERM or SIGINT: stop accepting, finish what is in flight, close etcd, stop the embedded one.
  closeWithGrace({ delay: 10_000, logger: app.log }, async ({ signal, err }) => {
    if (err) app.log.error({ err }, 'shutting down after an error')
    else app.log.info({ signal }, 'shutting down')
    await app.close()
    await embedded?.stop()
  })
}

await main()
