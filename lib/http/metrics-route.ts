// GET /metrics: the Prometheus exposition, for admins and for the metrics readers (the standalone
// server's METRICS_TOKEN), in a scope of its own: the readers authenticate here and nowhere else.
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Authenticate } from './authenticators.js'
import type { AuthFailureLimit } from './failure-limit.js'
import { useAuthentication } from './authentication-hook.js'
import { ForbiddenError, sendError } from './errors.js'
import { callerOf } from './routes/context.js'

export interface MetricsRouteOptions {
  path: string
  /** The text to answer and its Content-Type (prom-client's registry makes both). */
  exposition: () => Promise<{ contentType: string, text: string }>
  /** The plugin's authenticate: its admins may read the metrics, its other callers get a 403. */
  authenticate: Authenticate
  /** Callers it accepts may read the metrics, and nothing else: the API routes never consult it. */
  readers?: Authenticate
  authFailureLimit: AuthFailureLimit | false
  requestTimeout: number
}

export async function metricsRoute (app: FastifyInstance, options: MetricsRouteOptions): Promise<void> {
  const { path, exposition, authenticate, readers } = options
  // Errors in Sensu's shape (the not-found handler is the prefix's, the host's or the server's).
  app.setErrorHandler(sendError)
  /** The requests a metrics reader made. */
  const byReader = new WeakSet<FastifyRequest>()
  await useAuthentication(app, {
    authFailureLimit: options.authFailureLimit,
    requestTimeout: options.requestTimeout,
    authenticate: async request => {
      const reader = readers && await readers(request)
      if (reader) {
        byReader.add(request)
        return reader
      }
      return await authenticate(request)
    }
  })
  app.get(path, { schema: { hide: true } }, async (request, reply) => {
    if (!byReader.has(request) && !callerOf(request).admin) {
      throw new ForbiddenError('only admins and the metrics token may read the metrics')
    }
    const { contentType, text } = await exposition()
    return reply.type(contentType).send(text)
  })
}
