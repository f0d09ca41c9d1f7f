// Watches one app for leaked secrets: every log line (pino at trace level), every answer's
// headers and every error body, against every secret the app handed out, the secrets' random
// parts and digests, and the admin token. buildApp puts one on every app it makes.
import { createHash } from 'node:crypto'
import type { FastifyInstance } from 'fastify'

export class LeakWatch {
  readonly lines: string[] = []
  /** Error bodies and header values the app sent. */
  private readonly exposed: string[] = []
  private readonly needles = new Map<string, string>()
  answers = 0

  /** A pino destination that keeps every line. */
  readonly stream = { write: (line: string) => { this.lines.push(line) } }

  constructor (adminToken: string) {
    this.needles.set(adminToken, 'the admin token')
  }

  /** Any other value that must stay unseen (an Idempotency-Key). */
  watchFor (value: string, what: string) {
    this.needles.set(value, what)
  }

  /** A secret the app handed out: it, its random part and its digest must stay unseen. */
  learn (secret: string) {
    const random = secret.slice(-49, -6)
    this.needles.set(secret, 'a secret')
    this.needles.set(random, 'the random part of a secret')
    this.needles.set(createHash('sha256').update(secret).digest('hex'), 'the digest of a secret')
  }

  /** Records what the app answers: secrets of new and rotated keys, headers, error bodies. */
  watch (app: FastifyInstance) {
    app.addHook('onSend', async (_request, reply, payload) => {
      this.answers++
      const body = typeof payload === 'string' ? payload : ''
      // A create's 201 and a rotation's 200 carry a secret.
      if ((reply.statusCode === 201 || reply.statusCode === 200) && body.startsWith('{')) {
        const secret = (JSON.parse(body) as { key?: unknown }).key
        if (typeof secret === 'string') this.learn(secret)
      }
      for (const value of Object.values(reply.getHeaders())) this.exposed.push(String(value))
      if (reply.statusCode >= 400) this.exposed.push(body)
      return payload
    })
  }

  /** Every place a needle was found, in words. */
  leaks (): string[] {
    const found: string[] = []
    for (const [needle, what] of this.needles) {
      if (this.lines.some(line => line.includes(needle))) found.push(`${what} in a log line`)
      if (this.exposed.some(text => text.includes(needle))) found.push(`${what} in an error body or a header`)
    }
    return found
  }

  /** Throws when anything leaked, or when answers were sent and no log line was captured. */
  verify (): string {
    const leaks = this.leaks()
    if (leaks.length > 0) throw new Error(`leaked: ${[...new Set(leaks)].join('; ')}`)
    if (this.answers > 0 && this.lines.length === 0) throw new Error(`${this.answers} answers and not one log line captured: the leak watch saw nothing`)
    return `leak watch: ${this.lines.length} log lines and ${this.answers} answers checked against ${this.needles.size} secrets: none leaked`
  }
}
