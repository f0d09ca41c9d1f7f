// GET of a namespace or of every namespace (a page, or the whole of it as a stream) and of one key.
import { Readable } from 'node:stream'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { ApiKey } from '../../keys/schemas.js'
import { selectorsOf } from '../../keys/selectors.js'
import { KeyNotFoundError } from '../../store/errors.js'
import { callerOf, etagOf, type RouteContext } from './context.js'

/** Pages are at most this long; a larger `limit` is read as this. */
export const MAX_LIMIT = 1000

/** The JSON array of a streamed list, one serialised key at a time. */
async function * jsonArray (apiKeys: AsyncIterable<ApiKey>, serialize: (apiKey: ApiKey) => string): AsyncGenerator<string> {
  let separator = '['
  for await (const apiKey of apiKeys) {
    yield separator + serialize(apiKey)
    separator = ','
  }
  yield separator === '[' ? '[]' : ']'
}

type ListRequest = FastifyRequest<{
  Params: { namespace?: string }
  Querystring: { limit?: string, continue?: string, labelSelector?: string, fieldSelector?: string }
}>

/** GET of a namespace, or of every namespace (`/apikeys`, no namespace parameter). */
export function listHandler (ctx: RouteContext) {
  return async (request: ListRequest, reply: FastifyReply) => {
    const { namespace } = request.params
    const limit = Math.min(Number(request.query.limit ?? 0), MAX_LIMIT)
    const continueToken = request.query.continue || undefined
    const selected = selectorsOf(request.query)
    const authorized = ctx.defaultPolicy && callerOf(request).admin
      ? undefined
      : (apiKey: ApiKey) => ctx.allowed(request, 'list', apiKey.metadata.namespace, apiKey)
    // Selectors and authorization filter while paging; a selector first, as it costs nothing.
    const filter = selected === undefined
      ? authorized
      : (apiKey: ApiKey) => selected(apiKey) && (authorized === undefined || authorized(apiKey))
    const deadline = ctx.deadline(request)
    if (limit > 0) {
      const page = await ctx.store.listPage(namespace, { limit, continueToken, filter, deadline })
      if (page.continueToken) reply.header('sensu-continue', page.continueToken)
      return page.items
    }
    const apiKeys = await ctx.store.listAll(namespace, { continueToken, filter, batchTimeout: ctx.settings.requestTimeout, deadline })
    const serialize = reply.compileSerializationSchema(ApiKey) as (apiKey: ApiKey) => string
    // A stream is sent as it is: each key went through the response schema's serializer above.
    const stream = Readable.from(jsonArray(apiKeys, serialize))
    return reply.type('application/json; charset=utf-8').send(stream as unknown as ApiKey[])
  }
}

type ItemRequest = FastifyRequest<{ Params: { namespace: string, apikey: string } }>

export function getHandler (ctx: RouteContext) {
  return async (request: ItemRequest, reply: FastifyReply) => {
    const { namespace, apikey } = request.params
    const stored = await ctx.store.get(namespace, apikey, ctx.deadline(request))
    if (stored === null) throw new KeyNotFoundError(`apikey ${apikey} not found`)
    const visible = ctx.ensureVisible(request, namespace, stored.apiKey)
    if (visible !== undefined) await visible
    reply.header('etag', etagOf(stored.revision))
    return stored.apiKey
  }
}
