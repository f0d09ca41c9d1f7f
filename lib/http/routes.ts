import { randomUUID } from 'node:crypto'
import { Readable } from 'node:stream'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
// Types only: `schema.hide` and `tags`, read by @fastify/swagger where a host registers it.
import type {} from '@fastify/swagger'
import { Type } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import {
  ApiKey, ApiKeyParams, CreateApiKeyBody, CreatedApiKey, ErrorBody, ListQuery, NamespaceParams, PatchApiKeyBody,
  RevokeAllAnswer, RevokeAllQuery
} from '../keys/schemas.js'
import type { Action, Authorize, Caller } from '../keys/authorization.js'
import {
  ConflictError, ForbiddenError, IdempotencyEntryExistsError, InvalidArgumentError, KeyNotFoundError, KeyTooLargeError, MethodNotAllowedError, UnauthenticatedError,
  UnsupportedMediaTypeError, TooManyRequestsError, VersionMismatchError, WriteLimitError, sendError, sendRouteNotFound
} from './errors.js'
import { WriteLimiter } from './write-limit.js'
import { authFailureGuard } from './failure-limit.js'
import {
  idempotencyEntryId, openIdempotencyEntry, parseIdempotencyKey, requestFingerprint, sealIdempotencyEntry
} from '../keys/idempotency.js'
import { digestSecret, generateSecret } from '../keys/secrets.js'
import { requestDeadline } from './deadline.js'
import { typeBoxValidatorCompiler, firstProblem } from './validator.js'
import type { ApiKeyStore, StoredKey } from '../store/store.js'
import type { ResolvedOptions } from '../options.js'

export interface RoutesOptions {
  store: ApiKeyStore
  settings: ResolvedOptions
  authorize: Authorize
  /** True when `authorize` is the default policy, whose answer for an admin is always yes. */
  defaultPolicy: boolean
  /** The API key the request authenticated with, if it did with one. */
  credentialOf: (request: FastifyRequest) => StoredKey | undefined
}

/** A create's Idempotency-Key, the id of its entry in etcd, and what the request asked for. */
interface Idempotency {
  key: string
  entryId: string
  fingerprint: string
}

/** Pages are at most this long; a larger `limit` is read as this. */
export const MAX_LIMIT = 1000

const errorResponses = { '4xx': ErrorBody, '5xx': ErrorBody }
const checkApiKey = TypeCompiler.Compile(ApiKey)

/** The strong ETag of a key: its etcd revision, which changes on every update. */
const etagOf = (revision: number) => `"${revision}"`

/** Does `If-Match` (RFC 9110, strong comparison) match this revision? */
function ifMatches (header: string, revision: number): boolean {
  return header.split(',').some(tag => {
    const t = tag.trim()
    return t === '*' || t === etagOf(revision)
  })
}

/** RFC 7396 JSON merge patch: `null` removes, objects merge, anything else replaces. */
function mergePatch (target: unknown, patch: unknown): unknown {
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

const immutableFields: Array<[string, (key: ApiKey) => unknown]> = [
  ['metadata.name', key => key.metadata?.name],
  ['metadata.namespace', key => key.metadata?.namespace],
  ['metadata.created_by', key => key.metadata?.created_by],
  ['created_at', key => key.created_at]
]

/** etcd's longest lease, in seconds: an expiry further away cannot be kept. */
const MAX_LEASE_SECONDS = 9_000_000_000

/** A new expiry must lie in the future (and within etcd's longest lease); a 400 when not. */
function checkExpiry (expiresAt: number | undefined) {
  if (expiresAt === undefined) return
  const now = Math.floor(Date.now() / 1000)
  if (expiresAt <= now) throw new InvalidArgumentError('field "expires_at" must be in the future (Unix seconds)')
  if (expiresAt - now > MAX_LEASE_SECONDS) throw new InvalidArgumentError('field "expires_at" is further away than etcd can keep a lease')
}

/**
 * A caller whose own credentials expire (an API key with `expires_at`) never makes or moves a key
 * past that moment, so that a leaked short-lived key cannot mint a lasting one (SPEC: Containment).
 */
function checkLifetime (caller: Caller, expiresAt: number | undefined) {
  if (caller.expiresAt === undefined || (expiresAt !== undefined && expiresAt <= caller.expiresAt)) return
  throw new ForbiddenError(`the apikey you authenticate with expires at ${caller.expiresAt} (Unix seconds), and nothing it makes or changes may outlive it: ` +
    (expiresAt === undefined ? 'field "expires_at" may not be removed' : `field "expires_at" must be at most ${caller.expiresAt}`))
}

/** A key over `limit` bytes of JSON is refused (413): merge patches would otherwise grow it without bound. */
function checkSize (key: ApiKey, limit: number) {
  if (Buffer.byteLength(JSON.stringify(key)) > limit) throw new KeyTooLargeError(String(limit))
}

/** The key as `patch` would leave it, checked like a new key; a 400 when it cannot be. */
function patchedKey (current: ApiKey, patch: unknown, sizeLimit: number): ApiKey {
  const after = mergePatch(current, patch) as ApiKey
  for (const [field, read] of immutableFields) {
    if (read(after) !== read(current)) throw new InvalidArgumentError(`field "${field}" is immutable`)
  }
  const problem = firstProblem(checkApiKey, after, 'patched apikey')
  if (problem !== null) throw new InvalidArgumentError(problem)
  if (after.expires_at !== current.expires_at) checkExpiry(after.expires_at)
  checkSize(after, sizeLimit)
  return after
}

/** The JSON array of a streamed list, one serialised key at a time. */
async function * jsonArray (keys: AsyncIterable<ApiKey>, serialize: (key: ApiKey) => string): AsyncGenerator<string> {
  let separator = '['
  for await (const key of keys) {
    yield separator + serialize(key)
    separator = ','
  }
  yield separator === '[' ? '[]' : ']'
}

/** The request's caller; the onRequest hook has set it before any handler runs. */
function callerOf (request: FastifyRequest): Caller {
  return request.apiKeyCaller as Caller
}

/** The routes, in their own encapsulated context so that its parsers, hooks and handlers stay here. */
export async function apiKeyRoutes (fastify: FastifyInstance, { store, settings, authorize, defaultPolicy, credentialOf }: RoutesOptions) {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  const { requestTimeout, keyPrefix, bodyLimit } = settings
  const deadline = (request: FastifyRequest) => requestDeadline(request, requestTimeout)
  const allowed = (request: FastifyRequest, action: Action, namespace: string, key: ApiKey) =>
    authorize({ caller: callerOf(request), action, namespace, key })
  /** A key the caller may not see answers as if it did not exist, so its existence is not revealed. */
  const ensureVisible = async (request: FastifyRequest, namespace: string, key: ApiKey) => {
    if (!await allowed(request, 'get', namespace, key)) throw new KeyNotFoundError(`apikey ${key.metadata.name} not found`)
  }
  /**
   * One audit line for every change: who, what, when (the line's time), from where. Names and
   * fields only, never values: a key's headers may hold credentials, and never its secret.
   */
  const audit = (request: FastifyRequest, action: 'create' | 'patch' | 'delete' | 'revoke-all', details: Record<string, unknown>) => {
    const { username, admin } = callerOf(request)
    request.log.info({ audit: { action, by: username, admin, from: request.ip, ...details } }, `apikey ${action}`)
  }
  const writeLimiter = settings.writeLimit === false ? undefined : new WriteLimiter(settings.writeLimit)
  /**
   * Counts a non-admin caller's write (create, patch, rotate, delete) against its username's limit;
   * past it a 429, before anything is read or written. Call it first in every writing handler.
   */
  const countWrite = (request: FastifyRequest, reply: FastifyReply) => {
    const { username, admin } = callerOf(request)
    const wait = admin ? 0 : writeLimiter?.take(username) ?? 0
    if (wait === 0) return
    reply.header('retry-after', String(wait))
    throw new WriteLimitError(username, String(wait))
  }
  const locationOf = (namespace: string, name: string) => `${app.prefix}/namespaces/${namespace}/apikey/${name}`
  const sendCreated = (reply: FastifyReply, created: StoredKey, secret: string) => reply.code(201)
    .header('location', locationOf(created.key.metadata.namespace, created.key.metadata.name))
    .header('etag', etagOf(created.revision))
    .send({ ...created.key, key: secret })

  /** The Idempotency-Key of a create, with the entry's id and the request's fingerprint; undefined without one. */
  const idempotencyOf = (request: FastifyRequest, namespace: string): Idempotency | undefined => {
    const key = parseIdempotencyKey(request.headers['idempotency-key'])
    if (key === undefined) return undefined
    return { key, entryId: idempotencyEntryId(callerOf(request).username, key), fingerprint: requestFingerprint(namespace, request.body) }
  }

  /** The answer of the create an Idempotency-Key already made: the key as it is now, and its secret from the entry. */
  const replay = async (request: FastifyRequest, reply: FastifyReply, idempotency: Idempotency, stored: string) => {
    const entry = openIdempotencyEntry(idempotency.key, idempotency.entryId, stored)
    if (entry.fingerprint !== idempotency.fingerprint) {
      throw new InvalidArgumentError('this Idempotency-Key was sent with another request; use a new one for a new key')
    }
    const current = await store.get(entry.namespace, entry.name, deadline(request))
    if (current === null) throw new ConflictError('the apikey created with this Idempotency-Key has been deleted since')
    await ensureVisible(request, entry.namespace, current.key)
    request.log.info({ idempotency: { replayed: `${entry.namespace}/${entry.name}` } }, 'apikey create replayed')
    return sendCreated(reply.header('idempotent-replayed', 'true'), current, entry.secret)
  }

  app.setValidatorCompiler(typeBoxValidatorCompiler)
  app.setErrorHandler(sendError)
  app.setNotFoundHandler(sendRouteNotFound)

  // Only JSON bodies. An empty body of any type is no body; a non-empty one of another type is a
  // 415. JSON errors get a fixed message: V8's would quote the body, and with it a secret.
  const parseJson = app.getDefaultJsonParser('error', 'error')
  const jsonParser = (request: FastifyRequest, body: string | Buffer, done: (err: Error | null, body?: unknown) => void) => {
    if (body === '') return done(null, undefined)
    parseJson(request, body as string, (err: Error | null, value?: unknown) => {
      if (err === null) return done(null, value)
      done(new InvalidArgumentError(/prototype/.test(err.message)
        ? 'body must not hold __proto__ or constructor.prototype'
        : 'body is not valid JSON'))
    })
  }
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit }, jsonParser)
  app.addContentTypeParser('application/merge-patch+json', { parseAs: 'string', bodyLimit }, (request, body, done) => {
    if (request.method !== 'PATCH' && body !== '') return done(unsupportedMediaType(request))
    jsonParser(request, body, done)
  })
  app.addContentTypeParser('*', { parseAs: 'string', bodyLimit }, (request, body, done) => {
    done(body === '' ? null : unsupportedMediaType(request), undefined)
  })

  const guard = settings.authFailureLimit === false ? undefined : await authFailureGuard(app, settings.authFailureLimit)
  const tooManyFailures = (reply: FastifyReply, seconds: number) => {
    reply.header('retry-after', String(seconds))
    return new TooManyRequestsError(String(seconds))
  }

  // Authentication comes first, before any body is read: without valid credentials, a 401. Valid
  // credentials are always served. Invalid ones from an address past its limit of failed
  // authentications get a 429: a flood of bad credentials from a shared address (a NAT, a proxy)
  // never locks out a valid key or token; what defeats guessing is the secrets' 256 random bits.
  app.addHook('onRequest', async (request, reply) => {
    deadline(request)
    const caller = await settings.authenticate(request)
    if (caller === null || caller === undefined) {
      const wait = guard === undefined ? 0 : guard.waitFor(request) || await guard.failed(request)
      if (wait > 0) throw tooManyFailures(reply, wait)
      reply.header('www-authenticate', 'Bearer, Key')
      throw new UnauthenticatedError()
    }
    if (typeof caller.username !== 'string' || caller.username === '' || typeof caller.admin !== 'boolean' ||
      (caller.expiresAt !== undefined && !Number.isInteger(caller.expiresAt))) {
      throw new TypeError('authenticate must return { username: string, admin: boolean, expiresAt?: integer } or null')
    }
    request.apiKeyCaller = caller
  })

  const methodNotAllowed = (allow: string) => async (request: FastifyRequest, reply: FastifyReply) => {
    reply.header('allow', allow)
    throw new MethodNotAllowedError(request.method)
  }

  for (const segment of ['apikey', 'apikeys']) {
    const collection = `/namespaces/:namespace/${segment}`
    const item = `${collection}/:apikey`
    // Sensu Go's plural spelling answers the same and stays out of the OpenAPI document.
    const hide = segment !== 'apikey'
    const tags = ['apikeys']

    app.get(collection, {
      schema: {
        hide,
        tags,
        summary: 'List the API keys of a namespace',
        params: NamespaceParams,
        querystring: ListQuery,
        response: { 200: Type.Array(ApiKey), ...errorResponses }
      }
    }, async (request, reply) => {
      const { namespace } = request.params
      const limit = Math.min(Number(request.query.limit ?? 0), MAX_LIMIT)
      const continueToken = request.query.continue || undefined
      const filter = defaultPolicy && callerOf(request).admin
        ? undefined
        : (key: ApiKey) => allowed(request, 'list', namespace, key)
      if (limit > 0) {
        const page = await store.listPage(namespace, { limit, continueToken, filter, ...deadline(request) })
        if (page.continueToken) reply.header('sensu-continue', page.continueToken)
        return page.items
      }
      const keys = await store.listAll(namespace, { continueToken, filter, batchTimeout: requestTimeout, ...deadline(request) })
      const serialize = reply.compileSerializationSchema(ApiKey) as (key: ApiKey) => string
      // A stream is sent as it is: each key went through the response schema's serializer above.
      const stream = Readable.from(jsonArray(keys, serialize))
      return reply.type('application/json; charset=utf-8').send(stream as unknown as ApiKey[])
    })

    app.post(collection, {
      schema: {
        hide,
        tags,
        summary: 'Create an API key; the answer holds its secret, shown this once',
        params: NamespaceParams,
        headers: Type.Object({
          'idempotency-key': Type.Optional(Type.String({
            description: 'Makes a retry safe: the same request with the same value within 24 hours answers the key it created, secret included, instead of creating another'
          }))
        }),
        body: Type.Optional(CreateApiKeyBody),
        response: { 201: CreatedApiKey, ...errorResponses }
      },
      // An empty body creates a key with defaults, as if it were {}.
      preValidation: async (request) => { if (request.body === undefined) request.body = {} }
    }, async (request, reply) => {
      countWrite(request, reply)
      const { namespace } = request.params
      const body = request.body ?? {}
      const caller = callerOf(request)
      if (body.metadata?.namespace !== undefined && body.metadata.namespace !== namespace) {
        throw new InvalidArgumentError('field "metadata.namespace" does not match the namespace of the URL')
      }
      const { labels, annotations } = body.metadata ?? {}
      const key: ApiKey = {
        metadata: {
          name: randomUUID(),
          namespace,
          ...(labels !== undefined && { labels }),
          ...(annotations !== undefined && { annotations }),
          created_by: caller.username
        },
        username: body.username ?? caller.username,
        created_at: Math.floor(Date.now() / 1000),
        ...(body.url !== undefined && { url: body.url }),
        ...(body.sha512 !== undefined && { sha512: body.sha512 }),
        ...(body.filters !== undefined && { filters: body.filters }),
        ...(body.headers !== undefined && { headers: body.headers }),
        // A caller whose credentials expire makes keys that expire with them at the latest.
        ...((body.expires_at ?? caller.expiresAt) !== undefined && { expires_at: body.expires_at ?? caller.expiresAt })
      }
      checkExpiry(key.expires_at)
      checkSize(key, store.maxKeyBytes)
      // A retry of a create that was made answers that create, before anything that could refuse it now (the quota).
      const idempotency = idempotencyOf(request, namespace)
      if (idempotency !== undefined) {
        const stored = await store.getIdempotencyEntry(idempotency.entryId, deadline(request))
        if (stored !== null) return await replay(request, reply, idempotency, stored)
      }
      if (!await allowed(request, 'create', namespace, key)) {
        throw new ForbiddenError(`${caller.username} may not create keys for user ${key.username}`)
      }
      checkLifetime(caller, key.expires_at)
      // A key can mint keys for its own user: a quota bounds how many (a soft one: two creates
      // racing at the limit may both pass). Admins are not limited.
      const quota = settings.maxKeysPerUser
      if (quota !== false && !caller.admin && await store.countKeysOf(key.username, quota, deadline(request)) >= quota) {
        throw new ForbiddenError(`user ${key.username} holds ${quota} keys, the most a non-admin may create`)
      }
      const secret = generateSecret(keyPrefix)
      let created
      try {
        created = await store.create(key, digestSecret(secret), deadline(request), {
          idempotency: idempotency && {
            entryId: idempotency.entryId,
            entry: sealIdempotencyEntry(idempotency.key, idempotency.entryId, { namespace, name: key.metadata.name, fingerprint: idempotency.fingerprint, secret })
          },
          // A key minting a key: only while it is itself not revoked (revoke-all wins the race).
          minter: credentialOf(request)
        })
      } catch (err) {
        // A request with the same Idempotency-Key won the race: answer its key.
        if (!(err instanceof IdempotencyEntryExistsError) || idempotency === undefined) throw err
        return await replay(request, reply, idempotency, err.entry)
      }
      audit(request, 'create', { namespace, name: key.metadata.name, username: key.username })
      return sendCreated(reply, created, secret)
    })

    app.get(item, {
      schema: {
        hide,
        tags,
        summary: 'Read an API key',
        params: ApiKeyParams,
        response: { 200: ApiKey, ...errorResponses }
      }
    }, async (request, reply) => {
      const { namespace, apikey } = request.params
      const stored = await store.get(namespace, apikey, deadline(request))
      if (stored === null) throw new KeyNotFoundError(`apikey ${apikey} not found`)
      await ensureVisible(request, namespace, stored.key)
      reply.header('etag', etagOf(stored.revision))
      return stored.key
    })

    app.patch(item, {
      schema: {
        hide,
        tags,
        summary: 'Update an API key with a JSON merge patch (RFC 7396)',
        params: ApiKeyParams,
        body: PatchApiKeyBody,
        response: { 200: ApiKey, ...errorResponses }
      },
      preValidation: async (request) => {
        if (request.body === undefined) throw new InvalidArgumentError('PATCH needs a JSON merge patch body')
      }
    }, async (request, reply) => {
      countWrite(request, reply)
      const { namespace, apikey } = request.params
      const ifMatch = request.headers['if-match']
      const updated = await store.update(namespace, apikey, async (current) => {
        // Visibility first, so that neither If-Match nor validation reveals another user's key.
        await ensureVisible(request, namespace, current.key)
        if (ifMatch !== undefined && !ifMatches(ifMatch, current.revision)) throw new VersionMismatchError()
        const after = patchedKey(current.key, request.body, store.maxKeyBytes)
        if (!await allowed(request, 'patch', namespace, after)) {
          throw new ForbiddenError(`${callerOf(request).username} may not make this change`)
        }
        if (after.expires_at !== current.key.expires_at) checkLifetime(callerOf(request), after.expires_at)
        return after
      }, deadline(request))
      audit(request, 'patch', { namespace, name: apikey, username: updated.key.username, fields: Object.keys(request.body as object) })
      reply.header('etag', etagOf(updated.revision))
      return updated.key
    })

    app.delete(item, {
      schema: {
        hide,
        tags,
        summary: 'Revoke an API key',
        params: ApiKeyParams,
        response: { 204: Type.Null({ description: 'revoked' }), ...errorResponses }
      }
    }, async (request, reply) => {
      countWrite(request, reply)
      const { namespace, apikey } = request.params
      let username = ''
      await store.delete(namespace, apikey, async (current) => {
        await ensureVisible(request, namespace, current.key)
        if (!await allowed(request, 'delete', namespace, current.key)) {
          throw new ForbiddenError(`${callerOf(request).username} may not delete this key`)
        }
        username = current.key.username
      }, deadline(request))
      audit(request, 'delete', { namespace, name: apikey, username })
      return reply.code(204).send(null)
    })

    // Other methods on these paths, and deeper paths (an unencoded `a/b`), answer in JSON too.
    app.route({ method: ['PUT', 'PATCH', 'DELETE'], url: collection, schema: { hide: true }, handler: methodNotAllowed('GET, HEAD, POST') })
    app.route({ method: ['PUT', 'POST'], url: item, schema: { hide: true }, handler: methodNotAllowed('GET, HEAD, PATCH, DELETE') })
    app.all(`${item}/*`, { schema: { hide: true } }, sendRouteNotFound)
  }

  // Containment of a leaked key: a key can mint more keys for its own user, so an admin revokes
  // every key of that user, in all namespaces, at once.
  app.delete('/apikeys', {
    schema: {
      tags: ['apikeys'],
      summary: 'Revoke every API key of a username, in all namespaces (admins only)',
      querystring: RevokeAllQuery,
      response: { 200: RevokeAllAnswer, ...errorResponses }
    }
  }, async (request) => {
    const { username } = request.query
    if (!callerOf(request).admin) throw new ForbiddenError('only an admin may revoke every key of a user')
    const deleted = await store.revokeAllOf(username, { ...deadline(request), batchTimeout: requestTimeout })
    audit(request, 'revoke-all', { username, deleted })
    return { username, deleted }
  })
  app.route({ method: ['GET', 'PUT', 'POST', 'PATCH'], url: '/apikeys', schema: { hide: true }, handler: methodNotAllowed('DELETE') })
}

function unsupportedMediaType (request: FastifyRequest): Error {
  return new UnsupportedMediaTypeError(request.method === 'PATCH' ? 'application/merge-patch+json or application/json' : 'application/json')
}
