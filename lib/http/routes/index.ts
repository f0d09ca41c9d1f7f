// The routes: a table of thin handlers (parse, key rule, store, reply), in their own encapsulated
// context so that its parsers, hooks and handlers stay here.
import type { FastifyInstance, FastifyReply, FastifyRequest, FastifySchema, HTTPMethods, RouteHandlerMethod } from 'fastify'
// Types only: `schema.hide` and `tags`, read by @fastify/swagger where a host registers it.
import type {} from '@fastify/swagger'
import { Type } from '@sinclair/typebox'
import {
  ApiKey, ApiKeyParams, CreateApiKeyBody, CreatedApiKey, ErrorBody, ListQuery, NamespaceParams, NoQuery, PatchApiKeyBody,
  RevokeAllAnswer, RevokeAllQuery
} from '../../keys/schemas.js'
import { InvalidArgumentError, MethodNotAllowedError, replyErrorsInSensuShape, sendRouteNotFound } from '../errors.js'
import { typeBoxValidatorCompiler } from '../validator.js'
import { useJsonBodies } from '../content-types.js'
import { useAuthentication } from '../authentication-hook.js'
import { routeContext, type RouteContext, type RoutesOptions } from './context.js'
import { getHandler, listHandler } from './read.js'
import { createHandler } from './create.js'
import { deleteHandler, patchHandler, revokeAllHandler } from './change.js'

export type { RoutesOptions, RouteSettings } from './context.js'
export { MAX_LIMIT } from './read.js'

const errorResponses = { '4xx': ErrorBody, '5xx': ErrorBody }

interface Route {
  /** 'ALL': every method Fastify supports (app.all). */
  method: HTTPMethods | HTTPMethods[] | 'ALL'
  url: string
  schema: FastifySchema & { hide?: boolean, tags?: string[], summary?: string }
  preValidation?: (request: FastifyRequest) => Promise<void>
  handler: (ctx: RouteContext) => unknown
}

const methodNotAllowed = (allow: string) => () => async (request: FastifyRequest, reply: FastifyReply) => {
  reply.header('allow', allow)
  throw new MethodNotAllowedError(request.method)
}

/** The routes of one spelling of the collection: `apikey`, or Sensu Go's plural, which answers the same and stays out of the OpenAPI document. */
function itemRoutes (segment: 'apikey' | 'apikeys'): Route[] {
  const collection = `/namespaces/:namespace/${segment}`
  const item = `${collection}/:apikey`
  const shown = { hide: segment !== 'apikey', tags: ['apikeys'] }
  return [
    {
      method: 'GET',
      url: collection,
      schema: { ...shown, summary: 'List the API keys of a namespace', params: NamespaceParams, querystring: ListQuery, response: { 200: Type.Array(ApiKey), ...errorResponses } },
      handler: listHandler
    },
    {
      method: 'POST',
      url: collection,
      schema: {
        ...shown,
        summary: 'Create an API key; the answer holds its secret, shown this once',
        params: NamespaceParams,
        querystring: NoQuery,
        headers: Type.Object({
          'idempotency-key': Type.Optional(Type.String({
            description: 'Makes a retry safe: the same request with the same value within 24 hours answers the key it created, secret included, instead of creating another'
          }))
        }),
        body: Type.Optional(CreateApiKeyBody),
        response: { 201: CreatedApiKey, ...errorResponses }
      },
      // An empty body creates a key with defaults, as if it were {}.
      preValidation: async (request) => { if (request.body === undefined) request.body = {} },
      handler: createHandler
    },
    {
      method: 'GET',
      url: item,
      schema: { ...shown, summary: 'Read an API key', params: ApiKeyParams, querystring: NoQuery, response: { 200: ApiKey, ...errorResponses } },
      handler: getHandler
    },
    {
      method: 'PATCH',
      url: item,
      schema: { ...shown, summary: 'Update an API key with a JSON merge patch (RFC 7396)', params: ApiKeyParams, querystring: NoQuery, body: PatchApiKeyBody, response: { 200: ApiKey, ...errorResponses } },
      preValidation: async (request) => {
        if (request.body === undefined) throw new InvalidArgumentError('PATCH needs a JSON merge patch body')
      },
      handler: patchHandler
    },
    {
      method: 'DELETE',
      url: item,
      schema: { ...shown, summary: 'Revoke an API key', params: ApiKeyParams, querystring: NoQuery, response: { 204: Type.Null({ description: 'revoked' }), ...errorResponses } },
      handler: deleteHandler
    },
    // Other methods on these paths, and deeper paths (an unencoded `a/b`), answer in JSON too.
    { method: ['PUT', 'PATCH', 'DELETE'], url: collection, schema: { hide: true }, handler: methodNotAllowed('GET, HEAD, POST') },
    { method: ['PUT', 'POST'], url: item, schema: { hide: true }, handler: methodNotAllowed('GET, HEAD, PATCH, DELETE') },
    { method: 'ALL', url: `${item}/*`, schema: { hide: true }, handler: () => sendRouteNotFound }
  ]
}

/** Every route of the plugin. */
const ROUTES: Route[] = [
  ...itemRoutes('apikey'),
  ...itemRoutes('apikeys'),
  {
    method: 'GET',
    url: '/apikeys',
    schema: { tags: ['apikeys'], summary: 'List the API keys of every namespace', querystring: ListQuery, response: { 200: Type.Array(ApiKey), ...errorResponses } },
    handler: listHandler
  },
  {
    method: 'DELETE',
    url: '/apikeys',
    schema: { tags: ['apikeys'], summary: 'Revoke every API key of a username, in all namespaces (admins only)', querystring: RevokeAllQuery, response: { 200: RevokeAllAnswer, ...errorResponses } },
    handler: revokeAllHandler
  },
  { method: ['PUT', 'POST', 'PATCH'], url: '/apikeys', schema: { hide: true }, handler: methodNotAllowed('GET, HEAD, DELETE') }
]

export async function apiKeyRoutes (app: FastifyInstance, options: RoutesOptions) {
  const { settings } = options
  app.setValidatorCompiler(typeBoxValidatorCompiler)
  replyErrorsInSensuShape(app)
  useJsonBodies(app, settings.bodyLimit)
  await useAuthentication(app, settings)
  const ctx = routeContext(options, app.prefix)
  for (const { method, url, schema, preValidation, handler } of ROUTES) {
    app.route({ method: method === 'ALL' ? app.supportedMethods as HTTPMethods[] : method, url, schema, ...(preValidation && { preValidation }), handler: handler(ctx) as RouteHandlerMethod })
  }
}
