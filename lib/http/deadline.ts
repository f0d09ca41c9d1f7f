import type { FastifyRequest } from 'fastify'
import type { Deadline } from '../store/store.js'
import { EtcdUnavailableError } from './errors.js'

const deadlines = new WeakMap<FastifyRequest, number>()

/**
 * The deadline of all of one request's etcd work, fixed when the request is first seen, so that
 * authentication, reads and writes share one budget rather than each getting its own.
 */
export function requestDeadline (request: FastifyRequest | undefined, timeout: number): Deadline {
  if (request === undefined) return { deadline: Date.now() + timeout }
  let deadline = deadlines.get(request)
  if (deadline === undefined) {
    deadline = Date.now() + timeout
    deadlines.set(request, deadline)
  }
  return { deadline }
}

/** `work`, or an EtcdUnavailableError at `deadline` if it has not settled by then. */
export async function settleBy<T> (deadline: number, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const expired = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new EtcdUnavailableError('etcd did not answer in time')), deadline - Date.now())
  })
  try {
    return await Promise.race([work, expired])
  } finally {
    clearTimeout(timer)
  }
}
