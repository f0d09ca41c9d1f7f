// PATCH and DELETE of one key, and DELETE of every key of a username (revoke-all).
import type { FastifyReply, FastifyRequest } from 'fastify'
import { prepareForUpdate, validateUpdate } from '../../keys/strategy.js'
import { PermissionDeniedError } from '../../keys/errors.js'
import { VersionMismatchError } from '../../store/errors.js'
import { callerOf, etagOf, type RouteContext } from './context.js'

/** Does `If-Match` (RFC 9110, strong comparison) match this revision? */
export function ifMatches (header: string, revision: number): boolean {
  return header.split(',').some(tag => {
    const t = tag.trim()
    return t === '*' || t === etagOf(revision)
  })
}

type ItemRequest = FastifyRequest<{ Params: { namespace: string, apikey: string } }>

export function patchHandler (ctx: RouteContext) {
  return async (request: ItemRequest, reply: FastifyReply) => {
    ctx.countWrite(request, reply)
    const { namespace, apikey } = request.params
    const ifMatch = request.headers['if-match']
    const caller = callerOf(request)
    // Made with an API key: only while that key still authenticates, and bounded by its lifetime as it is then.
    const writer = ctx.writer(request)
    const updated = await ctx.store.update(namespace, apikey, async (current) => {
      // Visibility first, so that neither If-Match nor validation reveals another user's key.
      await ctx.ensureVisible(request, namespace, current.apiKey)
      if (ifMatch !== undefined && !ifMatches(ifMatch, current.revision)) throw new VersionMismatchError()
      const after = prepareForUpdate(current.apiKey, request.body, { maxKeyBytes: ctx.store.maxKeyBytes })
      if (!await ctx.allowed(request, 'patch', namespace, after)) {
        throw new PermissionDeniedError(`${caller.username} may not make this change`)
      }
      validateUpdate(writer.caller(), current.apiKey, after)
      return after
    }, ctx.deadline(request), writer.minter)
    ctx.audit(request, 'patch', { namespace, name: apikey, username: updated.apiKey.username, fields: Object.keys(request.body as object) })
    reply.header('etag', etagOf(updated.revision))
    return updated.apiKey
  }
}

export function deleteHandler (ctx: RouteContext) {
  return async (request: ItemRequest, reply: FastifyReply) => {
    ctx.countWrite(request, reply)
    const { namespace, apikey } = request.params
    let username = ''
    await ctx.store.delete(namespace, apikey, async (current) => {
      await ctx.ensureVisible(request, namespace, current.apiKey)
      if (!await ctx.allowed(request, 'delete', namespace, current.apiKey)) {
        throw new PermissionDeniedError(`${callerOf(request).username} may not delete this key`)
      }
      username = current.apiKey.username
    }, ctx.deadline(request), ctx.writer(request).minter)
    ctx.audit(request, 'delete', { namespace, name: apikey, username })
    return reply.code(204).send(null)
  }
}

/**
 * Containment of a leaked key: a key can mint more keys for its own user, so an admin revokes
 * every key of that user, in all namespaces, at once.
 */
export function revokeAllHandler (ctx: RouteContext) {
  return async (request: FastifyRequest<{ Querystring: { username: string } }>) => {
    const { username } = request.query
    if (!callerOf(request).admin) throw new PermissionDeniedError('only an admin may revoke every key of a user')
    const deleted = await ctx.store.revokeAllOf(username, { deadline: ctx.deadline(request), batchTimeout: ctx.settings.requestTimeout })
    ctx.audit(request, 'revoke-all', { username, deleted })
    return { username, deleted }
  }
}
