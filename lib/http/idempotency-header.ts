import { checkIdempotencyKey } from '../keys/idempotency.js'
import { InvalidRequestError } from '../keys/errors.js'

/**
 * The Idempotency-Key header's value, or undefined when there is none. The draft writes it as a
 * structured-field string (`"8e03978e-..."`); a bare token is accepted as well. Anything else is a 400.
 */
export function parseIdempotencyKey (header: string | string[] | undefined): string | undefined {
  if (header === undefined) return undefined
  if (Array.isArray(header)) throw new InvalidRequestError('send one Idempotency-Key header')
  return checkIdempotencyKey(header.length >= 2 && header.startsWith('"') && header.endsWith('"') ? header.slice(1, -1) : header)
}
