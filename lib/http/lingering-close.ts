import type { FastifyReply, FastifyRequest } from 'fastify'

// An answer sent before the request's body has arrived (a 413 for a body over bodyLimit, a 401
// before the body is read) is only seen by a client that reads while it sends. Node closes the
// connection as soon as the answer is written (Fastify asks it to with `Connection: close`), and
// closing a socket with unread bytes sends a TCP reset, which throws away the answer on the
// client's side: Node's `fetch` sending 3 MiB then got EPIPE instead of the 413. So, as nginx's
// lingering close does, the rest of the body is read and discarded, within these bounds; past
// either one the connection is closed (the client may then see an error instead of the answer).

/**
 * Bytes read and discarded after the answer: a body a few times the largest one a client could
 * mean to send (bodyLimit is 64 KiB by default) is drained, and no client can make the server read
 * an unbounded stream for nothing.
 */
export const LINGER_MAX_BYTES = 4 * 1024 * 1024

/**
 * Milliseconds the draining may take: a connection cannot be held longer than this by trickling
 * a body (nginx's lingering_timeout is 5 s too).
 */
export const LINGER_MAX_MS = 5000

/**
 * The `onSend` hook that drains, within the bounds above, a body not yet received when the answer
 * goes out. The connection stays open meanwhile (so `Connection: close` is not sent); once the body
 * has arrived whole it is a sound keep-alive connection again.
 */
export function lingerOnEarlyAnswer (request: FastifyRequest, reply: FastifyReply, payload: unknown, done: (err: Error | null, payload?: unknown) => void): void {
  const incoming = request.raw
  // Node's `complete` is false while the body is still arriving; inject()'s requests have none.
  // (A callback hook: an async one would cost every answer a promise.)
  if (incoming.complete !== false || incoming.destroyed) return done(null, payload)
  reply.removeHeader('connection')
  const socket = incoming.socket
  let drained = 0
  const count = (chunk: Buffer) => {
    drained += chunk.length
    if (drained > LINGER_MAX_BYTES) socket.destroy()
  }
  const timer = setTimeout(() => socket.destroy(), LINGER_MAX_MS).unref()
  const stop = () => {
    clearTimeout(timer)
    incoming.removeListener('data', count)
    incoming.removeListener('end', stop)
    socket.removeListener('close', stop)
  }
  // Listening before the answer is written keeps Node from discarding the body without a bound.
  incoming.on('data', count)
  incoming.once('end', stop)
  socket.once('close', stop)
  done(null, payload)
}
