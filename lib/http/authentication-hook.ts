import type { FastifyInstance, FastifyReply } from 'fastify'
import type { Authenticate } from './authenticators.js'
import { authFailureGuard, type AuthFailureLimit } from './failure-limit.js'
import { requestDeadline } from './deadline.js'
import { TooManyRequestsError, UnauthenticatedError } from './errors.js'

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
  app.addHook('onRequest', async (request, reply) => {
    requestDeadline(request, requestTimeout)
    const caller = await authenticate(request)
    if (caller === null || caller === undefined) {
      const wait = guard === undefined ? 0 : guard.waitFor(request) || await guard.failed(request)
      if (wait > 0) throw tooManyFailures(reply, wait)
      throw new UnauthenticatedError()
    }
    if (typeof caller.username !== 'string' || caller.username === '' || typeof caller.admin !== 'boolean' ||
      (caller.expiresAt !== undefined && !Number.isInteger(caller.expiresAt))) {
      throw new TypeError('authenticate must return { username: string, admin: boolean, expiresAt?: integer } or null')
    }
    request.apiKeyCaller = caller
  })
}
