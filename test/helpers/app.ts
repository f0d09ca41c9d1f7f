// A fresh Fastify app with the plugin for one test, over real etcd, under a root of its own.
import { randomBytes } from 'node:crypto'
import { request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import { Etcd3 } from 'etcd3'
import apiKeys, { anyOf, apiKeyAuth, bearerTokens, type ApiKeysOptions } from '../../lib/index.js'
import type { EtcdHandle } from './etcd.js'
import { LeakWatch } from './leak-watch.js'

export const ADMIN_TOKEN = 'test-admin-token-0123456789'
export const BASE = '/api/core/v2'

/** The subset of tap's Test that the helpers need. */
export interface Teardown {
  teardown(fn: () => unknown): void
  comment(...message: unknown[]): void
}

export interface Call {
  /** Relative to BASE unless it starts with `//` (then taken as is, less one slash). */
  path: string
  method?: 'GET' | 'POST' | 'PATCH' | 'DELETE' | 'PUT' | 'HEAD'
  /** An object is sent as JSON; a string as it is. */
  body?: unknown
  headers?: Record<string, string>
  /** `Authorization` header; defaults to the admin bearer token; null sends none. */
  auth?: string | null
  /**
   * Send over a real socket, path as it is. inject() resolves the URL as a browser would, so
   * `/%2E%2E` never reaches the server; clients such as `curl --path-as-is` do send it.
   */
  socket?: boolean
}

/** The parts of an answer the tests read, from inject() or from a real socket. */
export interface Answer {
  statusCode: number
  headers: Record<string, string | string[] | number | undefined>
  body: string
  json(): any
}

export interface TestApp {
  app: FastifyInstance
  root: string
  /** A client of the test's own, to look at etcd directly. */
  etcd: Etcd3
  call(call: Call): Promise<Answer>
  /** Creates a key through the API; fails the test unless it is a 201. */
  createKey(namespace: string, body?: unknown, auth?: string): Promise<CreatedKey>
  /** Every key and value under the test's root, for "nothing changed" checks. */
  snapshot(): Promise<Record<string, string>>
  /** The app's log lines so far (trace level), parsed. */
  logs(): Array<Record<string, any>>
  /** What checks the app's logs and answers for leaks; absent for apps not made by buildApp. */
  leakWatch?: LeakWatch
}

export interface CreatedKey {
  name: string
  secret: string
  /** The POST answer, secret included. */
  body: Record<string, any>
  /** The key as GET and list show it: the POST answer without its secret. */
  resource: Record<string, any>
  location: string
}

export const keyAuth = (secret: string) => `Key ${secret}`
export const adminAuth = `Bearer ${ADMIN_TOKEN}`

export function uniqueRoot (): string {
  return `/test-${randomBytes(6).toString('hex')}`
}

/**
 * A fresh app with the plugin over `etcd`, under a root of its own. `before` runs on the app before
 * the plugin is registered, as a host's own setup would (@fastify/swagger, hooks).
 */
export async function buildApp (
  t: Teardown, etcd: EtcdHandle, options: Partial<ApiKeysOptions> = {}, before?: (app: FastifyInstance) => unknown
): Promise<TestApp> {
  const root = options.root ?? uniqueRoot()
  // Every app logs at trace level into a leak watch, checked when the test ends.
  const leakWatch = new LeakWatch(ADMIN_TOKEN)
  const app = Fastify({ logger: { level: 'trace', stream: leakWatch.stream } })
  leakWatch.watch(app)
  await before?.(app)
  await app.register(apiKeys, {
    etcd: { hosts: etcd.endpoints },
    root,
    authenticate: anyOf(bearerTokens([ADMIN_TOKEN]), apiKeyAuth({ admins: ['admin'] })),
    // Many tests send bad credentials on purpose; test/brute-force.test.ts tests the limit.
    authFailureLimit: false,
    ...options
  })
  await app.ready()
  const client = new Etcd3({ hosts: etcd.endpoints })
  t.teardown(async () => {
    await app.close()
    client.close()
    t.comment(leakWatch.verify())
  })
  return withHelpers(app, root, client, leakWatch)
}

export function withHelpers (app: FastifyInstance, root: string, client: Etcd3, leakWatch?: LeakWatch): TestApp {
  const call = ({ path, method = 'GET', body, headers = {}, auth = adminAuth, socket = false }: Call): Promise<Answer> => {
    const all: Record<string, string> = { ...headers }
    if (auth !== null) all.authorization = auth
    let payload: string | undefined
    if (typeof body === 'string') payload = body
    else if (body !== undefined) {
      payload = JSON.stringify(body)
      all['content-type'] ??= 'application/json'
    }
    const url = path.startsWith('//') ? path.slice(1) : `${BASE}${path}`
    return socket ? overSocket(app, method, url, all, payload) : app.inject({ method, url, headers: all, payload })
  }
  return {
    app,
    root,
    etcd: client,
    call,
    leakWatch,
    async createKey (namespace, body = {}, auth = adminAuth) {
      const res = await call({ method: 'POST', path: `/namespaces/${namespace}/apikey`, body, auth })
      if (res.statusCode !== 201) throw new Error(`create failed: ${res.statusCode} ${res.body}`)
      const { key: secret, ...resource } = res.json()
      return { name: resource.metadata.name, secret, body: { ...resource, key: secret }, resource, location: String(res.headers.location) }
    },
    async snapshot () {
      const all = await client.getAll().prefix(`${root}/`).strings()
      return all
    },
    logs () {
      return (leakWatch?.lines ?? []).map(line => JSON.parse(line) as Record<string, any>)
    }
  }
}

/** One request over a real socket (the app listens on a free loopback port on first use). */
async function overSocket (app: FastifyInstance, method: string, path: string, headers: Record<string, string>, body?: string): Promise<Answer> {
  if (!app.server.listening) await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as AddressInfo
  return await new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers }, res => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', chunk => { text += chunk })
      res.on('end', () => resolve({ statusCode: res.statusCode ?? 0, headers: res.headers, body: text, json: () => JSON.parse(text) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}
