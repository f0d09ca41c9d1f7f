import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import { Type } from '@sinclair/typebox'
import apiKeys, { anyOf, apiKeyAuth, bearerTokens } from '../index.js'
import { RETRY_AFTER_SECONDS, replyErrorsInSensuShape, sendError, sensuCode } from '../http/errors.js'
import { etcdClientOptions } from './etcd-client.js'
import { checkMetricsToken, type ServerConfig } from './config.js'
import { loadAdminToken } from './admin-token.js'
import { documentedResponses, type ErrorStatus } from '../http/openapi.js'

/** Node's limit on the request line and headers together, stated here so that it is documented. */
export const MAX_HEADER_BYTES = 16 * 1024

/**
 * Answers what Node refuses before Fastify sees a request (a slow or oversized request, bad HTTP)
 * in the same JSON shape as every other error, then closes the connection.
 */
function clientErrorHandler (this: FastifyInstance, err: NodeJS.ErrnoException, socket: Socket) {
  if (err.code === 'ECONNRESET' || socket.destroyed) return
  const [status, message] = err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
    ? [408, 'the request did not arrive in time']
    : err.code === 'HPE_HEADER_OVERFLOW'
      ? [431, `the request line and headers exceed ${MAX_HEADER_BYTES} bytes`]
      : [400, 'malformed HTTP request']
  this.log.debug({ code: err.code }, 'client error')
  const body = JSON.stringify({ message, code: sensuCode(status) })
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
  }
  socket.destroy()
}

/** What an etcd alarm means for this server, and what the operator does about it. */
function alarmMessage (alarm: string): string {
  return alarm === 'NOSPACE'
    ? 'etcd raised the NOSPACE alarm: it is out of space and refuses writes until an operator compacts, defragments and disarms it'
    : `etcd raised the ${alarm} alarm: see etcd's documentation of alarms`
}

/** The OpenAPI description of /health and /ready: unauthenticated, their success and their errors. */
function probe (operationId: string, summary: string, errors: ErrorStatus[]) {
  const success = { status: 200 as const, description: 'Yes', schema: Type.Object({ status: Type.String() }) }
  return { operationId, summary, tags: ['probes'], security: [], response: documentedResponses(errors, success, []) }
}

/**
 * The standalone server's Fastify options: JSON logs with the credentials redacted, a request id
 * on every request's lines, the HTTP limits. Exported for the benchmark's bare Fastify route
 * (bench/bare-server.ts), which must run with the same ones to be a fair baseline.
 */
export function serverOptions (config: ServerConfig, options: { logStream?: NodeJS.WritableStream } = {}): FastifyServerOptions & { https?: object } {
  const nodeServerOptions = { maxHeaderSize: MAX_HEADER_BYTES, connectionsCheckingInterval: 1000 }
  return {
    logger: {
      level: config.logLevel,
      redact: { paths: ['req.headers.authorization', 'req.headers["idempotency-key"]', 'req.headers.cookie', 'res.headers["set-cookie"]'], censor: '[redacted]' },
      ...(options.logStream && { stream: options.logStream })
    },
    genReqId: () => randomUUID(),
    // While closing, a request that got in is served as usual (etcd stays open until the last one
    // is answered), not refused with Fastify's own 503, which is neither in Sensu's shape nor
    // carries Retry-After.
    return503OnClosing: false,
    // The router's own refusals (a bad escape: 400; a parameter over maxParamLength: 414) in Sensu's shape too.
    frameworkErrors: (error, request, reply) => sendError(error, request, reply),
    requestIdHeader: 'x-request-id',
    // Names are at most 63 characters; a longer one must reach the route to be answered 400.
    routerOptions: { maxParamLength: 1024 },
    trustProxy: config.trustProxy,
    // A slow client cannot hold a connection: the whole request within httpRequestTimeout (Node
    // checks every second here, not every 30 s), an idle connection closed after a minute.
    requestTimeout: config.httpRequestTimeout,
    connectionTimeout: 60_000,
    clientErrorHandler,
    ...(config.tls
      ? { https: { ...nodeServerOptions, cert: readFileSync(config.tls.certFile), key: readFileSync(config.tls.keyFile) } }
      : { http: nodeServerOptions })
  }
}

/**
 * The standalone server: the plugin with admin bearer tokens and API keys, JSON logs with the
 * credentials redacted and a request id on every request's lines, `/health` and `/ready`.
 */
export async function buildServer (config: ServerConfig, endpoints: string[], options: { logStream?: NodeJS.WritableStream } = {}): Promise<FastifyInstance> {
  const admin = await loadAdminToken(config)
  checkMetricsToken(config.metricsToken, admin.tokens, admin.file ?? 'APIKEY_ADMIN_TOKEN')
  const app = Fastify(serverOptions(config, options))
  if (admin.file !== undefined) app.log.info({ file: admin.file, tokens: admin.tokens.length }, 'the admin bearer tokens are kept in this file (mode 0600)')
  if (admin.warning !== undefined) app.log.warn(admin.warning)

  // A callback hook: an async one costs every answer a promise and a turn of the microtask queue.
  app.addHook('onSend', (request, reply, payload, done) => {
    reply.header('x-request-id', request.id)
    done(null, payload)
  })
  replyErrorsInSensuShape(app)

  // The OpenAPI document, made from the routes' TypeBox schemas: GET /openapi.json. The plugin's
  // routes add their security schemes (and this server, `/`) themselves, as in a host's document.
  await app.register(swagger, {
    openapi: {
      info: { title: 'APIKey API', description: 'Sensu Go\'s APIKey API, keys kept in etcd', version: '1', license: { name: 'MIT', url: 'https://opensource.org/licenses/MIT' } },
      servers: [{ url: '/', description: 'this server' }]
    }
  })
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger())
  // The interactive page made from it, every asset served from here (no CDN) and no call to
  // swagger's online validator. Unauthenticated, as the document is; DOCS=false turns it off.
  if (config.docs) {
    await app.register(swaggerUi, { routePrefix: '/docs', validatorUrl: false, uiConfig: { validatorUrl: null } })
  }

  await app.register(apiKeys, {
    etcd: etcdClientOptions(config, endpoints),
    root: config.root,
    requestTimeout: config.requestTimeout,
    lastUseInterval: config.lastUseInterval,
    authFailureLimit: config.authFailureLimit,
    writeLimit: config.writeLimit,
    authenticate: anyOf(bearerTokens(admin.tokens), apiKeyAuth({ admins: config.admins })),
    // GET /metrics, for admins, and for METRICS_TOKEN (which opens nothing else).
    metrics: { ...(config.metricsToken !== undefined && { readers: bearerTokens([config.metricsToken], { username: 'metrics' }) }) }
  })

  // Unauthenticated, as Sensu's and Kubernetes' services have them.
  app.get('/health', { logLevel: 'warn', schema: probe('health', 'Is the server up? (asks nothing of etcd)', []) }, async () => ({ status: 'ok' }))
  app.get('/ready', { logLevel: 'warn', schema: probe('ready', 'Can the server serve? (etcd answers and has raised no alarm)', [503]) }, async (request, reply) => {
    const timeout = Math.min(config.requestTimeout, 2000)
    let alarms
    try {
      await app.apiKeys.ping(timeout)
      alarms = await app.apiKeys.alarms(timeout)
    } catch {
      reply.code(503).header('retry-after', String(RETRY_AFTER_SECONDS))
      return { message: 'etcd does not answer', code: 8 }
    }
    if (alarms.length === 0) return { status: 'ready' }
    request.log.error({ alarms }, 'etcd has raised alarms')
    reply.code(503).header('retry-after', String(RETRY_AFTER_SECONDS))
    return { message: alarms.map(alarmMessage).join('; '), code: 8 }
  })
  return app
}
