// The plugin's entry: options checked and defaulted (options.ts), the store made and connected,
// the decorators, and the routes registered. It ties the layers together: lib/http (routes),
// lib/keys (the key rules), lib/store (etcd).
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { Etcd3 } from 'etcd3'
import { resolveOptions, type ApiKeysOptions } from './options.js'
import { ApiKeyStore, type StoredKey } from './store/store.js'
import { storeClient } from './store/client-policy.js'
import { EtcdUnavailableError } from './store/errors.js'
import { raisedAlarms } from './store/alarms.js'
import type { CacheStatus } from './store/cache/watch-cache.js'
import { apiKeyRoutes } from './http/routes/index.js'
import { metricsRoute } from './http/metrics-route.js'
import { pluginMetrics } from './metrics.js'
import { declareRequestDeadline, requestDeadline } from './http/deadline.js'
import { defaultAuthorize, type Caller } from './keys/authorization.js'
import { digestSecret, isWellFormedSecret } from './keys/secrets.js'
import { maxKeyBytes } from './keys/strategy.js'
import type { ApiKey } from './keys/schemas.js'

/** What the plugin decorates the Fastify instance with, as `fastify.apiKeys`. */
export interface ApiKeys {
  /**
   * The key a secret belongs to, or null when it is malformed, forged, revoked or expired (a
   * malformed one without reading etcd). Given the request, the lookup shares its deadline. Rejects with a 503
   * error when etcd cannot answer in time.
   */
  verify(secret: string, request?: FastifyRequest): Promise<ApiKey | null>
  /**
   * Revokes every key of `username`, in all namespaces, and resolves with how many it deleted.
   * From then on no key of that user made before the call authenticates on any server, nor any
   * key made while it ran by a caller authenticated as that user; keys made afterwards work. For
   * a host that disables or deletes a user.
   */
  revokeAllOf(username: string): Promise<number>
  /** Resolves when etcd answers within `timeout` ms (default `requestTimeout`); for readiness checks. */
  ping(timeout?: number): Promise<void>
  /** The alarms etcd has raised (`NOSPACE`, `CORRUPT`), none when empty; for readiness checks. Rejects when etcd does not answer within `timeout` ms. */
  alarms(timeout?: number): Promise<string[]>
  /** The etcd client the plugin uses. */
  readonly etcd: Etcd3
  /** The read cache's state and counts (option `cache`); null when it is off. */
  cacheStatus(): CacheStatus | null
}

declare module 'fastify' {
  interface FastifyInstance {
    apiKeys: ApiKeys
  }
  interface FastifyRequest {
    /** Who made the request, once the plugin's routes have authenticated it. */
    apiKeyCaller: Caller | null
  }
}

async function fastifyEtcdApiKeys (fastify: FastifyInstance, opts: ApiKeysOptions) {
  const settings = resolveOptions(opts)
  const { client, owned, attemptTimeout, receiveBytes } = storeClient(settings.etcd, settings.requestTimeout)
  const metrics = settings.metrics === false ? undefined : pluginMetrics(settings.metrics.registry, (): CacheStatus | null => store.cacheStatus())
  const store = new ApiKeyStore(client, settings.root, {
    attemptTimeout,
    receiveBytes,
    maxKeyBytes: maxKeyBytes(settings.bodyLimit),
    cache: settings.cache ? { callTimeout: settings.requestTimeout, log: fastify.log } : undefined,
    observer: metrics?.observer
  })

  // Fail the boot, not the first request, when etcd cannot be reached.
  try {
    await store.ping(requestDeadline(undefined, settings.requestTimeout))
  } catch (err) {
    if (owned) client.close()
    const why = err instanceof EtcdUnavailableError
      ? `etcd did not answer within ${settings.requestTimeout} ms`
      : 'etcd refused the connection check'
    throw new Error(`fastify-etcd-apikeys: ${why}`, { cause: err })
  }
  store.startCache()
  fastify.addHook('onClose', async () => {
    store.close()
    if (owned) client.close()
  })

  /** The API key a request authenticated with (through verify): what it writes is guarded by it. */
  const credentials = new WeakMap<FastifyRequest, StoredKey>()

  const verified = metrics?.verified ?? (() => {})
  const apiKeys: ApiKeys = {
    async verify (secret, request) {
      if (typeof secret !== 'string' || !isWellFormedSecret(secret, settings.keyPrefix)) {
        verified('malformed')
        return null
      }
      const found = await store.findByDigest(digestSecret(secret), requestDeadline(request, settings.requestTimeout))
      if (found.key === null) {
        verified(found.why)
        return null
      }
      // The guarantee of expires_at, to the second: etcd's lease removes the key only eventually.
      const { apiKey } = found.key
      if (apiKey.expires_at !== undefined && Date.now() / 1000 >= apiKey.expires_at) {
        verified('expired')
        return null
      }
      if (request !== undefined) credentials.set(request, found.key)
      verified('valid')
      return apiKey
    },
    async revokeAllOf (username) {
      if (typeof username !== 'string' || username === '') throw new TypeError('revokeAllOf: username must be a non-empty string')
      return await store.revokeAllOf(username, { deadline: requestDeadline(undefined, settings.requestTimeout), batchTimeout: settings.requestTimeout })
    },
    async ping (timeout = settings.requestTimeout) {
      await store.ping(Date.now() + timeout)
    },
    alarms: async (timeout = settings.requestTimeout) => await raisedAlarms(client, Date.now() + timeout),
    etcd: client,
    cacheStatus: () => store.cacheStatus()
  }
  fastify.decorate('apiKeys', apiKeys)
  fastify.decorateRequest('apiKeyCaller', null)
  declareRequestDeadline(fastify)

  const timeRequest = metrics?.timeRequest
  // Every answer of the instance the plugin is registered in (fastify-plugin shares its hooks).
  if (timeRequest !== undefined) fastify.addHook('onResponse', (request, reply, done) => { timeRequest(request, reply); done() })

  await fastify.register(apiKeyRoutes, {
    prefix: settings.basePath,
    store,
    settings,
    authorize: settings.authorize ?? defaultAuthorize,
    defaultPolicy: settings.authorize === undefined,
    credentialOf: (request: FastifyRequest) => credentials.get(request)
  })
  if (settings.metrics !== false) {
    const { registry, path, readers } = settings.metrics
    await fastify.register(metricsRoute, {
      path,
      readers,
      authenticate: settings.authenticate,
      authFailureLimit: settings.authFailureLimit,
      requestTimeout: settings.requestTimeout,
      exposition: async () => ({ contentType: registry.contentType, text: await registry.metrics() })
    })
  }
}

export const fastifyEtcdApiKeysPlugin = fp(fastifyEtcdApiKeys, { name: 'fastify-etcd-apikeys', fastify: '5.x' })
export default fastifyEtcdApiKeysPlugin

export { bearerTokens, apiKeyAuth, anyOf, type Authenticate } from './http/authenticators.js'
export { defaultAuthorize } from './keys/authorization.js'
export type { Caller, Authorize, AuthorizeContext, Action } from './keys/authorization.js'
export type { ApiKeysOptions, MetricsOptions } from './options.js'
export { defaults } from './options.js'
export * as schemas from './keys/schemas.js'
export type { ApiKey, CreatedApiKey, CreateApiKeyBody, PatchApiKeyBody, ErrorBody } from './keys/schemas.js'
export { encodeContinueToken, decodeContinueToken, type ContinueToken } from './store/continue-token.js'
export { generateSecret, isWellFormedSecret, digestSecret } from './keys/secrets.js'
export {
  InvalidArgumentError, UnauthenticatedError, ForbiddenError, NotFoundError, MethodNotAllowedError, UnsupportedMediaTypeError,
  ConflictError, KeyTooLargeError, TooManyRequestsError, WriteLimitError, ContinueExpiredError, PreconditionFailedError,
  UnavailableError, OutOfSpaceError, InternalError, errorCodes
} from './http/errors.js'
export type { CacheStatus } from './store/cache/watch-cache.js'
