// The plugin's entry: options checked and defaulted (options.ts), the store made and connected,
// the decorators, and the routes registered. It ties the layers together: lib/http (routes),
// lib/keys (the key rules), lib/store (etcd).
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { resolveOptions, type ApiKeysOptions } from './options.js'
import { ApiKeyStore } from './store/store.js'
import { storeClient } from './store/client-policy.js'
import { EtcdUnavailableError } from './store/errors.js'
import type { CacheStatus } from './store/cache/watch-cache.js'
import { apiKeyRoutes } from './http/routes/index.js'
import { metricsRoute } from './http/metrics-route.js'
import { pluginMetrics } from './metrics.js'
import { declareRequestDeadline, requestDeadline } from './http/deadline.js'
import { defaultAuthorize, type Caller } from './keys/authorization.js'
import { maxKeyBytes } from './keys/strategy.js'
import { apiKeysDecorator, authenticatesNow, type ApiKeys, type Credential } from './decorators.js'

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
    observer: metrics?.observer,
    usage: { interval: settings.lastUseInterval, callTimeout: settings.requestTimeout, log: fastify.log }
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
    // Pending last uses are written first, within one request's time.
    await store.close(Date.now() + settings.requestTimeout)
    if (owned) client.close()
  })

  /** The API key a request authenticated with (through verify): what it writes is guarded by it. */
  const credentials = new WeakMap<FastifyRequest, Credential>()
  const apiKeys = apiKeysDecorator({
    store,
    client,
    settings,
    verified: metrics?.verified ?? (() => {}),
    authenticated: (request, credential) => credentials.set(request, credential)
  })
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
    minterOf: (request: FastifyRequest) => {
      const credential = credentials.get(request)
      return credential && { key: credential.key, recheck: deadline => authenticatesNow(store, credential, deadline) }
    }
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
export type { ApiKeys, CheckResult, RefusalReason } from './decorators.js'
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
