import type { FastifySchemaCompiler } from 'fastify'
import type { TSchema } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { firstProblem } from '../keys/validation.js'
import { InvalidArgumentError } from './errors.js'

/**
 * Validates requests with the TypeBox schemas themselves. Fastify's default Ajv removes unknown
 * properties instead of refusing them and coerces types; the contract wants a 400 that names the
 * unknown field, and messages that never echo a value (it might be a secret).
 */
export const typeBoxValidatorCompiler: FastifySchemaCompiler<TSchema> = ({ schema, httpPart }) => {
  const check = TypeCompiler.Compile(schema)
  const part = httpPart ?? 'body'
  return (value: unknown) => {
    const problem = firstProblem(check, value, part)
    return problem === null ? { value } : { error: new InvalidArgumentError(problem) }
  }
}
