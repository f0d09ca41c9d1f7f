// The etcd client the store works with: its retry and circuit-breaker policy, its answer limit.
import { Etcd3, type IOptions, isRecoverableError } from 'etcd3'
import { ConsecutiveBreaker, circuitBreaker, handleWhen, noop } from 'cockatiel'
import { isNoSpace } from './calls.js'

/** gRPC's default limit on one answer: a client made without a setting of its own takes this much. */
export const GRPC_DEFAULT_RECEIVE_BYTES = 4 * 1024 * 1024

/** How long a member's circuit stays open before one call may try it again. */
const BREAKER_HALF_OPEN_AFTER = 1000

/**
 * The largest answer the plugin's own client takes (over gRPC's default): a page of 100 of the
 * largest keys is one range read, not three (see readBatchFor).
 */
const OWN_CLIENT_RECEIVE_BYTES = 64 * 1024 * 1024
const RECEIVE_LIMIT = 'grpc.max_receive_message_length'

/**
 * etcd3 retries a failed call up to 3 times, all within the one deadline of the call, so a call
 * sent to a member that died hangs until that deadline and its retries find no time left. The
 * plugin's own client makes one attempt per call (cockatiel's noop) and the store retries. Each
 * member keeps a circuit breaker (3 failures in a row stop calls to it), as etcd3's own, but one
 * that half-opens after 1 s, not 5: while a cluster elects a leader, the live members time out
 * too, and with etcd3's 5 s every breaker stayed open seconds after the election was over. A write
 * refused for want of space (NOSPACE) is no failure of the member: it answers reads as before.
 */
function withOwnRetries (options: IOptions): IOptions {
  return {
    ...options,
    faultHandling: {
      host: () => circuitBreaker(handleWhen(err => isRecoverableError(err) && !isNoSpace(err)), { halfOpenAfter: BREAKER_HALF_OPEN_AFTER, breaker: new ConsecutiveBreaker(3) }),
      ...options.faultHandling,
      global: noop
    }
  }
}

/** The receive limit of a client's options: its own setting, or gRPC's default. */
function receiveLimitOf (options: IOptions): number {
  const set = options.grpcOptions?.[RECEIVE_LIMIT]
  return typeof set === 'number' && set > 0 ? set : GRPC_DEFAULT_RECEIVE_BYTES
}

/**
 * A fifth of the request's budget, never below 500 ms. A member that does not answer fails at most
 * three attempts before its circuit opens, so a fourth always has time to reach a live member.
 */
function attemptTimeoutFor (requestTimeout: number): number {
  return Math.min(requestTimeout, Math.max(500, Math.floor(requestTimeout / 5)))
}

export interface StoreClient {
  client: Etcd3
  /** Made here: the plugin closes it (a host's client is the host's to close). */
  owned: boolean
  /** The longest one attempt of a call may take; undefined: one attempt with the whole deadline. */
  attemptTimeout?: number
  /** The largest answer the client takes (its grpc.max_receive_message_length). */
  receiveBytes: number
}

/**
 * The client for the option `etcd`: a host's Etcd3 as it is, or one made from its options. The
 * store makes the attempts of a client made here (see withOwnRetries); a host's client, or one
 * given its own retry policy, gets one attempt with the whole deadline.
 */
export function storeClient (etcd: IOptions | Etcd3, requestTimeout: number): StoreClient {
  // A host's client: what it was made with is not known, so gRPC's default.
  if (etcd instanceof Etcd3) return { client: etcd, owned: false, receiveBytes: GRPC_DEFAULT_RECEIVE_BYTES }
  const storeRetries = etcd.faultHandling?.global === undefined
  const options = { ...etcd, grpcOptions: { [RECEIVE_LIMIT]: OWN_CLIENT_RECEIVE_BYTES, ...etcd.grpcOptions } }
  return {
    client: new Etcd3(storeRetries ? withOwnRetries(options) : options),
    owned: true,
    attemptTimeout: storeRetries ? attemptTimeoutFor(requestTimeout) : undefined,
    receiveBytes: receiveLimitOf(options)
  }
}
