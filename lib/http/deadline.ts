import type { FastifyRequest } from 'fastify'
import type { Deadline } from '../store/calls.js'

const deadlines = new WeakMap<FastifyRequest, Deadline>()

/**
 * The deadline of all of one request's etcd work, fixed when the request is first seen, so that
 * authentication, reads and writes share one budget rather than each getting its own.
 */
export function requestDeadline (request: FastifyRequest | undefined, timeout: number): Deadline {
  if (request === undefined) return Date.now() + timeout
  let deadline = deadlines.get(request)
  if (deadline === undefined) {
    deadline = Date.now() + timeout
    deadlines.set(request, deadline)
  }
  return deadline
}
