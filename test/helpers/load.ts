// A closed-loop HTTP load for the fault tests: each client sends its next request as soon as its
// last one is answered, and every request is kept with its times and its answer or error.
import { performance } from 'node:perf_hooks'

/** Bounded concurrency: the library's own helper. */
export { inParallel } from '../../lib/store/concurrency.js'

export interface LoadRequest {
  method?: string
  /** Path and query, appended to the load's URL. */
  path: string
  headers?: Record<string, string>
  body?: string
}

/** One request and what came of it. Times are performance.now(), to compare with the test's own. */
export interface Outcome {
  request: LoadRequest
  start: number
  end: number
  /** Set when an answer came; then headers (names in lower case) and body are set too. */
  status?: number
  headers?: Record<string, string>
  body?: string
  /** Set when no answer came: the network error, or the client's own timeout. */
  error?: string
  timedOut?: boolean
}

export interface Sample extends Outcome {
  /** Which client sent it, from 0. */
  client: number
}

export interface LoadOptions {
  /** The server, such as http://127.0.0.1:8080. */
  url: string
  clients: number
  /** No client starts a request after this; those in flight are waited for. */
  durationMs: number
  /** Each request's own timeout: well above the server's deadline, so that a hang shows as one. */
  timeoutMs: number
  /** A client's next request; `n` counts its requests from 0, `previous` is its last one. */
  next(client: { client: number, n: number, previous?: Sample }): LoadRequest
}

/** Runs the load to its end; the samples of all clients, in the order they were sent. */
export async function runLoad ({ url, clients, durationMs, timeoutMs, next }: LoadOptions): Promise<Sample[]> {
  const samples: Sample[] = []
  const until = performance.now() + durationMs
  await Promise.all(Array.from({ length: clients }, async (_, client) => {
    let previous: Sample | undefined
    for (let n = 0; performance.now() < until; n++) {
      previous = { client, ...await send(url, next({ client, n, previous }), timeoutMs) }
      samples.push(previous)
    }
  }))
  return samples.sort((a, b) => a.start - b.start)
}

/** One request; never rejects: a failure is in the outcome. */
export async function send (url: string, request: LoadRequest, timeoutMs: number): Promise<Outcome> {
  const start = performance.now()
  try {
    const res = await fetch(url + request.path, {
      method: request.method ?? 'GET',
      headers: request.headers,
      body: request.body,
      signal: AbortSignal.timeout(timeoutMs)
    })
    const body = await res.text()
    return { request, start, end: performance.now(), status: res.status, headers: Object.fromEntries(res.headers), body }
  } catch (err) {
    const end = performance.now()
    const error = err as Error
    if (error.name === 'TimeoutError') return { request, start, end, error: `no answer within ${timeoutMs} ms`, timedOut: true }
    // fetch() says "fetch failed" and puts the reason in `cause`.
    const cause = error.cause instanceof Error ? `: ${error.cause.message}` : ''
    return { request, start, end, error: `${error.message}${cause}`, timedOut: false }
  }
}
