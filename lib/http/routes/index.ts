// The routes: a table of thin handlers (parse, key rule, store, reply), in their own encapsulated
// context so that its parsers, hooks and handlers stay here.
import type { FastifyInstance, FastifyReply, FastifyRequest, FastifySchema, HTTPMethods, RouteHandlerMethod } from 'fastify'
// Types only: `schema.hide` and `tags`, read by @fastify/swagger where a host registers it.
import type {} from '@fastify/swagger'
import { Type } from '@sinclair/typebox'
import {
  ApiKey, ApiKeyParams, CreateApiKeyBody, CreatedApiKey, ListQuery, NamespaceParams, NoQuery, PatchApiKeyBody,
  RevokeAllAnswer, RevokeAllQuery, RotateApiKeyBody
} from '../../keys/schemas.js'
import { InvalidArgumentError, MethodNotAllowedError, replyErrorsInSensuShape, sendRouteNotFound } from '../errors.js'
import { addToDocument, documentedResponses, SECURITY, type ErrorStatus, type Success } from '../openapi.js'
import { examples } from '../openapi-examples.js'
import { typeBoxValidatorCompiler } from '../validator.js'
import { useJsonBodies } from '../content-types.js'
import { useAuthentication } from '../authentication-hook.js'
import { routeContext, type RouteContext, type RoutesOptions } from './context.js'
import { getHandler, listHandler } from './read.js'
import { createHandler } from './create.js'
import { deleteHandler, patchHandler, revokeAllHandler } from './change.js'
import { rotateHandler } from './rotate.js'

export type { RoutesOptions, RouteSettings } from './context.js'
export { MAX_LIMIT } from './read.js'

interface Route {
  /** 'ALL': every method Fastify supports (app.all). */
  method: HTTPMethods | HTTPMethods[] | 'ALL'
  url: string
  schema: FastifySchema & { hide?: boolean, tags?: string[], summary?: string, operationId?: string }
  /** What the route answers: its success, and the error statuses it adds to COMMON_ERRORS (lib/http/openapi.ts). */
  answers?: { success: Success, errors: ErrorStatus[] }
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
      schema: { ...shown, operationId: 'listApiKeys', summary: 'List the API keys of a namespace', params: NamespaceParams, querystring: ListQuery },
      answers: { errors: [410], success: { status: 200, description: 'The keys (a page of them with `limit`)', schema: Type.Array(ApiKey), headers: ['Sensu-Continue'], examples: examples.list } },
      handler: listHandler
    },
    {
      method: 'POST',
      url: collection,
      schema: {
        ...shown,
        operationId: 'createApiKey',
        summary: 'Create an API key; the answer holds its secret, shown this once',
        params: NamespaceParams,
        querystring: NoQuery,
        headers: Type.Object({
          'idempotency-key': Type.Optional(Type.String({
            description: 'Makes a retry safe: the same request with the same value within 24 hours answers the key it created, secret included, instead of creating another'
          }))
        }),
        body: Type.Optional({ ...CreateApiKeyBody, 'x-examples': examples.createRequest })
      },
      answers: { errors: [403, 409, 413, 415], success: { status: 201, description: 'Created; `key` is the secret', schema: CreatedApiKey, headers: ['Location', 'ETag', 'Idempotent-Replayed'], examples: examples.created } },
      // An empty body creates a key with defaults, as if it were {}.
      preValidation: async (request) => { if (request.body === undefined) request.body = {} },
      handler: createHandler
    },
    {
      method: 'GET',
      url: item,
      schema: { ...shown, operationId: 'getApiKey', summary: 'Read an API key', params: ApiKeyParams, querystring: NoQuery },
      answers: { errors: [404], success: { status: 200, description: 'The key', schema: ApiKey, headers: ['ETag'], examples: examples.get } },
      handler: getHandler
    },
    {
      method: 'PATCH',
      url: item,
      schema: {
        ...shown,
        operationId: 'patchApiKey',
        summary: 'Update an API key with a JSON merge patch (RFC 7396)',
        params: ApiKeyParams,
        querystring: NoQuery,
        headers: Type.Object({
          'if-match': Type.Optional(Type.String({ description: 'Change the key only if its ETag is one of these (or `*`); otherwise a 412' }))
        }),
        body: { ...PatchApiKeyBody, 'x-examples': examples.patchRequest },
        consumes: ['application/merge-patch+json', 'application/json']
      },
      answers: { errors: [403, 404, 412, 413, 415], success: { status: 200, description: 'The key as updated', schema: ApiKey, headers: ['ETag'], examples: examples.get } },
      preValidation: async (request) => {
        if (request.body === undefined) throw new InvalidArgumentError('PATCH needs a JSON merge patch body')
      },
      handler: patchHandler
    },
    {
      method: 'DELETE',
      url: item,
      schema: { ...shown, operationId: 'deleteApiKey', summary: 'Revoke an API key', params: ApiKeyParams, querystring: NoQuery },
      answers: { errors: [403, 404, 413, 415], success: { status: 204, description: 'Revoked' } },
      handler: deleteHandler
    },
    {
      method: 'POST',
      url: `${item}/rotate`,
      schema: {
        ...shown,
        operationId: 'rotateApiKey',
        summary: 'Give an API key a new secret, shown this once; the old one works for `grace_seconds` more',
        params: ApiKeyParams,
        querystring: NoQuery,
        headers: Type.Object({
          'if-match': Type.Optional(Type.String({ description: 'Rotate the key only if its ETag is one of these (or `*`); otherwise a 412' })),
          'idempotency-key': Type.Optional(Type.String({
            description: 'Makes a retry safe: the same request with the same value within 24 hours answers the secret it made, instead of rotating again'
          }))
        }),
        body: Type.Optional({ ...RotateApiKeyBody, 'x-examples': examples.rotateRequest })
      },
      answers: { errors: [403, 404, 409, 412, 413, 415], success: { status: 200, description: 'Rotated; `key` is the new secret', schema: CreatedApiKey, headers: ['ETag', 'Idempotent-Replayed'], examples: examples.rotated } },
      // An empty body rotates with no grace, as if it were {}.
      preValidation: async (request) => { if (request.body === undefined) request.body = {} },
      handler: rotateHandler
    },
    // Other methods on these paths, and deeper paths (an unencoded `a/b`), answer in JSON too.
    { method: ['PUT', 'PATCH', 'DELETE'], url: collection, schema: { hide: true }, handler: methodNotAllowed('GET, HEAD, POST') },
    { method: ['PUT', 'POST'], url: item, schema: { hide: true }, handler: methodNotAllowed('GET, HEAD, PATCH, DELETE') },
    { method: ['GET', 'PUT', 'PATCH', 'DELETE'], url: `${item}/rotate`, schema: { hide: true }, handler: methodNotAllowed('POST') },
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
    schema: { tags: ['apikeys'], operationId: 'listApiKeysOfEveryNamespace', summary: 'List the API keys of every namespace', querystring: ListQuery },
    answers: { errors: [410], success: { status: 200, description: 'The keys of every namespace, in `<namespace>/<name>` order (a page of them with `limit`)', schema: Type.Array(ApiKey), headers: ['Sensu-Continue'], examples: examples.list } },
    handler: listHandler
  },
  {
    method: 'DELETE',
    url: '/apikeys',
    schema: { tags: ['apikeys'], operationId: 'revokeAllApiKeysOf', summary: 'Revoke every API key of a username, in all namespaces (admins only)', querystring: RevokeAllQuery },
    answers: { errors: [403, 413, 415], success: { status: 200, description: 'How many keys were revoked', schema: RevokeAllAnswer } },
    handler: revokeAllHandler
  },
  { method: ['PUT', 'POST', 'PATCH'], url: '/apikeys', schema: { hide: true }, handler: methodNotAllowed('GET, HEAD, DELETE') }
]

/** A route's schema with what it answers, and its security, for Fastify's serializer and for the OpenAPI document. */
function documented ({ schema, answers }: Route): { schema: FastifySchema, config?: object } {
  if (answers === undefined) return { schema }
  return {
    schema: { ...schema, security: SECURITY, response: documentedResponses(answers.errors, answers.success) },
    config: { swaggerTransform: addToDocument }
  }
}

export async function apiKeyRoutes (app: FastifyInstance, options: RoutesOptions) {
  const { settings } = options
  app.setValidatorCompiler(typeBoxValidatorCompiler)
  replyErrorsInSensuShape(app)
  useJsonBodies(app, settings.bodyLimit)
  await useAuthentication(app, settings)
  const ctx = routeContext(options, app.prefix)
  for (const route of ROUTES) {
    const { method, url, preValidation, handler } = route
    app.route({ method: method === 'ALL' ? app.supportedMethods as HTTPMethods[] : method, url, ...documented(route), ...(preValidation && { preValidation }), handler: handler(ctx) as RouteHandlerMethod })
  }
}
