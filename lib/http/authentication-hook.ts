import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Authenticate } from './authenticators.js'
import type { Caller } from '../keys/authorization.js'
import { authFailureGuard, type AuthFailureLimit } from './failure-limit.js'
import { requestDeadline } from './deadline.js'
import { TooManyRequestsError, UnauthenticatedError } from './errors.js'

const isThenable = <T>(value: T | PromiseLike<T>): value is PromiseLike<T> =>
  typeof (value as { then?: unknown } | null)?.then === 'function'

/**
 * Authentication comes first, before any body is read: without valid credentials, a 401. Valid
 * credentials are always served. Invalid ones from an address past its limit of failed
 * authentications get a 429: a flood of bad credentials from a shared address (a NAT, a proxy)
 * never locks out a valid key or token; what defeats guessing is the secrets' 256 random bits.
 */
export async function useAuthentication (app: FastifyInstance, options: { authenticate: Authenticate, authFailureLimit: AuthFailureLimit | false, requestTimeout: number }): Promise<void> {
  const { authenticate, requestTimeout } = options
  const guard = options.authFailureLimit === false ? undefined : await authFailureGuard(app, options.authFailureLimit)
  const tooManyFailures = (reply: FastifyReply, seconds: number) => {
    reply.header('retry-after', String(seconds))
    return new TooManyRequestsError(String(seconds))
  }
  /** Takes the caller authenticate answered, or refuses the request (throws, or rejects when the failure is counted). */
  const admit = (request: FastifyRequest, reply: FastifyReply, caller: Caller | null | undefined): void | Promise<void> => {
    if (caller === null || caller === undefined) {
      const wait = guard === undefined ? 0 : guard.waitFor(request)
      if (wait > 0) throw tooManyFailures(reply, wait)
      if (guard === undefined) throw new UnauthenticatedError()
      return guard.failed(request).then(seconds => {
        throw seconds > 0 ? tooManyFailures(reply, seconds) : new UnauthenticatedError()
      })
    }
    if (typeof caller.username !== 'string' || caller.username === '' || typeof caller.admin !== 'boolean' ||
      (caller.expiresAt !== undefined && !Number.isInteger(caller.expiresAt))) {
      throw new TypeError('authenticate must return { username: string, admin: boolean, expiresAt?: integer } or null')
    }
    request.apiKeyCaller = caller
  }
  // A callback hook, not an async one: a bearer token is checked without a promise in the way
  // (authenticate answers at once); an API key waits for its lookup.
  app.addHook('onRequest', (request, reply, done) => {
    let outcome: void | PromiseLike<void>
    try {
      requestDeadline(request, requestTimeout)
      const caller = authenticate(request)
      outcome = isThenable(caller) ? caller.then(answer => admit(request, reply, answer)) : admit(request, reply, caller)
    } catch (err) {
      done(err as Error)
      return
    }
    if (isThenable(outcome)) outcome.then(() => done(), done)
    else done()
  })
}
