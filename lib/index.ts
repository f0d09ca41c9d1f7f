import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { Etcd3, type IOptions } from 'etcd3'
import { ConsecutiveBreaker, circuitBreaker, handleWhen, noop } from 'cockatiel'
import { isRecoverableError } from 'etcd3'
import { resolveOptions, type ApiKeysOptions } from './options.js'
import { ApiKeyStore, isNoSpace, maxKeyBytes, type StoredKey } from './store/store.js'
import { raisedAlarms } from './store/alarms.js'
import { apiKeyRoutes } from './http/routes.js'
import { defaultAuthorize, type Caller } from './keys/authorization.js'
import { digestSecret, isWellFormedSecret } from './keys/secrets.js'
import { requestDeadline } from './http/deadline.js'
import { EtcdUnavailableError } from './http/errors.js'
import type { ApiKey } from './keys/schemas.js'
import type { CacheStatus } from './store/cache.js'

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

/**
 * etcd3 retries a failed call up to 3 times, all within the one deadline of the call, so a call
 * sent to a member that died hangs until that deadline and its retries find no time left. The
 * plugin's own client makes one attempt per call (cockatiel's noop) and the store retries. Each
 * member keeps a circuit breaker (3 failures in a row stop calls to it), as etcd3's own, but one
 * that half-opens after 1 s, not 5: while a cluster elects a leader, the live members time out
 * too, and with etcd3's 5 s every breaker stayed open seconds after the election was over. A write
 * refused for want of space (NOSPACE) is no failure of the member: it answers reads as before.
 */
function withOwnRetries (options: IOptions): IOptions {
  return {
    ...options,
    faultHandling: {
      host: () => circuitBreaker(handleWhen(err => isRecoverableError(err) && !isNoSpace(err)), { halfOpenAfter: BREAKER_HALF_OPEN_AFTER, breaker: new ConsecutiveBreaker(3) }),
      ...options.faultHandling,
      global: noop
    }
  }
}

/** How long a member's circuit stays open before one call may try it again. */
const BREAKER_HALF_OPEN_AFTER = 1000

/**
 * The largest answer the plugin's own client takes (gRPC's default is 4 MiB): a page of 100 of the
 * largest keys is one range read, not three (see the store's readBatch).
 */
const OWN_CLIENT_RECEIVE_BYTES = 64 * 1024 * 1024
const RECEIVE_LIMIT = 'grpc.max_receive_message_length'

/** The receive limit of a client's options: its own setting, or gRPC's default. */
function receiveLimitOf (options: IOptions): number {
  const set = options.grpcOptions?.[RECEIVE_LIMIT]
  return typeof set === 'number' && set > 0 ? set : 4 * 1024 * 1024
}

/**
 * A fifth of the request's budget, never below 500 ms. A member that does not answer fails at most
 * three attempts before its circuit opens, so a fourth always has time to reach a live member.
 */
function attemptTimeoutFor (requestTimeout: number): number {
  return Math.min(requestTimeout, Math.max(500, Math.floor(requestTimeout / 5)))
}

async function fastifyEtcdApiKeys (fastify: FastifyInstance, opts: ApiKeysOptions) {
  const settings = resolveOptions(opts)
  const owned = !(settings.etcd instanceof Etcd3)
  // The store makes the attempts of a client the plugin made (see withOwnRetries). A host's
  // client, or one given its own retry policy, gets one attempt with the whole deadline.
  const storeRetries = !(settings.etcd instanceof Etcd3) && settings.etcd.faultHandling?.global === undefined
  const ownOptions = settings.etcd instanceof Etcd3
    ? undefined
    : { ...settings.etcd, grpcOptions: { [RECEIVE_LIMIT]: OWN_CLIENT_RECEIVE_BYTES, ...settings.etcd.grpcOptions } }
  const client = ownOptions === undefined
    ? settings.etcd as Etcd3
    : new Etcd3(storeRetries ? withOwnRetries(ownOptions) : ownOptions)
  const store = new ApiKeyStore(client, settings.root, {
    attemptTimeout: storeRetries ? attemptTimeoutFor(settings.requestTimeout) : undefined,
    // A host's client: what it was made with is not known, so gRPC's default.
    receiveBytes: ownOptions === undefined ? undefined : receiveLimitOf(ownOptions),
    maxKeyBytes: maxKeyBytes(settings.bodyLimit),
    cache: settings.cache ? { callTimeout: settings.requestTimeout, log: fastify.log } : undefined
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

  const apiKeys: ApiKeys = {
    async verify (secret, request) {
      if (typeof secret !== 'string' || !isWellFormedSecret(secret, settings.keyPrefix)) return null
      const found = await store.findByDigest(digestSecret(secret), requestDeadline(request, settings.requestTimeout))
      if (found === null) return null
      // The guarantee of expires_at, to the second: etcd's lease removes the key only eventually.
      if (found.key.expires_at !== undefined && Date.now() / 1000 >= found.key.expires_at) return null
      if (request !== undefined) credentials.set(request, found)
      return found.key
    },
    async revokeAllOf (username) {
      if (typeof username !== 'string' || username === '') throw new TypeError('revokeAllOf: username must be a non-empty string')
      return await store.revokeAllOf(username, { ...requestDeadline(undefined, settings.requestTimeout), batchTimeout: settings.requestTimeout })
    },
    async ping (timeout = settings.requestTimeout) {
      await store.ping({ deadline: Date.now() + timeout })
    },
    alarms: async (timeout = settings.requestTimeout) => await raisedAlarms(client, Date.now() + timeout),
    etcd: client,
    cacheStatus: () => store.cacheStatus()
  }
  fastify.decorate('apiKeys', apiKeys)
  fastify.decorateRequest('apiKeyCaller', null)

  await fastify.register(apiKeyRoutes, {
    prefix: settings.basePath,
    store,
    settings,
    authorize: settings.authorize ?? defaultAuthorize,
    defaultPolicy: settings.authorize === undefined,
    credentialOf: (request: FastifyRequest) => credentials.get(request)
  })
}

export const fastifyEtcdApiKeysPlugin = fp(fastifyEtcdApiKeys, { name: 'fastify-etcd-apikeys', fastify: '5.x' })
export default fastifyEtcdApiKeysPlugin

export { bearerTokens, apiKeyAuth, anyOf, defaultAuthorize } from './keys/authorization.js'
export type { Caller, Authenticate, Authorize, AuthorizeContext, Action } from './keys/authorization.js'
export type { ApiKeysOptions } from './options.js'
export { defaults } from './options.js'
export * as schemas from './keys/schemas.js'
export type { ApiKey, CreatedApiKey, CreateApiKeyBody, PatchApiKeyBody, ErrorBody } from './keys/schemas.js'
export { encodeContinueToken, decodeContinueToken, type ContinueToken } from './store/continue-token.js'
export { generateSecret, isWellFormedSecret, digestSecret } from './keys/secrets.js'
export * from './http/errors.js'
export type { CacheStatus } from './store/cache.js'
