import { randomBytes, randomUUID } from 'node:crypto'
import { mkdir, open, stat, writeFile, type FileHandle } from 'node:fs/promises'
import { constants, readFileSync } from 'node:fs'
import { STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import { join } from 'node:path'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import type { IOptions } from 'etcd3'
import swagger from '@fastify/swagger'
import apiKeys, { anyOf, apiKeyAuth, bearerTokens } from './index.js'
import { RETRY_AFTER_SECONDS, sendError, sendRouteNotFound, sensuCode } from './errors.js'
import { ADMIN_TOKEN_MIN_LENGTH, isAdminToken, type ServerConfig } from './config.js'

export interface AdminTokens {
  /** Each one authenticates as an admin: several let a token be rotated without downtime. */
  tokens: string[]
  /** The file they come from, when APIKEY_ADMIN_TOKEN is not set. */
  file?: string
  /** What the operator should fix, for the log (DATA_DIR open to others). */
  warning?: string
}

/** The admin token file holds one token a line: anything larger is not one. */
const MAX_ADMIN_TOKEN_FILE_BYTES = 64 * 1024

/** An admin token file the server does not trust; its message names the file and says what to do. */
export class AdminTokenFileError extends Error {}

const octal = (mode: number) => (mode & 0o777).toString(8).padStart(4, '0')
const refused = (file: string, problem: string) => new AdminTokenFileError(`the admin token file ${file} ${problem}`)

/**
 * The admin bearer tokens: APIKEY_ADMIN_TOKEN's, or those of `<DATA_DIR>/admin-token`, one a
 * line. On first start the server makes the folder (0700) and the file (0600, one random token),
 * so that the token survives restarts. The file is trusted only when no one but the server's user
 * can have read or written it: a regular file (not a symbolic link), owned by the server's user,
 * mode 0600 or stricter; else the start fails with an AdminTokenFileError.
 */
export async function loadAdminToken (config: ServerConfig): Promise<AdminTokens> {
  if (config.adminTokens !== undefined) return { tokens: config.adminTokens }
  const { dataDir } = config
  const file = join(dataDir, 'admin-token')
  await mkdir(dataDir, { recursive: true, mode: 0o700 })
  // A folder open to others is only warned about: the file's own checks keep the token private,
  // and a container's volume folder is often made 0755 by the runtime, out of the operator's hands.
  const dirMode = (await stat(dataDir)).mode
  const warning = (dirMode & 0o077) === 0
    ? undefined
    : `DATA_DIR ${dataDir} has mode ${octal(dirMode)}: users other than the server's may list it; chmod 700 ${dataDir}`
  const existing = await readAdminTokenFile(file)
  if (existing !== undefined) return { tokens: existing, file, warning }
  const token = randomBytes(32).toString('base64url')
  try {
    // wx: O_EXCL, which never follows a symbolic link planted in the meantime.
    await writeFile(file, token + '\n', { mode: 0o600, flag: 'wx' })
    return { tokens: [token], file, warning }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
  }
  // Another server sharing DATA_DIR made it first: use that one.
  const made = await readAdminTokenFile(file)
  if (made === undefined) throw refused(file, 'was made and removed by something else while the server started: start it again')
  return { tokens: made, file, warning }
}

/** The tokens of the admin token file, checked; undefined when there is no such file. */
async function readAdminTokenFile (file: string): Promise<string[] | undefined> {
  let handle: FileHandle
  try {
    // O_NOFOLLOW: a symbolic link is refused, not followed. O_NONBLOCK: a FIFO cannot hang the start.
    handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return undefined
    if (code === 'ELOOP') throw refused(file, 'is a symbolic link; it must be a regular file: replace the link with the file itself')
    throw refused(file, `cannot be read (${code}): it must be readable by the server's user`)
  }
  try {
    // The checks are made on the file opened, so that it cannot be swapped between check and read.
    const stats = await handle.stat()
    if (!stats.isFile()) throw refused(file, 'is not a regular file; it must be one, holding one token a line')
    const uid = process.getuid?.()
    if (uid !== undefined && stats.uid !== uid) {
      throw refused(file, `is owned by uid ${stats.uid}, not by the server's user (uid ${uid}): chown it to that user`)
    }
    if ((stats.mode & 0o077) !== 0) throw refused(file, `has mode ${octal(stats.mode)}; it must be 0600: chmod 600 ${file}`)
    if (stats.size > MAX_ADMIN_TOKEN_FILE_BYTES) throw refused(file, `holds ${stats.size} bytes, more than ${MAX_ADMIN_TOKEN_FILE_BYTES}: it must hold only tokens, one a line`)
    const lines = (await handle.readFile('utf8')).split('\n').map(line => line.trim())
    const bad = lines.findIndex(line => line !== '' && !isAdminToken(line))
    if (bad >= 0) {
      throw refused(file, `has a bad line ${bad + 1}: each line must hold one token of at least ${ADMIN_TOKEN_MIN_LENGTH} ` +
        'printable characters, without spaces or commas')
    }
    const tokens = lines.filter(line => line !== '')
    if (tokens.length === 0) {
      throw refused(file, `holds no token: write one a line (at least ${ADMIN_TOKEN_MIN_LENGTH} printable characters), or delete the file to have one made`)
    }
    return tokens
  } finally {
    await handle.close()
  }
}

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

export function etcdClientOptions (config: ServerConfig, endpoints: string[]): IOptions {
  const { etcdTls, etcdAuth } = config
  return {
    hosts: endpoints,
    ...(etcdTls && {
      credentials: {
        rootCertificate: etcdTls.caFile === undefined ? Buffer.alloc(0) : readFileSync(etcdTls.caFile),
        ...(etcdTls.certFile !== undefined && { certChain: readFileSync(etcdTls.certFile) }),
        ...(etcdTls.keyFile !== undefined && { privateKey: readFileSync(etcdTls.keyFile) })
      }
    }),
    ...(etcdAuth && { auth: etcdAuth })
  }
}

/** What an etcd alarm means for this server, and what the operator does about it. */
function alarmMessage (alarm: string): string {
  return alarm === 'NOSPACE'
    ? 'etcd raised the NOSPACE alarm: it is out of space and refuses writes until an operator compacts, defragments and disarms it'
    : `etcd raised the ${alarm} alarm: see etcd's documentation of alarms`
}

/**
 * The standalone server: the plugin with admin bearer tokens and API keys, JSON logs with the
 * credentials redacted and a request id on every request's lines, `/health` and `/ready`.
 */
export async function buildServer (config: ServerConfig, endpoints: string[], options: { logStream?: NodeJS.WritableStream } = {}): Promise<FastifyInstance> {
  const admin = await loadAdminToken(config)
  const nodeServerOptions = { maxHeaderSize: MAX_HEADER_BYTES, connectionsCheckingInterval: 1000 }
  const serverOptions: FastifyServerOptions & { https?: object } = {
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
  const app = Fastify(serverOptions)
  if (admin.file !== undefined) app.log.info({ file: admin.file, tokens: admin.tokens.length }, 'the admin bearer tokens are kept in this file (mode 0600)')
  if (admin.warning !== undefined) app.log.warn(admin.warning)

  app.addHook('onSend', async (request, reply) => { reply.header('x-request-id', request.id) })
  app.setErrorHandler(sendError)
  app.setNotFoundHandler(sendRouteNotFound)

  // The OpenAPI document, made from the routes' TypeBox schemas: GET /openapi.json.
  await app.register(swagger, {
    openapi: {
      info: { title: 'APIKey API', description: 'Sensu Go\'s APIKey API, keys kept in etcd', version: '1' },
      components: {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer', description: 'the admin token' },
          key: { type: 'apiKey', in: 'header', name: 'Authorization', description: 'Key <secret>' }
        }
      },
      security: [{ bearer: [] }, { key: [] }]
    }
  })
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger())

  await app.register(apiKeys, {
    etcd: etcdClientOptions(config, endpoints),
    root: config.root,
    requestTimeout: config.requestTimeout,
    authFailureLimit: config.authFailureLimit,
    writeLimit: config.writeLimit,
    authenticate: anyOf(bearerTokens(admin.tokens), apiKeyAuth({ admins: config.admins }))
  })

  // Unauthenticated, as Sensu's and Kubernetes' services have them.
  app.get('/health', { logLevel: 'warn' }, async () => ({ status: 'ok' }))
  app.get('/ready', { logLevel: 'warn' }, async (request, reply) => {
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
