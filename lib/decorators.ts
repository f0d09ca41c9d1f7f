// What the plugin decorates the Fastify instance with (`fastify.apiKeys`): checking a secret (and
// why one is refused), revoke-all, and the probes a host's readiness check uses.
import type { FastifyRequest } from 'fastify'
import type { Etcd3 } from 'etcd3'
import type { ResolvedOptions } from './options.js'
import type { ApiKeyStore, StoredKey } from './store/store.js'
import { raisedAlarms } from './store/alarms.js'
import type { CacheStatus } from './store/cache/watch-cache.js'
import { requestDeadline } from './http/deadline.js'
import { digestSecret, isWellFormedSecret } from './keys/secrets.js'
import type { ApiKey } from './keys/schemas.js'

/**
 * Why a secret does not authenticate: `malformed` (not a secret of this plugin's form; etcd is not
 * read), `unknown` (no key has it: never made, deleted, or an old secret past a rotation's grace),
 * `expired` (its `expires_at` has come), `disabled` (its `disabled` is true), `revoked` (by a
 * revoke-all of its username).
 */
export type RefusalReason = 'malformed' | 'unknown' | 'expired' | 'disabled' | 'revoked'

/** What `apiKeys.check` answers: the key, or why there is none. */
export type CheckResult =
  | { valid: true, key: ApiKey }
  | { valid: false, reason: RefusalReason }

/** What the plugin decorates the Fastify instance with, as `fastify.apiKeys`. */
export interface ApiKeys {
  /**
   * The key a secret belongs to, or null when it does not authenticate: `check`'s key, without
   * the reason. Counts as a use (`last_used_at`) when it answers a key.
   */
  verify(secret: string, request?: FastifyRequest): Promise<ApiKey | null>
  /**
   * `{ valid: true, key }` for a secret that authenticates, else `{ valid: false, reason }` (see
   * RefusalReason), so that a host can say, in its own logs, why a key was refused. The plugin's
   * own answers never carry the reason (a 401 is a 401). A malformed secret is refused without
   * reading etcd. Given the request, the lookup shares its deadline. A valid check counts as a use
   * of the key (`last_used_at`, written later, never on this path). The key is the record as
   * etcd holds it, without `last_used_at`. Rejects with a 503 error when etcd cannot answer in time.
   */
  check(secret: string, request?: FastifyRequest): Promise<CheckResult>
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

export interface DecoratorContext {
  store: ApiKeyStore
  client: Etcd3
  settings: ResolvedOptions
  /** Counts one verification by its outcome (the metrics), or nothing. */
  verified: (outcome: 'valid' | RefusalReason) => void
  /** Remembers the key a request authenticated with (and its secret's digest): what it writes is guarded by it. */
  authenticated: (request: FastifyRequest, credential: Credential) => void
}

/** The API key a request authenticated with, as verified, and the digest of the secret it gave. */
export interface Credential {
  key: StoredKey
  digest: string
}

/** Why a key that etcd holds does not authenticate now, if it does not. */
function refusalOf (apiKey: ApiKey, nowMs = Date.now()): 'expired' | 'disabled' | undefined {
  // The guarantee of expires_at, to the second: etcd's lease removes the key only eventually.
  if (apiKey.expires_at !== undefined && nowMs / 1000 >= apiKey.expires_at) return 'expired'
  if (apiKey.disabled === true) return 'disabled'
  return undefined
}

/**
 * The key a request authenticated with, as it authenticates now (read again, consistently), or
 * null when the same secret no longer authenticates that key: deleted, revoked, disabled, expired,
 * or rotated away (past its grace). Asked when a write the key makes finds it changed.
 */
export async function authenticatesNow (store: ApiKeyStore, credential: Credential, deadline: number): Promise<StoredKey | null> {
  const found = await store.findByDigest(credential.digest, deadline)
  if (found.key === null) return null
  const { key } = credential
  const same = found.key.createRevision === key.createRevision &&
    found.key.apiKey.metadata.namespace === key.apiKey.metadata.namespace && found.key.apiKey.metadata.name === key.apiKey.metadata.name
  return same && refusalOf(found.key.apiKey) === undefined ? found.key : null
}

/** The `apiKeys` decorator. */
export function apiKeysDecorator (ctx: DecoratorContext): ApiKeys {
  const { store, client, settings, verified } = ctx
  const refuse = (reason: RefusalReason): CheckResult => {
    verified(reason)
    return { valid: false, reason }
  }
  const check = async (secret: string, request?: FastifyRequest): Promise<CheckResult> => {
    if (typeof secret !== 'string' || !isWellFormedSecret(secret, settings.keyPrefix)) return refuse('malformed')
    const digest = digestSecret(secret)
    const found = await store.findByDigest(digest, requestDeadline(request, settings.requestTimeout))
    if (found.key === null) return refuse(found.why)
    const { apiKey } = found.key
    const refusal = refusalOf(apiKey)
    if (refusal !== undefined) return refuse(refusal)
    if (request !== undefined) ctx.authenticated(request, { key: found.key, digest })
    store.recordUse(found.key)
    verified('valid')
    return { valid: true, key: apiKey }
  }
  return {
    check,
    async verify (secret, request) {
      const result = await check(secret, request)
      return result.valid ? result.key : null
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
}
