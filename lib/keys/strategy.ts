// The key rules, as a Kubernetes registry's strategy: prepareForCreate builds a new key (and its
// secret), prepareForUpdate applies a merge patch to a stored one, and validateCreate and
// validateUpdate check what only the caller can tell. Plain functions: no Fastify, no etcd.
import { randomUUID } from 'node:crypto'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { ApiKey, type CreateApiKeyBody } from './schemas.js'
import type { Caller } from './authorization.js'
import { digestSecret, generateSecret } from './secrets.js'
import { firstProblem } from './validation.js'
import { ApiKeyTooLargeError, InvalidRequestError, PermissionDeniedError } from './errors.js'

/** etcd's longest lease, in seconds: an expiry further away cannot be kept. */
const MAX_LEASE_SECONDS = 9_000_000_000

const checkApiKey = TypeCompiler.Compile(ApiKey)

/** The largest key (its JSON) the plugin stores: a body's worth, and room for the fields the server sets. */
export function maxKeyBytes (bodyLimit: number): number {
  return bodyLimit + 1024
}

/** RFC 7396 JSON merge patch: `null` removes, objects merge, anything else replaces. */
export function mergePatch (target: unknown, patch: unknown): unknown {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) return patch
  const result: Record<string, unknown> = typeof target === 'object' && target !== null && !Array.isArray(target)
    ? { ...target as Record<string, unknown> }
    : {}
  for (const [field, value] of Object.entries(patch)) {
    if (field === '__proto__') continue
    if (value === null) delete result[field]
    else result[field] = mergePatch(result[field], value)
  }
  return result
}

/** Fields a patch may only repeat: they say what the key is, who made it and when, and when it was last used (the server's to set). */
const immutableFields: Array<[string, (apiKey: ApiKey) => unknown]> = [
  ['metadata.name', apiKey => apiKey.metadata?.name],
  ['metadata.namespace', apiKey => apiKey.metadata?.namespace],
  ['metadata.created_by', apiKey => apiKey.metadata?.created_by],
  ['created_at', apiKey => apiKey.created_at],
  ['rotated_at', apiKey => apiKey.rotated_at],
  ['last_used_at', apiKey => apiKey.last_used_at]
]

/** A new expiry must lie in the future (and within etcd's longest lease). */
export function checkExpiry (expiresAt: number | undefined, now = Date.now()): void {
  if (expiresAt === undefined) return
  const seconds = Math.floor(now / 1000)
  if (expiresAt <= seconds) throw new InvalidRequestError('field "expires_at" must be in the future (Unix seconds)')
  if (expiresAt - seconds > MAX_LEASE_SECONDS) throw new InvalidRequestError('field "expires_at" is further away than etcd can keep a lease')
}

/**
 * A caller whose own credentials expire (an API key with `expires_at`) never makes or moves a key
 * past that moment, so that a leaked short-lived key cannot mint a lasting one.
 */
export function checkLifetime (caller: Caller, expiresAt: number | undefined): void {
  if (caller.expiresAt === undefined || (expiresAt !== undefined && expiresAt <= caller.expiresAt)) return
  throw new PermissionDeniedError(`the apikey you authenticate with expires at ${caller.expiresAt} (Unix seconds), and nothing it makes or changes may outlive it: ` +
    (expiresAt === undefined ? 'field "expires_at" may not be removed' : `field "expires_at" must be at most ${caller.expiresAt}`))
}

/** A key over `limit` bytes of JSON is refused: merge patches would otherwise grow it without bound. */
export function checkSize (apiKey: ApiKey, limit: number): void {
  if (Buffer.byteLength(JSON.stringify(apiKey)) > limit) throw new ApiKeyTooLargeError(limit)
}

export interface CreateContext {
  namespace: string
  caller: Caller
  /** The prefix of the secret (option keyPrefix). */
  keyPrefix: string
  /** The largest key, in bytes of JSON (maxKeyBytes). */
  maxKeyBytes: number
  now?: number
}

/**
 * The key a create makes of its body, with its secret: a new name, the caller as its maker, an
 * expiry no later than the caller's own. Refuses a body naming another namespace, an expiry not in
 * the future, a key too large.
 */
export function prepareForCreate (body: CreateApiKeyBody, context: CreateContext): { apiKey: ApiKey, secret: string } {
  const { namespace, caller, now = Date.now() } = context
  if (body.metadata?.namespace !== undefined && body.metadata.namespace !== namespace) {
    throw new InvalidRequestError('field "metadata.namespace" does not match the namespace of the URL')
  }
  const { labels, annotations } = body.metadata ?? {}
  // A caller whose credentials expire makes keys that expire with them at the latest.
  const expiresAt = body.expires_at ?? caller.expiresAt
  const apiKey: ApiKey = {
    metadata: {
      name: randomUUID(),
      namespace,
      ...(labels !== undefined && { labels }),
      ...(annotations !== undefined && { annotations }),
      created_by: caller.username
    },
    username: body.username ?? caller.username,
    created_at: Math.floor(now / 1000),
    ...(body.url !== undefined && { url: body.url }),
    ...(body.sha512 !== undefined && { sha512: body.sha512 }),
    ...(body.filters !== undefined && { filters: body.filters }),
    ...(body.headers !== undefined && { headers: body.headers }),
    ...(expiresAt !== undefined && { expires_at: expiresAt }),
    ...(body.disabled !== undefined && { disabled: body.disabled })
  }
  checkExpiry(apiKey.expires_at, now)
  checkSize(apiKey, context.maxKeyBytes)
  return { apiKey, secret: generateSecret(context.keyPrefix) }
}

/** What only the caller decides of a new key (after authorization): its lifetime. */
export function validateCreate (caller: Caller, apiKey: ApiKey): void {
  checkLifetime(caller, apiKey.expires_at)
}

/**
 * The key as `patch` (a JSON merge patch) leaves it, checked like a new key: immutable fields
 * unchanged, the schema, a changed expiry in the future, the size.
 */
export function prepareForUpdate (current: ApiKey, patch: unknown, limits: { maxKeyBytes: number, now?: number }): ApiKey {
  const after = mergePatch(current, patch) as ApiKey
  for (const [field, read] of immutableFields) {
    if (read(after) !== read(current)) throw new InvalidRequestError(`field "${field}" is immutable`)
  }
  const problem = firstProblem(checkApiKey, after, 'patched apikey')
  if (problem !== null) throw new InvalidRequestError(problem)
  if (after.expires_at !== current.expires_at) checkExpiry(after.expires_at, limits.now)
  checkSize(after, limits.maxKeyBytes)
  return after
}

/** What only the caller decides of a change (after authorization): a moved expiry within its own. */
export function validateUpdate (caller: Caller, before: ApiKey, after: ApiKey): void {
  if (after.expires_at !== before.expires_at) checkLifetime(caller, after.expires_at)
}

/**
 * A rotation's new secret and its digest, made once per request: a retried write must find its
 * own digest to know that it was applied.
 */
export function prepareForRotate (keyPrefix: string): { secret: string, digest: string } {
  const secret = generateSecret(keyPrefix)
  return { secret, digest: digestSecret(secret) }
}

/** The key as a rotation leaves it (the store swaps its digest): `rotated_at` set to now. */
export function rotated (current: ApiKey, now = Date.now()): ApiKey {
  return { ...current, rotated_at: Math.floor(now / 1000) }
}

/**
 * What only the caller decides of a rotation (after authorization): a caller whose own
 * credentials expire may rotate only keys that end no later than they do, since a new secret
 * for a key that outlives the caller would be a lasting credential minted by a short-lived one.
 */
export function validateRotate (caller: Caller, current: ApiKey): void {
  if (caller.expiresAt === undefined || (current.expires_at !== undefined && current.expires_at <= caller.expiresAt)) return
  throw new PermissionDeniedError(`the apikey you authenticate with expires at ${caller.expiresAt} (Unix seconds), and this apikey ` +
    (current.expires_at === undefined ? 'never expires' : `expires later (at ${current.expires_at})`) +
    ': rotate it with a credential that lives at least as long (a longer-lived apikey, or an admin token)')
}
