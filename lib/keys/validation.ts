// A TypeBox error as a client-facing message that names the field and never echoes a value.
import type { TSchema } from '@sinclair/typebox'
import type { TypeCheck } from '@sinclair/typebox/compiler'
import { ValueErrorType, type ValueError } from '@sinclair/typebox/errors'
import { NAME_PATTERN } from './schemas.js'

/** `/metadata/labels/a~1b` → `metadata.labels.a/b`, cut short so a message stays a message. */
function fieldName (path: string): string {
  const name = path.slice(1).split('/').map(part => part.replace(/~1/g, '/').replace(/~0/g, '~')).join('.')
  return name.length > 80 ? `${name.slice(0, 77)}...` : name
}

/**
 * A union (a nullable field) reports only that no branch matched. The branch whose first error
 * lies deepest is the one the client meant (`{ labels: { a: 1 } }` meant the object, not null).
 */
function innermost (error: ValueError): ValueError {
  if (error.type !== ValueErrorType.Union) return error
  let best = error
  for (const branch of error.errors) {
    const first = branch.First()
    if (first && first.path.length > best.path.length) best = first
  }
  return best === error ? error : innermost(best)
}

function describe (union: ValueError, part: string, allowedQuery: string): string {
  const error = innermost(union)
  const field = fieldName(error.path)
  if (part === 'params') return `invalid ${field} name: it must match ${NAME_PATTERN}`
  if (part === 'querystring') {
    if (error.type === ValueErrorType.ObjectAdditionalProperties) {
      return `unknown query parameter "${field}": this route takes ${allowedQuery === '' ? 'no query parameters' : allowedQuery}`
    }
    if (field === 'limit') return 'limit must be a non-negative integer'
    return error.type === ValueErrorType.ObjectRequiredProperty
      ? `query parameter ${field} is required`
      : `invalid query parameter ${field}`
  }
  if (field === '') return `${part} must be a JSON object`
  switch (error.type) {
    case ValueErrorType.ObjectAdditionalProperties:
      return field === 'key'
        ? 'field "key" is not accepted: the server makes the secret'
        : `unknown field "${field}"`
    case ValueErrorType.ObjectRequiredProperty:
      return `field "${field}" is required`
    case ValueErrorType.Union:
      return `field "${field}" has the wrong type`
    default:
      return `field "${field}": ${error.message.charAt(0).toLowerCase()}${error.message.slice(1)}`
  }
}

/** The query parameters a querystring schema names, for the message of an unknown one: `limit, continue`. */
function queryNames (schema: TSchema): string {
  return Object.keys((schema as { properties?: object }).properties ?? {}).join(', ')
}

/** The first problem of `value` against a compiled schema, as a client-facing message; null if none. */
export function firstProblem (check: TypeCheck<TSchema>, value: unknown, part: string): string | null {
  if (check.Check(value)) return null
  const error = check.Errors(value).First()
  return error ? describe(error, part, queryNames(check.Schema())) : `${part} is invalid`
}
