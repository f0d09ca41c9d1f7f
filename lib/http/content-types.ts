// The bodies the routes take: JSON only. An empty body of any type is no body; a non-empty one of
// another type is a 415. JSON errors get a fixed message: V8's would quote the body, and with it a secret.
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { InvalidArgumentError, UnsupportedMediaTypeError } from './errors.js'
import { lingerOnEarlyAnswer } from './lingering-close.js'

type Done = (err: Error | null, body?: unknown) => void

function unsupportedMediaType (request: FastifyRequest): Error {
  return new UnsupportedMediaTypeError(request.method === 'PATCH' ? 'application/merge-patch+json or application/json' : 'application/json')
}

/** Replaces every content-type parser of `app` with the routes' own, each limited to `bodyLimit` bytes. */
export function useJsonBodies (app: FastifyInstance, bodyLimit: number): void {
  const parseJson = app.getDefaultJsonParser('error', 'error')
  const jsonParser = (request: FastifyRequest, body: string | Buffer, done: Done) => {
    if (body === '') return done(null, undefined)
    parseJson(request, body as string, (err: Error | null, value?: unknown) => {
      if (err === null) return done(null, value)
      done(new InvalidArgumentError(/prototype/.test(err.message)
        ? 'body must not hold __proto__ or constructor.prototype'
        : 'body is not valid JSON'))
    })
  }
  const mergePatchParser = (request: FastifyRequest, body: string | Buffer, done: Done) => {
    if (request.method !== 'PATCH' && body !== '') return done(unsupportedMediaType(request))
    jsonParser(request, body, done)
  }
  const anyOtherParser = (request: FastifyRequest, body: string | Buffer, done: Done) => {
    done(body === '' ? null : unsupportedMediaType(request), undefined)
  }
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit }, jsonParser)
  app.addContentTypeParser('application/merge-patch+json', { parseAs: 'string', bodyLimit }, mergePatchParser)
  app.addContentTypeParser('*', { parseAs: 'string', bodyLimit }, anyOtherParser)
  // An answer sent before the body has arrived (413, 401) must reach a client still sending it.
  app.addHook('onSend', lingerOnEarlyAnswer)
}
