// The part of autocannon 8's programmatic API the benchmark uses (the package ships no types).
declare module 'autocannon' {
  import type { EventEmitter } from 'node:events'

  interface RawRequest {
    method?: string
    path?: string
    headers?: Record<string, string>
    body?: string | Buffer
  }

  interface Request extends RawRequest {
    /** Called before each request; what it returns is sent. */
    setupRequest?: (request: RawRequest, context: Record<string, unknown>) => RawRequest | null
  }

  interface Options {
    url: string
    connections?: number
    /** Seconds. */
    duration?: number
    method?: string
    headers?: Record<string, string>
    body?: string | Buffer
    requests?: Request[]
    /** Seconds to wait for an answer. */
    timeout?: number
  }

  interface Result {
    duration: number
    errors: number
    timeouts: number
    non2xx: number
    statusCodeStats: Record<string, { count: number }>
    latency: { p50: number, p99: number, totalCount: number }
  }

  interface Instance extends EventEmitter, PromiseLike<Result> {
    stop(): void
  }

  function autocannon (options: Options): Instance
  export default autocannon
}
