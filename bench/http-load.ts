// Load on the API through autocannon (Fastify's own load generator), measured like the raw side:
// latency of every answer with the expected status, to the microsecond.
import autocannon from 'autocannon'
import { countInto, latencySummary, type LoadResult } from './measure.js'

export interface HttpRequest {
  method?: string
  path: string
  headers?: Record<string, string>
  body?: string
}

export interface HttpLoadOptions {
  url: string
  connections: number
  seconds: number
  /** The status every answer should have. */
  expect: number
  /** The request to send next; undefined when there is no more work (the run stops). */
  next: () => HttpRequest | undefined
}

/**
 * Closed-loop HTTP load: `connections` keep-alive connections, each sending its next request
 * when the last one is answered. autocannon's own histogram rounds to whole milliseconds, so
 * latencies are taken from its per-response event instead.
 */
export async function httpLoad (options: HttpLoadOptions): Promise<LoadResult> {
  const samples: number[] = []
  const unexpected: Record<string, number> = {}
  let exhaustedAt: number | undefined
  const started = performance.now()
  const instance = autocannon({
    url: options.url,
    connections: options.connections,
    duration: options.seconds,
    timeout: 30,
    requests: [{
      setupRequest: (request) => {
        const next = options.next()
        if (next === undefined) {
          if (exhaustedAt === undefined) {
            exhaustedAt = performance.now()
            setImmediate(() => instance.stop())
          }
          return request
        }
        return { ...request, ...next, headers: { ...request.headers, ...next.headers } }
      }
    }]
  })
  instance.on('response', (_client: unknown, status: number, _bytes: number, responseTime: number) => {
    if (exhaustedAt !== undefined) return
    if (status === options.expect) samples.push(responseTime)
    else countInto(unexpected, String(status))
  })
  instance.on('reqError', (err: Error) => countInto(unexpected, err.name ?? 'Error'))
  await instance
  const seconds = ((exhaustedAt ?? performance.now()) - started) / 1000
  return {
    ops: samples.length,
    seconds,
    rate: samples.length / seconds,
    ...latencySummary(samples),
    unexpected,
    ...(exhaustedAt !== undefined && { exhausted: true })
  }
}
