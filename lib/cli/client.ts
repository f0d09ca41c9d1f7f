// The server's API over Node's fetch: one call, its errors as CliErrors, and a list followed page
// by page through Sensu-Continue (so a list of any size holds one page in memory).
import { ConnectError, ServerError } from './errors.js'
import type { Connection } from './connection.js'

/** How long one request may take before the command gives up (exit 3). */
export const REQUEST_TIMEOUT_MS = 30_000

export interface CallOptions {
  query?: Record<string, string | undefined>
  /** Sent as JSON. */
  body?: unknown
  contentType?: string
  headers?: Record<string, string>
}

export interface Answer<T> {
  status: number
  headers: Headers
  body: T
}

export const collectionPath = (namespace: string) => `/namespaces/${encodeURIComponent(namespace)}/apikey`
export const keyPath = (namespace: string, name: string) => `${collectionPath(namespace)}/${encodeURIComponent(name)}`
export const ALL_NAMESPACES_PATH = '/apikeys'

export class ApiClient {
  constructor (private readonly connection: Connection, private readonly timeoutMs = REQUEST_TIMEOUT_MS) {}

  /** One request; a non-2xx answer is a ServerError with the server's message. */
  async call<T = unknown> (method: string, path: string, options: CallOptions = {}): Promise<Answer<T>> {
    const url = this.urlOf(path, options.query)
    const headers: Record<string, string> = { authorization: this.connection.authorization, accept: 'application/json', ...options.headers }
    let body: string | undefined
    if (options.body !== undefined) {
      body = JSON.stringify(options.body)
      headers['content-type'] = options.contentType ?? 'application/json'
    }
    let response: Response
    let text: string
    try {
      response = await fetch(url, { method, headers, body, signal: AbortSignal.timeout(this.timeoutMs) })
      text = await response.text()
    } catch (err) {
      throw this.connectError(url, err)
    }
    if (!response.ok) throw this.serverError(url, response, text)
    return { status: response.status, headers: response.headers, body: parseBody(url, response, text) as T }
  }

  /** The pages of a list, each as it arrives: `limit` keys a page, following `Sensu-Continue` to the end. */
  async * pages<T> (path: string, limit: number, query: Record<string, string | undefined> = {}): AsyncGenerator<T[]> {
    let token: string | undefined
    do {
      let answer: Answer<T[]>
      try {
        answer = await this.call<T[]>('GET', path, { query: { ...query, limit: String(limit), continue: token } })
      } catch (err) {
        if (err instanceof ServerError && err.status === 410) {
          throw new ServerError(`the listing took longer than etcd keeps its history (the server said: ${err.message}); run it again`, 410)
        }
        throw err
      }
      if (!Array.isArray(answer.body)) throw new ServerError(`the server's answer to GET ${path} is not a list`, answer.status)
      yield answer.body
      token = answer.headers.get('sensu-continue') ?? undefined
    } while (token !== undefined && token !== '')
  }

  private urlOf (path: string, query: Record<string, string | undefined> = {}): string {
    const params = new URLSearchParams()
    for (const [name, value] of Object.entries(query)) if (value !== undefined) params.set(name, value)
    const search = params.size > 0 ? `?${params}` : ''
    return `${this.connection.apiUrl}${path}${search}`
  }

  private connectError (url: string, err: unknown): ConnectError {
    const where = new URL(url).origin
    if (err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')) {
      return new ConnectError(`no answer from ${where} within ${this.timeoutMs / 1000} s: is the server overloaded, or is --url (APIKEYS_URL) the right address?`)
    }
    return new ConnectError(`cannot connect to ${where}: ${causeOf(err)}; is the server running, and is --url (APIKEYS_URL) its address?`)
  }

  private serverError (url: string, response: Response, text: string): ServerError {
    let message: string | undefined
    try {
      const parsed = JSON.parse(text)
      if (typeof parsed?.message === 'string' && parsed.message !== '') message = parsed.message
    } catch {}
    message ??= `${response.status} ${response.statusText} from ${new URL(url).origin}${new URL(url).pathname}`
    if (response.status === 401) message += ` (the credentials came from ${this.connection.credentialsFrom})`
    const retryAfter = response.headers.get('retry-after')
    if (retryAfter !== null && /^\d+$/.test(retryAfter)) message += ` (retry after ${retryAfter} s)`
    return new ServerError(message, response.status)
  }
}

function parseBody (url: string, response: Response, text: string): unknown {
  if (text === '') return undefined
  try {
    return JSON.parse(text)
  } catch {
    throw new ServerError(`the answer of ${new URL(url).origin} is not JSON (status ${response.status}): is --url (APIKEYS_URL) this API's server?`, response.status)
  }
}

/** fetch's own error says only "fetch failed": the reason is in its causes (ECONNREFUSED, ENOTFOUND, a TLS error). */
function causeOf (err: unknown): string {
  const parts: string[] = []
  for (let e: any = err; e instanceof Error; e = e.cause) {
    if (e.message !== 'fetch failed') parts.push(e.message.split('\n')[0])
  }
  return parts.length > 0 ? parts.join(': ') : String(err)
}
