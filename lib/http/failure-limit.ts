import type { FastifyInstance, FastifyRequest } from 'fastify'
import rateLimit from '@fastify/rate-limit'

export interface AuthFailureLimit {
  /** Failed authentications an address may make in `timeWindow`; the next is a 429. */
  max: number
  /** Milliseconds. */
  timeWindow: number
}

/** The most addresses kept blocked at once; the oldest block is forgotten first. */
const MAX_BLOCKED = 100_000

/**
 * Counts failed authentications per client address (`request.ip`, which follows Fastify's
 * trustProxy) with @fastify/rate-limit's counter. An address past the limit is refused before it
 * authenticates, until its window ends, so that a right guess in that window is refused too.
 */
export async function authFailureGuard (app: FastifyInstance, limit: AuthFailureLimit) {
  await app.register(rateLimit, { global: false })
  const countFailure = app.createRateLimit({ max: limit.max, timeWindow: limit.timeWindow, keyGenerator: request => request.ip })
  const blockedUntil = new Map<string, number>()

  return {
    /** Seconds the address must still wait, or 0. */
    waitFor (request: FastifyRequest): number {
      const until = blockedUntil.get(request.ip)
      if (until === undefined) return 0
      const left = until - Date.now()
      if (left > 0) return Math.ceil(left / 1000)
      blockedUntil.delete(request.ip)
      return 0
    },
    /** Counts a failed authentication; the seconds to wait if that put the address past the limit, else 0. */
    async failed (request: FastifyRequest): Promise<number> {
      const result = await countFailure(request)
      if (result.isAllowed || !result.isExceeded) return 0
      if (blockedUntil.size >= MAX_BLOCKED) blockedUntil.delete(blockedUntil.keys().next().value as string)
      blockedUntil.set(request.ip, Date.now() + result.ttl)
      return Math.max(1, result.ttlInSeconds)
    }
  }
}
