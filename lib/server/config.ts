import { accessSync, constants } from 'node:fs'
import { resolve } from 'node:path'
import { Type, type Static, type TString } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { defaults } from '../options.js'

/** What a variable must look like, and whether its value may be shown in an error. */
const variable = (pattern: string, rule: string, secret = false): TString =>
  Type.String({ pattern, description: rule, secret })

const URL_LIST = '^https?://[^/,\\s]+/?(,https?://[^/,\\s]+/?)*$'
/** An admin token is at least this long, so that guessing it stays out of reach. */
export const ADMIN_TOKEN_MIN_LENGTH = 16
/** An admin token: printable ASCII but space and comma, which separate tokens in APIKEY_ADMIN_TOKEN. */
const ADMIN_TOKEN = `[\\x21-\\x2b\\x2d-\\x7e]{${ADMIN_TOKEN_MIN_LENGTH},}`
const adminTokenForm = new RegExp(`^${ADMIN_TOKEN}$`)
const ADMIN_TOKEN_LIST = `^[,\\s]*${ADMIN_TOKEN}([,\\s]+${ADMIN_TOKEN})*[,\\s]*$`
const PORT = '^(0|[1-9][0-9]{0,4})$'
const ANY = '^.+$'

/** The standalone server's environment: every variable it reads, validated at start. */
export const ServerEnvironment = Type.Object({
  PORT: Type.Optional(variable(PORT, 'a port number, 0 to 65535')),
  HOST: Type.Optional(variable('^[^\\s]+$', 'an address to listen on, such as 127.0.0.1 or 0.0.0.0')),
  DATA_DIR: Type.Optional(variable(ANY, 'a folder')),
  ETCD_ENDPOINTS: Type.Optional(variable(URL_LIST, 'comma-separated etcd URLs with their scheme, such as http://127.0.0.1:2379')),
  ETCD_DATA_DIR: Type.Optional(variable(ANY, 'a folder')),
  ETCD_CLIENT_PORT: Type.Optional(variable(PORT, 'a port number for the embedded etcd\'s clients')),
  ETCD_PEER_PORT: Type.Optional(variable(PORT, 'a port number for the embedded etcd\'s peers')),
  ETCD_CA_FILE: Type.Optional(variable(ANY, 'a readable PEM file')),
  ETCD_CERT_FILE: Type.Optional(variable(ANY, 'a readable PEM file')),
  ETCD_KEY_FILE: Type.Optional(variable(ANY, 'a readable PEM file')),
  ETCD_USERNAME: Type.Optional(variable(ANY, 'an etcd user name')),
  ETCD_PASSWORD: Type.Optional(variable(ANY, 'an etcd password', true)),
  ETCD_ROOT: Type.Optional(variable('^(/[A-Za-z0-9._-]+)+$', 'an etcd path such as /sensu.io')),
  TLS_CERT_FILE: Type.Optional(variable(ANY, 'a readable PEM file')),
  TLS_KEY_FILE: Type.Optional(variable(ANY, 'a readable PEM file')),
  APIKEY_ADMIN_TOKEN: Type.Optional(variable(ADMIN_TOKEN_LIST, 'one or more admin tokens separated by commas or spaces, each at least 16 printable characters', true)),
  METRICS_TOKEN: Type.Optional(variable(`^${ADMIN_TOKEN}$`, 'a token of at least 16 printable characters, without spaces or commas', true)),
  APIKEY_ADMINS: Type.Optional(variable('^[^,\\s]+(,[^,\\s]+)*$', 'comma-separated usernames')),
  REQUEST_TIMEOUT_MS: Type.Optional(variable('^[1-9][0-9]{0,6}$', 'milliseconds, a positive integer')),
  LOG_LEVEL: Type.Optional(variable('^(fatal|error|warn|info|debug|trace|silent)$', 'one of fatal, error, warn, info, debug, trace, silent')),
  HTTP_REQUEST_TIMEOUT_MS: Type.Optional(variable('^[1-9][0-9]{0,6}$', 'milliseconds, a positive integer')),
  LAST_USE_INTERVAL_MS: Type.Optional(variable('^[1-9][0-9]{0,7}$', 'milliseconds, a positive integer up to 86400000')),
  AUTH_FAILURE_MAX: Type.Optional(variable('^(0|[1-9][0-9]{0,6})$', 'a number of failed authentications, 0 for no limit')),
  AUTH_FAILURE_WINDOW_MS: Type.Optional(variable('^[1-9][0-9]{0,8}$', 'milliseconds, a positive integer')),
  WRITE_LIMIT_PER_SECOND: Type.Optional(variable('^(0|[1-9][0-9]{0,6})$', 'writes a non-admin username regains per second, 0 for no limit')),
  WRITE_LIMIT_BURST: Type.Optional(variable('^[1-9][0-9]{0,6}$', 'writes a non-admin username may make at once, a positive integer')),
  TRUST_PROXY: Type.Optional(variable('^(true|false|[0-9a-fA-F.:/]+(,[0-9a-fA-F.:/]+)*)$', 'true, false, or comma-separated proxy addresses or CIDR ranges')),
  DOCS: Type.Optional(variable('^(true|false)$', 'true or false: whether /docs serves the interactive API page'))
})
type Environment = Static<typeof ServerEnvironment>

export interface ServerConfig {
  port: number
  host: string
  dataDir: string
  /** External etcd; absent: run the embedded one. */
  etcdEndpoints?: string[]
  embeddedEtcd: { dataDir: string, clientPort: number, peerPort: number }
  etcdTls?: { caFile?: string, certFile?: string, keyFile?: string }
  etcdAuth?: { username: string, password: string }
  root: string
  tls?: { certFile: string, keyFile: string }
  /** APIKEY_ADMIN_TOKEN's tokens, each accepted (several: a rotation without downtime). */
  adminTokens?: string[]
  /** METRICS_TOKEN: a bearer token that reads GET /metrics and nothing else. */
  metricsToken?: string
  admins: string[]
  requestTimeout: number
  logLevel: string
  /** Milliseconds for a client to send a whole request (headers and body). */
  httpRequestTimeout: number
  /** The plugin's lastUseInterval: milliseconds between writes of one key's last_used_at. */
  lastUseInterval: number
  authFailureLimit: { max: number, timeWindow: number } | false
  /** A non-admin username's writes: tokens per second, and the bucket's size. */
  writeLimit: { perSecond: number, burst: number } | false
  /** Fastify's trustProxy: whose X-Forwarded-For gives the client address. */
  trustProxy: boolean | string[]
  /** Whether /docs serves the interactive page made from the OpenAPI document. */
  docs: boolean
}

export class ConfigError extends Error {}

const checkEnvironment = TypeCompiler.Compile(ServerEnvironment)

function both<T> (a: T | undefined, b: T | undefined, names: string): [T, T] | undefined {
  if (a === undefined && b === undefined) return undefined
  if (a === undefined || b === undefined) throw new ConfigError(`${names} must be set together`)
  return [a, b]
}

function readable (name: string, file: string | undefined): string | undefined {
  if (file === undefined) return undefined
  try {
    accessSync(file, constants.R_OK)
  } catch {
    throw new ConfigError(`${name} must be ${ServerEnvironment.properties[name as keyof Environment].description}: cannot read ${file}`)
  }
  return file
}

/** Does `token` follow the rule of APIKEY_ADMIN_TOKEN's tokens (and of the admin token file's lines)? */
export function isAdminToken (token: string): boolean {
  return adminTokenForm.test(token)
}

/** The tokens of APIKEY_ADMIN_TOKEN, already checked against ADMIN_TOKEN_LIST. */
function adminTokensOf (value: string): string[] {
  return value.split(/[,\s]+/).filter(token => token !== '')
}

/**
 * METRICS_TOKEN must not be an admin token too: Prometheus, which holds it, would be an admin.
 * `where` names where the admin tokens came from.
 */
export function checkMetricsToken (metricsToken: string | undefined, adminTokens: string[], where: string): void {
  if (metricsToken !== undefined && adminTokens.includes(metricsToken)) {
    throw new ConfigError(`METRICS_TOKEN must differ from every admin token, and is one of ${where}'s: Prometheus would read the metrics as an admin. Give it a token of its own`)
  }
}

function trustProxyOf (value: string | undefined): boolean | string[] {
  if (value === undefined || value === 'false') return false
  return value === 'true' || value.split(',')
}

/**
 * The server's configuration from environment variables. A bad value throws a ConfigError whose
 * message is one line naming the variable (and never showing a secret's value).
 */
export function loadConfig (env: NodeJS.ProcessEnv): ServerConfig {
  const known = Object.fromEntries(Object.keys(ServerEnvironment.properties)
    .filter(name => env[name] !== undefined && env[name] !== '')
    .map(name => [name, env[name]]))
  const error = checkEnvironment.Errors(known).First()
  if (error) {
    const name = error.path.slice(1)
    const schema = ServerEnvironment.properties[name as keyof Environment]
    const shown = schema.secret === true ? '' : ` (got ${JSON.stringify(known[name])})`
    throw new ConfigError(`${name} must be ${schema.description}${shown}`)
  }
  const e = known as Environment
  /** A number variable (its pattern already checked) up to `max`. */
  const bounded = (name: keyof Environment, fallback: number, max: number) => {
    const value = e[name] === undefined ? fallback : Number(e[name])
    if (value > max) throw new ConfigError(`${name} must be ${ServerEnvironment.properties[name].description} (got ${JSON.stringify(e[name])})`)
    return value
  }
  const port = (name: keyof Environment, fallback: number) => bounded(name, fallback, 65535)
  const adminTokens = e.APIKEY_ADMIN_TOKEN === undefined ? undefined : adminTokensOf(e.APIKEY_ADMIN_TOKEN)
  checkMetricsToken(e.METRICS_TOKEN, adminTokens ?? [], 'APIKEY_ADMIN_TOKEN')
  const dataDir = resolve(e.DATA_DIR ?? './data')
  const auth = both(e.ETCD_USERNAME, e.ETCD_PASSWORD, 'ETCD_USERNAME and ETCD_PASSWORD')
  const tls = both(e.TLS_CERT_FILE, e.TLS_KEY_FILE, 'TLS_CERT_FILE and TLS_KEY_FILE')
  both(e.ETCD_CERT_FILE, e.ETCD_KEY_FILE, 'ETCD_CERT_FILE and ETCD_KEY_FILE')
  const etcdTls = e.ETCD_CA_FILE !== undefined || e.ETCD_CERT_FILE !== undefined
    ? {
        caFile: readable('ETCD_CA_FILE', e.ETCD_CA_FILE),
        certFile: readable('ETCD_CERT_FILE', e.ETCD_CERT_FILE),
        keyFile: readable('ETCD_KEY_FILE', e.ETCD_KEY_FILE)
      }
    : undefined
  return {
    port: port('PORT', 8080),
    host: e.HOST ?? '127.0.0.1',
    dataDir,
    etcdEndpoints: e.ETCD_ENDPOINTS?.split(','),
    embeddedEtcd: {
      dataDir: resolve(e.ETCD_DATA_DIR ?? `${dataDir}/etcd`),
      clientPort: port('ETCD_CLIENT_PORT', 2379),
      peerPort: port('ETCD_PEER_PORT', 2380)
    },
    etcdTls,
    etcdAuth: auth && { username: auth[0], password: auth[1] },
    root: e.ETCD_ROOT ?? defaults.root,
    tls: tls && { certFile: readable('TLS_CERT_FILE', tls[0]) as string, keyFile: readable('TLS_KEY_FILE', tls[1]) as string },
    adminTokens,
    metricsToken: e.METRICS_TOKEN,
    admins: (e.APIKEY_ADMINS ?? 'admin').split(','),
    requestTimeout: e.REQUEST_TIMEOUT_MS === undefined ? defaults.requestTimeout : Number(e.REQUEST_TIMEOUT_MS),
    logLevel: e.LOG_LEVEL ?? 'info',
    httpRequestTimeout: Number(e.HTTP_REQUEST_TIMEOUT_MS ?? 30_000),
    lastUseInterval: bounded('LAST_USE_INTERVAL_MS', defaults.lastUseInterval, 86_400_000),
    authFailureLimit: e.AUTH_FAILURE_MAX === '0'
      ? false
      : {
          max: e.AUTH_FAILURE_MAX === undefined ? defaults.authFailureLimit.max : Number(e.AUTH_FAILURE_MAX),
          timeWindow: e.AUTH_FAILURE_WINDOW_MS === undefined ? defaults.authFailureLimit.timeWindow : Number(e.AUTH_FAILURE_WINDOW_MS)
        },
    writeLimit: e.WRITE_LIMIT_PER_SECOND === '0'
      ? false
      : {
          perSecond: e.WRITE_LIMIT_PER_SECOND === undefined ? defaults.writeLimit.perSecond : Number(e.WRITE_LIMIT_PER_SECOND),
          burst: e.WRITE_LIMIT_BURST === undefined ? defaults.writeLimit.burst : Number(e.WRITE_LIMIT_BURST)
        },
    trustProxy: trustProxyOf(e.TRUST_PROXY),
    docs: e.DOCS !== 'false'
  }
}
