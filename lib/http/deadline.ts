import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Deadline } from '../store/calls.js'

/** Where a request keeps its deadline: a property of its own (a WeakMap lookup a request costs more). */
const DEADLINE = Symbol('fastify-etcd-apikeys deadline')
type WithDeadline = { [DEADLINE]?: Deadline }

/**
 * Declares the deadline on every request of `app` (the plugin's, and those of the host's routes
 * that call verify), so that setting it does not change the requests' shape.
 */
export function declareRequestDeadline (app: FastifyInstance): void {
  if (!app.hasRequestDecorator(DEADLINE)) app.decorateRequest(DEADLINE, 0)
}

/**
 * The deadline of all of one request's etcd work, fixed when the request is first seen, so that
 * authentication, reads and writes share one budget rather than each getting its own.
 */
export function requestDeadline (request: FastifyRequest | undefined, timeout: number): Deadline {
  if (request === undefined) return Date.now() + timeout
  const holder = request as unknown as WithDeadline
  // 0 (the declared value) or absent: not fixed yet.
  return holder[DEADLINE] || (holder[DEADLINE] = Date.now() + timeout)
}
