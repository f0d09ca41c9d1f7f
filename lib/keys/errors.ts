// The key rules' refusals. Plain errors: lib/http/errors.ts is the one place that gives them a status.

/** The request breaks a rule of the resource (a field, a header value): a 400. */
export class InvalidRequestError extends Error {}

/** The caller may not do this (authorization, or its own key's lifetime): a 403. */
export class PermissionDeniedError extends Error {}

/** The key would be larger than `limit` bytes of JSON: a 413. */
export class ApiKeyTooLargeError extends Error {
  constructor (readonly limit: number) {
    super(`the apikey would be larger than ${limit} bytes`)
  }
}

/** The key an Idempotency-Key created was deleted since: a 409. */
export class ReplayedKeyGoneError extends Error {}
