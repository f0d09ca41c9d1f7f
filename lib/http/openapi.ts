// What the OpenAPI document says of each route, built here once: every status a route answers
// (explicitly, never a 4XX range) with its body and headers, the security schemes, the servers.
// A route in the table (routes/index.ts) states its success and its error statuses; the rest follows.
import type { FastifySchema } from 'fastify'
import { Type, type TSchema } from '@sinclair/typebox'
import { ErrorBody } from '../keys/schemas.js'

/**
 * The response headers the routes send, as the document describes them (@fastify/swagger makes
 * each a header object: the description beside the schema). Those sent only sometimes say when.
 */
const RESPONSE_HEADERS = {
  Location: Type.String({ description: 'where the new key lives: <basePath>/namespaces/<namespace>/apikey/<name>' }),
  ETag: Type.String({ pattern: '^"[0-9]+"$', description: 'the key\'s version (its etcd revision, quoted); send it as If-Match to change only this version' }),
  'Sensu-Continue': Type.String({ description: 'only when more keys follow: pass it as `continue` to read the next page' }),
  'Retry-After': Type.String({ pattern: '^[0-9]+$', description: 'seconds to wait before trying again' }),
  'Idempotent-Replayed': Type.Unsafe<'true'>({ type: 'string', enum: ['true'], description: 'only when this answers an earlier create made with the same Idempotency-Key' }),
  'WWW-Authenticate': Type.String({ description: 'the schemes accepted: `Bearer, Key`' })
}
/** Headers sent only sometimes, as their descriptions say. */
export const OCCASIONAL_HEADERS: ResponseHeader[] = ['Sensu-Continue', 'Idempotent-Replayed']
export type ResponseHeader = keyof typeof RESPONSE_HEADERS

/** Every error status a route may answer, what it means, and the headers it carries. */
const ERRORS = {
  400: { description: 'Bad request: a parameter, header or body breaks a rule; the message names it' },
  401: { description: 'No valid credentials (or the API key used was revoked meanwhile)', headers: ['WWW-Authenticate'] },
  403: { description: 'The caller may not do this' },
  404: { description: 'No such key, or one the caller may not see' },
  409: { description: 'Conflict: the key an Idempotency-Key created has been deleted since' },
  410: { description: 'The continue token has expired (etcd compacted its revision): restart the list without it' },
  412: { description: 'If-Match does not match the key\'s current ETag' },
  413: { description: 'The body, or the key it would make, is too large' },
  415: { description: 'The body is not JSON (PATCH also takes application/merge-patch+json)' },
  429: { description: 'Too many failed authentications from this address, or too many writes for this user', headers: ['Retry-After'] },
  500: { description: 'Internal error' },
  503: { description: 'etcd did not answer in time, or is out of space: retry later', headers: ['Retry-After'] }
} satisfies Record<number, { description: string, headers?: ResponseHeader[] }>
export type ErrorStatus = keyof typeof ERRORS

/** The statuses any route of the plugin may answer: bad input, no credentials, failed-authentication limit, etcd, a bug. */
export const COMMON_ERRORS: ErrorStatus[] = [400, 401, 429, 500, 503]

/** A route's answer when it succeeds. */
export interface Success {
  status: 200 | 201 | 204
  description: string
  /** Absent: no body (a 204). */
  schema?: TSchema
  headers?: ResponseHeader[]
  examples?: Record<string, { summary: string, value: unknown }>
}

function headersOf (names: ResponseHeader[] = []) {
  return names.length === 0 ? undefined : Object.fromEntries(names.map(name => [name, RESPONSE_HEADERS[name]]))
}

const json = (schema: TSchema, examples?: Success['examples']) =>
  ({ 'application/json': { schema, ...(examples && { examples }) } })

/**
 * A route's `schema.response`: its success, and each of `errors` (plus `common`: by default
 * COMMON_ERRORS, what a route of the plugin may always answer) with the error body
 * `{message, code}` and its headers. Fastify serializes with it; @fastify/swagger documents it.
 */
export function documentedResponses (errors: ErrorStatus[], success: Success, common = COMMON_ERRORS): NonNullable<FastifySchema['response']> {
  const statuses = [...new Set([...common, ...errors])].sort((a, b) => a - b)
  const headers = headersOf(success.headers)
  const responses: Record<string, unknown> = {
    [success.status]: success.schema === undefined
      ? { description: success.description, type: 'null', ...(headers && { headers }) }
      : { description: success.description, ...(headers && { headers }), content: json(success.schema, success.examples) }
  }
  for (const status of statuses) {
    const { description, headers: names } = ERRORS[status] as { description: string, headers?: ResponseHeader[] }
    responses[status] = { description, ...(names && { headers: headersOf(names) }), content: json(ErrorBody) }
  }
  return responses
}

/** The two ways to authenticate, as security schemes. */
export const SECURITY_SCHEMES = {
  bearerToken: { type: 'http', scheme: 'bearer', description: '`Authorization: Bearer <token>`: a token the server was given (the standalone server: the admin token)' },
  apiKey: { type: 'apiKey', in: 'header', name: 'Authorization', description: '`Authorization: Key <secret>`: an API key\'s secret' }
} as const

/** Each operation accepts either scheme. */
export const SECURITY: Array<Record<string, string[]>> = [{ bearerToken: [] }, { apiKey: [] }]

interface OpenapiObject {
  components?: { securitySchemes?: Record<string, unknown> }
  servers?: unknown[]
}

/**
 * A route's `config.swaggerTransform`: @fastify/swagger calls it with the document being built,
 * so a host's own document gains the security schemes the operations name, and, where it has
 * none, the one server OpenAPI means when `servers` is absent (this one, `/`).
 */
export function addToDocument ({ schema, url, openapiObject }: { schema: unknown, url: string, openapiObject: OpenapiObject }) {
  openapiObject.components ??= {}
  openapiObject.components.securitySchemes = { ...SECURITY_SCHEMES, ...openapiObject.components.securitySchemes }
  if (openapiObject.servers === undefined || openapiObject.servers.length === 0) openapiObject.servers = [{ url: '/', description: 'this server' }]
  return { schema, url }
}
