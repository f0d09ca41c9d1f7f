// The errors a client sees, and the one place that turns the store's and the key rules' errors
// into them: toHttpError. Every reply of an error goes through sendError.
import createError, { type FastifyErrorConstructor } from '@fastify/error'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { InvalidContinueTokenError } from '../store/continue-token.js'
import {
  CredentialRevokedError, EtcdNoSpaceError, EtcdUnavailableError, FutureRevisionError, KeyExistsError, KeyNotFoundError,
  RevisionCompactedError, RevokedUsernameError, VersionMismatchError
} from '../store/errors.js'
import { ApiKeyTooLargeError, InvalidRequestError, PermissionDeniedError, ReplayedKeyGoneError } from '../keys/errors.js'

// The errors a client sees. Each has a stable code and its HTTP status (listed in the README).
export const InvalidArgumentError = createError('FST_APIKEYS_INVALID_ARGUMENT', '%s', 400)
export const UnauthenticatedError = createError('FST_APIKEYS_UNAUTHENTICATED', 'valid credentials are required', 401)
export const ForbiddenError = createError('FST_APIKEYS_FORBIDDEN', 'permission denied: %s', 403)
export const NotFoundError = createError('FST_APIKEYS_NOT_FOUND', '%s', 404)
export const MethodNotAllowedError = createError('FST_APIKEYS_METHOD_NOT_ALLOWED', 'method %s is not allowed here', 405)
export const UnsupportedMediaTypeError = createError('FST_APIKEYS_UNSUPPORTED_MEDIA_TYPE', 'unsupported Content-Type; send %s', 415)
export const ConflictError = createError('FST_APIKEYS_ALREADY_EXISTS', '%s', 409)
export const KeyTooLargeError = createError('FST_APIKEYS_KEY_TOO_LARGE', 'the apikey would be larger than %s bytes', 413)
export const TooManyRequestsError = createError('FST_APIKEYS_TOO_MANY_REQUESTS',
  'too many failed authentications from this address; retry after %s seconds', 429)
export const WriteLimitError = createError('FST_APIKEYS_WRITE_LIMIT',
  'too many writes for user %s; retry after %s seconds', 429)
export const ContinueExpiredError = createError('FST_APIKEYS_CONTINUE_EXPIRED',
  'the continue token has expired: etcd compacted its revision; restart the list without it', 410)
export const PreconditionFailedError = createError('FST_APIKEYS_PRECONDITION_FAILED',
  'If-Match does not match the current ETag of the apikey', 412)
export const UnavailableError = createError('FST_APIKEYS_UNAVAILABLE', 'etcd did not answer in time; retry later', 503)
export const OutOfSpaceError = createError('FST_APIKEYS_ETCD_NO_SPACE',
  'etcd is out of space (NOSPACE alarm); writes are refused until an operator compacts, defragments and disarms it', 503)
export const InternalError = createError('FST_APIKEYS_INTERNAL', 'internal error', 500)

/** Every error code of this plugin, for the README and for hosts that match on them. */
export const errorCodes: FastifyErrorConstructor[] = [
  InvalidArgumentError, UnauthenticatedError, ForbiddenError, NotFoundError, MethodNotAllowedError,
  UnsupportedMediaTypeError, ConflictError, KeyTooLargeError, TooManyRequestsError, WriteLimitError, ContinueExpiredError, PreconditionFailedError, UnavailableError,
  OutOfSpaceError, InternalError
]

/** Seconds a client is asked to wait after a 503. */
export const RETRY_AFTER_SECONDS = 1

/** Sensu Go's error codes, by HTTP status. */
export function sensuCode (status: number): number {
  switch (status) {
    case 401: return 5
    case 403: return 4
    case 404: return 2
    case 409: return 3
    case 410: case 412: return 7
    case 429: return 9
    case 503: return 8
    default: return status >= 400 && status < 500 ? 1 : 0
  }
}

/**
 * Maps a store error or a key rule's refusal to the error the client sees. Errors that already carry a 4xx status (ours,
 * and Fastify's own: body too large, unsupported media type) keep it.
 */
export function toHttpError (err: unknown): Error & { statusCode: number } {
  if (err instanceof KeyNotFoundError) return new NotFoundError(err.message)
  if (err instanceof KeyExistsError) return new ConflictError(err.message)
  if (err instanceof VersionMismatchError) return new PreconditionFailedError()
  if (err instanceof RevisionCompactedError) return new ContinueExpiredError()
  if (err instanceof FutureRevisionError) return new InvalidArgumentError('continue token names a revision etcd has not reached')
  if (err instanceof InvalidContinueTokenError) return new InvalidArgumentError(err.message)
  if (err instanceof EtcdUnavailableError) return new UnavailableError()
  if (err instanceof CredentialRevokedError) return new UnauthenticatedError()
  if (err instanceof RevokedUsernameError) return new InvalidArgumentError(err.message)
  if (err instanceof EtcdNoSpaceError) return new OutOfSpaceError()
  if (err instanceof InvalidRequestError) return new InvalidArgumentError(err.message)
  if (err instanceof PermissionDeniedError) return new ForbiddenError(err.message)
  if (err instanceof ApiKeyTooLargeError) return new KeyTooLargeError(String(err.limit))
  if (err instanceof ReplayedKeyGoneError) return new ConflictError(err.message)
  if (err instanceof OutOfSpaceError) return err
  const status = (err as { statusCode?: unknown } | null)?.statusCode
  if (typeof status === 'number' && status >= 400 && status < 500) return err as Error & { statusCode: number }
  if (typeof status === 'number' && status === 503) return new UnavailableError()
  return new InternalError()
}

/** Answers any error in Sensu's shape, with its code: no stack, no etcd key, no secret. */
export function sendError (error: Error, request: FastifyRequest, reply: FastifyReply) {
  const answer = toHttpError(error)
  if (answer.statusCode === 503) {
    // Out of space needs an operator, not patience: said at error level, in the answer's words.
    if (answer instanceof OutOfSpaceError) request.log.error({ err: error.cause ?? error }, answer.message)
    else request.log.warn({ err: error.cause ?? error }, 'etcd unavailable')
    reply.header('retry-after', String(RETRY_AFTER_SECONDS))
  } else if (answer.statusCode >= 500) {
    request.log.error({ err: error }, 'request failed')
  } else if (answer.statusCode === 401) {
    // Every 401, the hook's and that of a key revoked during its own request, names the schemes (RFC 9110).
    reply.header('www-authenticate', 'Bearer, Key')
  }
  return reply.code(answer.statusCode).send({ message: answer.message, code: sensuCode(answer.statusCode) })
}

/** The answer for a path that is no route. */
export function sendRouteNotFound (request: FastifyRequest, reply: FastifyReply) {
  return sendError(new NotFoundError(`no route ${request.method} ${request.url.split('?')[0]}`), request, reply)
}

/**
 * Errors, and paths that are no route, answered in Sensu's shape: the one setup, for the plugin's
 * routes and for the standalone server's own.
 */
export function replyErrorsInSensuShape (app: FastifyInstance): void {
  app.setErrorHandler(sendError)
  app.setNotFoundHandler(sendRouteNotFound)
}
