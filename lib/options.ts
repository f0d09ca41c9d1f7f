import { Etcd3, type IOptions } from 'etcd3'
import { Registry } from 'prom-client'
import type { Authorize } from './keys/authorization.js'
import type { Authenticate } from './http/authenticators.js'
import type { AuthFailureLimit } from './http/failure-limit.js'
import type { WriteLimit } from './http/write-limit.js'

export interface ApiKeysOptions {
  /** etcd client options, or an Etcd3 client the host already has (the plugin closes only its own). */
  etcd?: IOptions | Etcd3
  /** etcd key root. Default `/sensu.io`. */
  root?: string
  /** Where the routes live. Default `/api/core/v2`. */
  basePath?: string
  /** The prefix of every secret, for secret scanners. Default `sak_`. */
  keyPrefix?: string
  /** Largest request body in bytes. Default 65536. */
  bodyLimit?: number
  /** Milliseconds for all of one request's etcd work, retries included. Default 5000. */
  requestTimeout?: number
  /** Says who the caller is, or null (401). Required. */
  authenticate: Authenticate
  /** Decides what a caller may do. Default: admins everything, others their own username's keys. */
  authorize?: Authorize
  /** Failed authentications per client address and window before 429s; false: no limit. Default 30 per 60 s. */
  authFailureLimit?: Partial<AuthFailureLimit> | false
  /** Keys a username may hold when a non-admin creates one (admins are not limited); false: no limit. Default 100. */
  maxKeysPerUser?: number | false
  /** A non-admin username's creates, patches, rotations and deletes, per second with bursts, before 429s; false: no limit. Default 10 a second, bursts of 20. */
  writeLimit?: Partial<WriteLimit> | false
  /** Serve reads from an in-process copy kept exact by an etcd watch (consistent reads). Default true. */
  cache?: boolean
  /** Prometheus metrics (docs/metrics.md): true, or where and for whom. Default false. */
  metrics?: boolean | MetricsOptions
  /** Milliseconds between writes of a key's `last_used_at` by this server (at most one write per key and interval, batched). Default 60000. */
  lastUseInterval?: number
}

export interface MetricsOptions {
  /** The prom-client registry to register the families in (a host's own). Default: a new registry of this plugin's. */
  registry?: Registry
  /** Where the metrics are answered. Default `/metrics`. */
  path?: string
  /** Who may read the metrics besides admins: its callers read the metrics and nothing else (the API routes never consult it). */
  readers?: Authenticate
}

export interface ResolvedMetrics {
  registry: Registry
  path: string
  readers?: Authenticate
}

export interface ResolvedOptions {
  etcd: IOptions | Etcd3
  root: string
  basePath: string
  keyPrefix: string
  bodyLimit: number
  requestTimeout: number
  authenticate: Authenticate
  authorize?: Authorize
  authFailureLimit: AuthFailureLimit | false
  maxKeysPerUser: number | false
  writeLimit: WriteLimit | false
  cache: boolean
  metrics: ResolvedMetrics | false
  lastUseInterval: number
}

export const defaults = {
  etcd: { hosts: 'http://127.0.0.1:2379' },
  root: '/sensu.io',
  basePath: '/api/core/v2',
  keyPrefix: 'sak_',
  bodyLimit: 64 * 1024,
  requestTimeout: 5000,
  authFailureLimit: { max: 30, timeWindow: 60_000 },
  maxKeysPerUser: 100,
  writeLimit: { perSecond: 10, burst: 20 },
  cache: true,
  metrics: false,
  metricsPath: '/metrics',
  lastUseInterval: 60_000
} as const

function fail (name: string, rule: string, value: unknown): never {
  const shown = typeof value === 'function' ? 'a function' : JSON.stringify(value) ?? String(value)
  throw new TypeError(`fastify-etcd-apikeys: option "${name}" ${rule} (got ${shown})`)
}

function boolean (name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') fail(name, 'must be true or false', value)
  return value
}

function positiveInteger (name: string, value: unknown, max = 2 ** 31 - 1): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0 || value > max) {
    fail(name, `must be a positive integer no larger than ${max}`, value)
  }
  return value
}

function matching (name: string, value: unknown, pattern: RegExp, rule: string): string {
  if (typeof value !== 'string' || !pattern.test(value)) fail(name, rule, value)
  return value
}

function etcdOption (value: unknown): IOptions | Etcd3 {
  if (value instanceof Etcd3) return value
  if (typeof value !== 'object' || value === null) fail('etcd', 'must be etcd3 client options or an Etcd3 client', value)
  const hosts = (value as IOptions).hosts
  const list = typeof hosts === 'string' ? [hosts] : hosts
  if (!Array.isArray(list) || list.length === 0 || list.some(h => typeof h !== 'string' || !/^https?:\/\/[^/\s]+\/?$/.test(h))) {
    fail('etcd.hosts', 'must be one or more URLs like http://127.0.0.1:2379', hosts)
  }
  if (new Set(list.map(h => h.startsWith('https:'))).size > 1) fail('etcd.hosts', 'must not mix http:// and https://', hosts)
  return value as IOptions
}

function authFailureLimitOption (value: unknown): AuthFailureLimit | false {
  if (value === false) return false
  if (value !== undefined && (typeof value !== 'object' || value === null)) {
    fail('authFailureLimit', 'must be { max, timeWindow } or false', value)
  }
  const given = (value ?? {}) as Partial<AuthFailureLimit>
  return {
    max: positiveInteger('authFailureLimit.max', given.max ?? defaults.authFailureLimit.max),
    timeWindow: positiveInteger('authFailureLimit.timeWindow', given.timeWindow ?? defaults.authFailureLimit.timeWindow)
  }
}

function writeLimitOption (value: unknown): WriteLimit | false {
  if (value === false) return false
  if (value !== undefined && (typeof value !== 'object' || value === null)) {
    fail('writeLimit', 'must be { perSecond, burst } or false', value)
  }
  const given = (value ?? {}) as Partial<WriteLimit>
  const perSecond = given.perSecond ?? defaults.writeLimit.perSecond
  if (typeof perSecond !== 'number' || !Number.isFinite(perSecond) || perSecond <= 0) {
    fail('writeLimit.perSecond', 'must be a positive number of writes per second (set writeLimit: false for no limit)', perSecond)
  }
  return { perSecond, burst: positiveInteger('writeLimit.burst', given.burst ?? defaults.writeLimit.burst) }
}

const URL_PATH = /^(\/[A-Za-z0-9._~-]+)+$/

function metricsOption (value: unknown): ResolvedMetrics | false {
  if (value === false || value === undefined) return false
  if (value !== true && (typeof value !== 'object' || value === null)) fail('metrics', 'must be true, false or { registry, path, readers }', value)
  const given = (value === true ? {} : value) as MetricsOptions
  const registry = given.registry ?? new Registry()
  // Duck-typed: a host's registry may come from another copy of prom-client.
  const r = registry as Partial<Registry>
  if (typeof r.registerMetric !== 'function' || typeof r.metrics !== 'function' || typeof r.getSingleMetric !== 'function') {
    fail('metrics.registry', 'must be a prom-client Registry', typeof registry)
  }
  if (given.readers !== undefined && typeof given.readers !== 'function') fail('metrics.readers', 'must be an authenticate function, for example bearerTokens([token])', given.readers)
  return {
    registry,
    path: matching('metrics.path', given.path ?? defaults.metricsPath, URL_PATH, 'must be a URL path like /metrics (a leading /, no trailing /)'),
    ...(given.readers !== undefined && { readers: given.readers })
  }
}

/** Every option checked at registration, with defaults applied; a wrong one names itself. */
export function resolveOptions (options: Partial<ApiKeysOptions> | undefined): ResolvedOptions {
  const o = options ?? {}
  if (typeof o.authenticate !== 'function') {
    fail('authenticate', 'is required: a function (request) => { username, admin } | null, for example bearerTokens([...])', o.authenticate)
  }
  if (o.authorize !== undefined && typeof o.authorize !== 'function') fail('authorize', 'must be a function', o.authorize)
  return {
    etcd: etcdOption(o.etcd ?? defaults.etcd),
    root: matching('root', o.root ?? defaults.root, /^(\/[A-Za-z0-9._-]+)+$/, 'must be an etcd path like /sensu.io (a leading /, no trailing /)'),
    basePath: matching('basePath', o.basePath ?? defaults.basePath, /^(\/[A-Za-z0-9._~-]+)*$/, 'must be a URL path like /api/core/v2 (a leading /, no trailing /)'),
    keyPrefix: matching('keyPrefix', o.keyPrefix ?? defaults.keyPrefix, /^[A-Za-z0-9_-]{1,32}$/, 'must be 1 to 32 characters of A-Z a-z 0-9 _ -'),
    bodyLimit: positiveInteger('bodyLimit', o.bodyLimit ?? defaults.bodyLimit),
    requestTimeout: positiveInteger('requestTimeout', o.requestTimeout ?? defaults.requestTimeout),
    authenticate: o.authenticate,
    authorize: o.authorize,
    authFailureLimit: authFailureLimitOption(o.authFailureLimit),
    maxKeysPerUser: o.maxKeysPerUser === false ? false : positiveInteger('maxKeysPerUser', o.maxKeysPerUser ?? defaults.maxKeysPerUser),
    writeLimit: writeLimitOption(o.writeLimit),
    cache: boolean('cache', o.cache ?? defaults.cache),
    metrics: metricsOption(o.metrics),
    // At most a day: a longer interval would lose more than a crash should.
    lastUseInterval: positiveInteger('lastUseInterval', o.lastUseInterval ?? defaults.lastUseInterval, 86_400_000)
  }
}
