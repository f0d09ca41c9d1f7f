import type { FastifyRequest } from 'fastify'
import type { Caller } from '../keys/authorization.js'
import { safeEqualDigest, sha256 } from '../keys/secrets.js'

/** Says who the caller is, or null (401). */
export type Authenticate = (request: FastifyRequest) => Caller | null | Promise<Caller | null>

/** The credentials of an `Authorization: <scheme> <credentials>` header, if the scheme matches. */
export function credentialsOf (request: FastifyRequest, scheme: string): string | null {
  const header = request.headers.authorization
  if (typeof header !== 'string') return null
  const match = /^(\S+) +(\S+) *$/.exec(header)
  return match !== null && match[1].toLowerCase() === scheme.toLowerCase() ? match[2] : null
}

/**
 * Accepts `Authorization: Bearer <token>` for any of `tokens`, compared in constant time. Its
 * callers are admins, with the username `admin` unless another is given.
 */
export function bearerTokens (tokens: string[], options: { username?: string } = {}): Authenticate {
  if (!Array.isArray(tokens) || tokens.length === 0 || tokens.some(token => typeof token !== 'string' || token.length === 0)) {
    throw new TypeError('bearerTokens: tokens must be a non-empty array of non-empty strings')
  }
  const caller: Caller = { username: options.username ?? 'admin', admin: true }
  const digests = tokens.map(sha256)
  return (request) => {
    const given = credentialsOf(request, 'Bearer')
    if (given === null) return null
    // Compare with every token, so the time taken does not tell which one (or whether any) matched.
    const digest = sha256(given)
    let matched = false
    for (const token of digests) matched = safeEqualDigest(digest, token) || matched
    return matched ? { ...caller } : null
  }
}

/**
 * Accepts `Authorization: Key <secret>` for any API key of the plugin, acting as the key's
 * username; an admin only when that username is one of `admins`.
 */
export function apiKeyAuth (options: { admins?: string[] } = {}): Authenticate {
  const admins = new Set(options.admins ?? [])
  return async (request) => {
    const secret = credentialsOf(request, 'Key')
    if (secret === null) return null
    const apiKey = await request.server.apiKeys.verify(secret, request)
    return apiKey && { username: apiKey.username, admin: admins.has(apiKey.username), ...(apiKey.expires_at !== undefined && { expiresAt: apiKey.expires_at }) }
  }
}

/** The first authenticator that accepts the request wins. */
export function anyOf (...authenticators: Authenticate[]): Authenticate {
  if (authenticators.length === 0 || authenticators.some(a => typeof a !== 'function')) {
    throw new TypeError('anyOf: give one or more authenticate functions')
  }
  // Without a promise while the authenticators answer at once (a bearer token), so that the hook
  // does not wait a turn for nothing; an error is a rejection either way, as from an async function.
  const from = (request: FastifyRequest, first: number): Caller | null | Promise<Caller | null> => {
    for (let i = first; i < authenticators.length; i++) {
      const caller = authenticators[i](request)
      if (typeof (caller as { then?: unknown } | null)?.then === 'function') {
        return Promise.resolve(caller).then(answer => answer || from(request, i + 1))
      }
      if (caller) return caller
    }
    return null
  }
  return (request) => {
    try {
      return from(request, 0)
    } catch (err) {
      return Promise.reject(err)
    }
  }
}
