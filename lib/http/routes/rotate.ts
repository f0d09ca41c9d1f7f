// POST .../apikey/:apikey/rotate: a new secret for a key, the old one kept for a grace. The key
// rules make the secret and say who may; the store swaps the digests in one transaction.
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { RotateApiKeyBody } from '../../keys/schemas.js'
import { prepareForRotate, rotated, validateRotate } from '../../keys/strategy.js'
import { digestSecret } from '../../keys/secrets.js'
import { InvalidRequestError, PermissionDeniedError, ReplayedKeyGoneError } from '../../keys/errors.js'
import { idempotencyEntryId, openIdempotencyEntry, rotationFingerprint, sealIdempotencyEntry } from '../../keys/idempotency.js'
import { IdempotencyEntryExistsError, VersionMismatchError } from '../../store/errors.js'
import type { StoredKey } from '../../store/store.js'
import { parseIdempotencyKey } from '../idempotency-header.js'
import { callerOf, etagOf, type RouteContext } from './context.js'
import { ifMatches } from './change.js'

type RotateRequest = FastifyRequest<{ Params: { namespace: string, apikey: string }, Body: RotateApiKeyBody }>

/** A rotation's Idempotency-Key, the id of its entry in etcd, and what the request asked for. */
interface Idempotency {
  idempotencyKey: string
  entryId: string
  fingerprint: string
}

function idempotencyOf (request: RotateRequest): Idempotency | undefined {
  const idempotencyKey = parseIdempotencyKey(request.headers['idempotency-key'])
  if (idempotencyKey === undefined) return undefined
  const { namespace, apikey } = request.params
  return { idempotencyKey, entryId: idempotencyEntryId(callerOf(request).username, idempotencyKey), fingerprint: rotationFingerprint(namespace, apikey, request.body) }
}

/** The 200 of a rotation: the key with its new secret, and its ETag. */
function sendRotated (reply: FastifyReply, rotatedKey: StoredKey, secret: string) {
  return reply.header('etag', etagOf(rotatedKey.revision)).send({ ...rotatedKey.apiKey, key: secret })
}

/**
 * The answer of the rotation an Idempotency-Key already made: the key as it is now, and the secret
 * from the entry, as long as that secret still authenticates (a later rotation ends it: a 409).
 */
async function replay (ctx: RouteContext, request: RotateRequest, reply: FastifyReply, idempotency: Idempotency, stored: string) {
  const entry = openIdempotencyEntry(idempotency.idempotencyKey, idempotency.entryId, stored)
  if (entry.fingerprint !== idempotency.fingerprint) {
    throw new InvalidRequestError('this Idempotency-Key was sent with another request; use a new one for a new rotation')
  }
  const found = await ctx.store.findByDigest(digestSecret(entry.secret), ctx.deadline(request))
  const { namespace, apikey } = request.params
  if (found.key === null || found.key.apiKey.metadata.namespace !== namespace || found.key.apiKey.metadata.name !== apikey) {
    throw new ReplayedKeyGoneError('the secret made by the rotation with this Idempotency-Key no longer works (the apikey was rotated again or deleted since); read the apikey and rotate it with a new Idempotency-Key')
  }
  await ctx.ensureVisible(request, namespace, found.key.apiKey)
  request.log.info({ idempotency: { replayed: `${namespace}/${apikey}` } }, 'apikey rotate replayed')
  return sendRotated(reply.header('idempotent-replayed', 'true'), found.key, entry.secret)
}

export function rotateHandler (ctx: RouteContext) {
  const { store, settings } = ctx
  return async (request: RotateRequest, reply: FastifyReply) => {
    ctx.countWrite(request, reply)
    const { namespace, apikey } = request.params
    const caller = callerOf(request)
    const graceSeconds = request.body.grace_seconds ?? 0
    const ifMatch = request.headers['if-match']
    // A retry of a rotation that was made answers that rotation.
    const idempotency = idempotencyOf(request)
    if (idempotency !== undefined) {
      const stored = await store.getIdempotencyEntry(idempotency.entryId, ctx.deadline(request))
      if (stored !== null) return await replay(ctx, request, reply, idempotency, stored)
    }
    const { secret, digest } = prepareForRotate(settings.keyPrefix)
    const writer = ctx.writer(request)
    let done
    try {
      done = await store.rotate(namespace, apikey, async (current) => {
        // Visibility first, so that neither If-Match nor the rules reveal another user's key.
        await ctx.ensureVisible(request, namespace, current.apiKey)
        if (ifMatch !== undefined && !ifMatches(ifMatch, current.revision)) throw new VersionMismatchError()
        if (!await ctx.allowed(request, 'rotate', namespace, current.apiKey)) {
          throw new PermissionDeniedError(`${caller.username} may not rotate this key`)
        }
        validateRotate(writer.caller(), current.apiKey)
        return rotated(current.apiKey)
      }, digest, {
        graceSeconds,
        idempotency: idempotency && {
          entryId: idempotency.entryId,
          entry: sealIdempotencyEntry(idempotency.idempotencyKey, idempotency.entryId, { namespace, name: apikey, fingerprint: idempotency.fingerprint, secret })
        },
        // A key rotating a key: only while it still authenticates as verified (revoke-all,
        // disabling, rotating or deleting it wins the race), and never past its lifetime as it is then.
        minter: writer.minter
      }, ctx.deadline(request))
    } catch (err) {
      // A request with the same Idempotency-Key won the race: answer its rotation.
      if (!(err instanceof IdempotencyEntryExistsError) || idempotency === undefined) throw err
      return await replay(ctx, request, reply, idempotency, err.entry)
    }
    ctx.audit(request, 'rotate', { namespace, name: apikey, username: done.apiKey.username, grace_seconds: graceSeconds })
    return sendRotated(reply, done, secret)
  }
}
