// POST: a new key. The key rules build it and its secret; the store writes it; an Idempotency-Key
// makes a retry answer the key it made.
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { CreateApiKeyBody } from '../../keys/schemas.js'
import { prepareForCreate, validateCreate } from '../../keys/strategy.js'
import { digestSecret } from '../../keys/secrets.js'
import { PermissionDeniedError, InvalidRequestError, ReplayedKeyGoneError } from '../../keys/errors.js'
import { idempotencyEntryId, openIdempotencyEntry, requestFingerprint, sealIdempotencyEntry } from '../../keys/idempotency.js'
import { IdempotencyEntryExistsError } from '../../store/errors.js'
import { parseIdempotencyKey } from '../idempotency-header.js'
import { callerOf, type RouteContext } from './context.js'

/** A create's Idempotency-Key, the id of its entry in etcd, and what the request asked for. */
interface Idempotency {
  idempotencyKey: string
  entryId: string
  fingerprint: string
}

type CreateRequest = FastifyRequest<{ Params: { namespace: string }, Body: CreateApiKeyBody | undefined }>

/** The Idempotency-Key of a create, with the entry's id and the request's fingerprint; undefined without one. */
function idempotencyOf (request: CreateRequest, namespace: string): Idempotency | undefined {
  const idempotencyKey = parseIdempotencyKey(request.headers['idempotency-key'])
  if (idempotencyKey === undefined) return undefined
  return { idempotencyKey, entryId: idempotencyEntryId(callerOf(request).username, idempotencyKey), fingerprint: requestFingerprint(namespace, request.body) }
}

/** The answer of the create an Idempotency-Key already made: the key as it is now, and its secret from the entry. */
async function replay (ctx: RouteContext, request: CreateRequest, reply: FastifyReply, idempotency: Idempotency, stored: string) {
  const entry = openIdempotencyEntry(idempotency.idempotencyKey, idempotency.entryId, stored)
  if (entry.fingerprint !== idempotency.fingerprint) {
    throw new InvalidRequestError('this Idempotency-Key was sent with another request; use a new one for a new key')
  }
  const current = await ctx.store.get(entry.namespace, entry.name, ctx.deadline(request))
  if (current === null) throw new ReplayedKeyGoneError('the apikey created with this Idempotency-Key has been deleted since')
  await ctx.ensureVisible(request, entry.namespace, current.apiKey)
  request.log.info({ idempotency: { replayed: `${entry.namespace}/${entry.name}` } }, 'apikey create replayed')
  return ctx.sendCreated(reply.header('idempotent-replayed', 'true'), current, entry.secret)
}

export function createHandler (ctx: RouteContext) {
  const { store, settings } = ctx
  return async (request: CreateRequest, reply: FastifyReply) => {
    ctx.countWrite(request, reply)
    const { namespace } = request.params
    const caller = callerOf(request)
    const { apiKey, secret } = prepareForCreate(request.body ?? {}, { namespace, caller, keyPrefix: settings.keyPrefix, maxKeyBytes: store.maxKeyBytes })
    // A retry of a create that was made answers that create, before anything that could refuse it now (the quota).
    const idempotency = idempotencyOf(request, namespace)
    if (idempotency !== undefined) {
      const stored = await store.getIdempotencyEntry(idempotency.entryId, ctx.deadline(request))
      if (stored !== null) return await replay(ctx, request, reply, idempotency, stored)
    }
    if (!await ctx.allowed(request, 'create', namespace, apiKey)) {
      throw new PermissionDeniedError(`${caller.username} may not create keys for user ${apiKey.username}`)
    }
    validateCreate(caller, apiKey)
    // A key can mint keys for its own user: a quota bounds how many (a soft one: two creates
    // racing at the limit may both pass). Admins are not limited.
    const quota = settings.maxKeysPerUser
    if (quota !== false && !caller.admin && await store.countKeysOf(apiKey.username, quota, ctx.deadline(request)) >= quota) {
      throw new PermissionDeniedError(`user ${apiKey.username} holds ${quota} keys, the most a non-admin may create`)
    }
    let created
    try {
      created = await store.create(apiKey, digestSecret(secret), ctx.deadline(request), {
        idempotency: idempotency && {
          entryId: idempotency.entryId,
          entry: sealIdempotencyEntry(idempotency.idempotencyKey, idempotency.entryId, { namespace, name: apiKey.metadata.name, fingerprint: idempotency.fingerprint, secret })
        },
        // A key minting a key: only while it still authenticates as verified (revoke-all,
        // disabling, rotating or deleting it wins the race), and never past its lifetime as it is then.
        minter: ctx.writer(request, now => validateCreate(now, apiKey)).minter
      })
    } catch (err) {
      // A request with the same Idempotency-Key won the race: answer its key.
      if (!(err instanceof IdempotencyEntryExistsError) || idempotency === undefined) throw err
      return await replay(ctx, request, reply, idempotency, err.entry)
    }
    ctx.audit(request, 'create', { namespace, name: apiKey.metadata.name, username: apiKey.username })
    return ctx.sendCreated(reply, created, secret)
  }
}
