// One etcd call within a request's deadline: attempts, retries, and etcd's errors as the store's.
import { setTimeout as sleep } from 'node:timers/promises'
import {
  GRPCGenericError, GRPCOutOfRangeError, EtcdError, ClientClosedError, isRecoverableError,
  GRPCInvalidArgumentError, GRPCNotFoundError, GRPCAlreadyExistsError, GRPCFailedPreconditionError,
  GRPCNotImplementedError, GRPCUnauthenticatedError, EtcdPermissionDeniedError, GRPCResourceExhastedError
} from 'etcd3'
import { isBrokenCircuitError } from 'cockatiel'
import { EtcdNoSpaceError, EtcdUnavailableError, FutureRevisionError, RevisionCompactedError } from './errors.js'

/** When one request's etcd work must be done, as `Date.now()` milliseconds. */
export type Deadline = number

/** A retry gets at least this many milliseconds, or is not made. */
export const MIN_ATTEMPT = 100
/** The pause between two attempts of one call. */
const RETRY_PAUSE = 50
/** The pause before trying again when every member's circuit is open. */
const OPEN_CIRCUIT_PAUSE = 100
/** How long past an attempt's deadline the store waits for the client to end the call itself. */
const SAFETY_MARGIN = 100

/** `work`, or an EtcdUnavailableError at `deadline` if it has not settled by then. */
export async function settleBy<T> (deadline: Deadline, work: Promise<T>): Promise<T> {
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

/** The client's circuit breaker refused the call: cockatiel's BrokenCircuitError. */
function isOpenCircuit (err: unknown): boolean {
  return isBrokenCircuitError(err)
}

/**
 * etcd's NOSPACE: a write refused because its database reached its quota (etcd then raises the
 * NOSPACE alarm and refuses writes until an operator disarms it). gRPC's RESOURCE_EXHAUSTED,
 * which etcd3 counts as recoverable; retrying cannot help.
 */
export function isNoSpace (err: unknown): boolean {
  return err instanceof GRPCResourceExhastedError && /database space exceeded/.test(err.message)
}

/** etcd errors that mean "etcd cannot answer now", as opposed to a bug in the request. */
function isUnavailable (err: unknown): boolean {
  // gRPC's own refusal of an answer too large to receive is no outage: retrying cannot help.
  if (err instanceof GRPCResourceExhastedError && /larger than max/i.test(err.message)) return false
  if (err instanceof EtcdUnavailableError || err instanceof ClientClosedError || isOpenCircuit(err)) return true
  if (err instanceof Error && isRecoverableError(err)) return true
  if (err instanceof GRPCGenericError) {
    return !(err instanceof GRPCInvalidArgumentError || err instanceof GRPCNotFoundError ||
      err instanceof GRPCAlreadyExistsError || err instanceof GRPCFailedPreconditionError ||
      err instanceof GRPCNotImplementedError || err instanceof GRPCUnauthenticatedError ||
      err instanceof GRPCOutOfRangeError)
  }
  // Raft's own transient answers: no leader, leader changed, request timed out, too many requests.
  return err instanceof EtcdError && !(err instanceof EtcdPermissionDeniedError) &&
    /leader|timed out|timeout|too many requests|unhealthy/i.test(err.message)
}

/** etcd's error as one of the store's: compaction, a future revision, no space, unavailability, or as it is. */
export function translateEtcdError (err: unknown): unknown {
  if (err instanceof GRPCOutOfRangeError) {
    return /compacted/.test(err.message) ? new RevisionCompactedError(err.message) : new FutureRevisionError(err.message)
  }
  if (err instanceof EtcdUnavailableError) return err
  if (isNoSpace(err)) return new EtcdNoSpaceError('etcd is out of space', { cause: err })
  if (isUnavailable(err)) return new EtcdUnavailableError('etcd unavailable', { cause: err })
  return err
}

/**
 * Runs one etcd call within the request's deadline. With `attemptTimeout` below the deadline,
 * a call that etcd cannot answer in time (a member that died: its connection hangs) is made
 * again, and the client sends it to another member, while time is left; a timer answers for
 * any call the client does not end itself. Every write of the store is safe to repeat (see its
 * create, update, delete). `observe` is told each attempt's duration and whether it failed.
 */
export async function callWithin<T> (
  deadline: Deadline, attemptTimeout: number, call: (options: { deadline: Date }) => Promise<T>,
  observe?: (seconds: number, failed: boolean) => void
): Promise<T> {
  for (;;) {
    const now = Date.now()
    if (now >= deadline) throw new EtcdUnavailableError('request deadline exceeded')
    const attemptDeadline = Math.min(deadline, now + attemptTimeout)
    const started = performance.now()
    try {
      // The client's own deadline ends the call first, so that its circuit breaker counts the
      // failure before the next attempt picks a member; the timer is the safety net.
      const answer = await settleBy(attemptDeadline + SAFETY_MARGIN, call({ deadline: new Date(attemptDeadline) }))
      observe?.((performance.now() - started) / 1000, false)
      return answer
    } catch (err) {
      observe?.((performance.now() - started) / 1000, true)
      const error = translateEtcdError(err)
      // Every circuit open (a cluster electing a leader makes its live members time out too):
      // wait for one to half-open, within the deadline, rather than answer 503 at once.
      const pause = isOpenCircuit(err) ? OPEN_CIRCUIT_PAUSE : RETRY_PAUSE
      const retry = error instanceof EtcdUnavailableError && deadline - Date.now() >= MIN_ATTEMPT + pause
      if (!retry) throw error
      // A member that refuses at once must not make this a busy loop (a host's client may have no breaker).
      await sleep(pause)
    }
  }
}
