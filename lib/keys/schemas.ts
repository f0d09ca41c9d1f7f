import { Type, type Static, type TSchema } from '@sinclair/typebox'

/** Names of namespaces and apikeys. */
export const NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'

const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()])
const Closed = { additionalProperties: false } as const

export const Name = Type.String({ pattern: NAME_PATTERN, maxLength: 63 })
export const Username = Type.String({ minLength: 1, maxLength: 256, description: 'the user the key acts as' })
/** Any key: Type.String()'s default key pattern `^(.*)$` skips keys holding a line terminator. */
const AnyKey = Type.String({ pattern: '^[\\s\\S]*$' })
export const StringMap = Type.Record(AnyKey, Type.String())

/** An API key as every GET, list and PATCH answers it. It never holds the secret. */
export const ApiKey = Type.Object({
  metadata: Type.Object({
    name: Type.String({ description: 'the key ID, a UUID made by the server' }),
    namespace: Type.String(),
    labels: Type.Optional(StringMap),
    annotations: Type.Optional(StringMap),
    created_by: Type.String()
  }, Closed),
  username: Username,
  created_at: Type.Integer({ description: 'Unix seconds' }),
  url: Type.Optional(Type.String()),
  sha512: Type.Optional(Type.String()),
  filters: Type.Optional(Nullable(StringMap)),
  headers: Type.Optional(Nullable(StringMap)),
  expires_at: Type.Optional(Type.Integer({ description: 'Unix seconds; from then on the key no longer authenticates, and etcd removes it' })),
  rotated_at: Type.Optional(Type.Integer({ description: 'Unix seconds: when the key last got a new secret (set by the server)' })),
  disabled: Type.Optional(Type.Boolean({ description: 'true: the key does not authenticate until this is false or removed; it is still listed, read, patched and deleted' })),
  last_used_at: Type.Optional(Type.Integer({ description: 'Unix seconds, set by the server: when the key last authenticated (written at most once a minute per server); absent until first use' }))
}, { ...Closed })
export type ApiKey = Static<typeof ApiKey>

/** The answer to a POST: the key and, this once, its secret. */
export const CreatedApiKey = Type.Object({
  ...ApiKey.properties,
  key: Type.String({ description: 'the secret; shown only in this answer' })
}, { ...Closed })
export type CreatedApiKey = Static<typeof CreatedApiKey>

/**
 * A POST body. The server sets the name and the creation fields, so in a body they are ignored;
 * `key` is never accepted (it is an unknown field).
 */
export const CreateApiKeyBody = Type.Object({
  metadata: Type.Optional(Type.Object({
    name: Type.Optional(Type.String({ description: 'ignored: the server makes the name' })),
    namespace: Type.Optional(Type.String({ description: 'must equal the namespace of the URL' })),
    labels: Type.Optional(StringMap),
    annotations: Type.Optional(StringMap),
    created_by: Type.Optional(Type.String({ description: 'ignored' }))
  }, Closed)),
  username: Type.Optional(Username),
  created_at: Type.Optional(Type.Integer({ description: 'ignored' })),
  url: Type.Optional(Type.String()),
  sha512: Type.Optional(Type.String()),
  filters: Type.Optional(Nullable(StringMap)),
  headers: Type.Optional(Nullable(StringMap)),
  expires_at: Type.Optional(Type.Integer({ description: 'Unix seconds, in the future; absent: the key never expires' })),
  rotated_at: Type.Optional(Type.Integer({ description: 'ignored' })),
  disabled: Type.Optional(Type.Boolean({ description: 'true: the key is made switched off (it does not authenticate)' })),
  last_used_at: Type.Optional(Type.Integer({ description: 'ignored: the server sets it' }))
}, { ...Closed })
export type CreateApiKeyBody = Static<typeof CreateApiKeyBody>

const PatchStringMap = Type.Record(AnyKey, Nullable(Type.String()))

/**
 * A PATCH body: a JSON merge patch (RFC 7396) of an ApiKey, where `null` removes a field. Immutable
 * fields may appear only with their current value; the patched key is checked against `ApiKey`.
 */
export const PatchApiKeyBody = Type.Object({
  metadata: Type.Optional(Nullable(Type.Object({
    name: Type.Optional(Nullable(Type.String())),
    namespace: Type.Optional(Nullable(Type.String())),
    labels: Type.Optional(Nullable(PatchStringMap)),
    annotations: Type.Optional(Nullable(PatchStringMap)),
    created_by: Type.Optional(Nullable(Type.String()))
  }, Closed))),
  username: Type.Optional(Nullable(Username)),
  created_at: Type.Optional(Nullable(Type.Integer())),
  url: Type.Optional(Nullable(Type.String())),
  sha512: Type.Optional(Nullable(Type.String())),
  filters: Type.Optional(Nullable(PatchStringMap)),
  headers: Type.Optional(Nullable(PatchStringMap)),
  expires_at: Type.Optional(Nullable(Type.Integer({ description: 'Unix seconds, in the future; null: never expires' }))),
  rotated_at: Type.Optional(Nullable(Type.Integer({ description: 'set by the server: may only repeat the current value' }))),
  disabled: Type.Optional(Nullable(Type.Boolean({ description: 'true switches the key off, false or null on again' }))),
  last_used_at: Type.Optional(Nullable(Type.Integer({ description: 'set by the server: may only repeat the current value' })))
}, { ...Closed })
export type PatchApiKeyBody = Static<typeof PatchApiKeyBody>

/** The longest grace a rotation gives the old secret: a week. */
export const MAX_GRACE_SECONDS = 604800

/** A rotation's body (optional: none is `{}`). */
export const RotateApiKeyBody = Type.Object({
  grace_seconds: Type.Optional(Type.Integer({
    minimum: 0,
    maximum: MAX_GRACE_SECONDS,
    description: 'how many seconds the old secret keeps working (0 to 604800, default 0: it stops at once)'
  }))
}, { ...Closed })
export type RotateApiKeyBody = Static<typeof RotateApiKeyBody>

export const NamespaceParams = Type.Object({ namespace: Name }, Closed)
export const ApiKeyParams = Type.Object({ namespace: Name, apikey: Name }, Closed)

export const ListQuery = Type.Object({
  limit: Type.Optional(Type.String({
    pattern: '^[0-9]*$',
    description: 'page size: a positive integer, at most 1000; 0, empty or absent means all'
  })),
  continue: Type.Optional(Type.String({ description: 'the Sensu-Continue header of the previous page' })),
  labelSelector: Type.Optional(Type.String({ description: 'keeps the keys whose labels match, e.g. `team == ops && region in [eu, us]`' })),
  fieldSelector: Type.Optional(Type.String({ description: 'keeps the keys whose fields match, e.g. `api_key.username == alice`' }))
}, Closed)

export const RevokeAllQuery = Type.Object({ username: Username }, Closed)
/** The query of a route that takes none: any parameter is a 400 that names it. */
export const NoQuery = Type.Object({}, Closed)
export const RevokeAllAnswer = Type.Object({
  username: Type.String(),
  deleted: Type.Integer({ description: 'how many keys were revoked' })
})

/** Every error answer, in the shape Sensu Go uses. */
export const ErrorBody = Type.Object({
  message: Type.String(),
  code: Type.Integer({ description: "Sensu's error code" })
}, {})
export type ErrorBody = Static<typeof ErrorBody>
