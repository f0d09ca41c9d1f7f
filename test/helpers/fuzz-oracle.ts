// The fuzz suite's oracle (test/fuzz.test.ts): what SPEC.md says a request gets, given the model.
// How the server reads a request (its route, query and Content-Type), SPEC.md's rules for bodies,
// merge patches and continue tokens, and for each request the statuses allowed and a check of a
// 2xx body. Written without lib/.
import { isDeepStrictEqual } from 'node:util'
import { BASE, type Answer } from './app.js'
import type { Method } from './arbitraries.js'
import {
  callerOf, isObject, isPatchMap, isStringMap, isUsername, onlyFields, optional, own, SELECTORS,
  type Caller, type Json, type Model, type ModelKey
} from './fuzz-model.js'

const BODY_LIMIT = 64 * 1024
/** Fastify's default `maxParamLength`: a longer path parameter is refused by the router itself. */
const MAX_PARAM_LENGTH = 100
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/
/** The plugin's default maxKeysPerUser: how many keys a non-admin may hold when it creates one. */
const QUOTA = 100
/** etcd's longest lease, in seconds: an expires_at further away is a 400. */
const MAX_LEASE_SECONDS = 9_000_000_000
const SECRET = /^sak_[A-Za-z0-9_-]{43}[A-Za-z0-9_-]{6}$/

/** secure-json-parse's rules, which the plugin's JSON parser applies: no __proto__, no constructor.prototype. */
function hasPrototypeKeys (value: unknown): boolean {
  const stack = [value]
  while (stack.length > 0) {
    const v = stack.pop()
    if (typeof v !== 'object' || v === null) continue
    if (!Array.isArray(v)) {
      if (own(v, '__proto__')) return true
      const c = (v as Json).constructor
      if (own(v, 'constructor') && isObject(c) && own(c, 'prototype')) return true
    }
    stack.push(...Object.values(v))
  }
  return false
}

/** The fields of the resource (and of a POST or PATCH body). */
const FIELDS = ['metadata', 'username', 'created_at', 'url', 'sha512', 'filters', 'headers', 'expires_at', 'rotated_at', 'disabled', 'last_used_at']
/** SPEC.md "Lifecycle": the longest grace of a rotation. */
const MAX_GRACE_SECONDS = 604800
const isBoolean = (v: unknown) => typeof v === 'boolean'

/** SPEC.md "The resource", for a POST body. */
function createBodyIsValid (b: unknown): boolean {
  if (!isObject(b)) return false
  if (!onlyFields(b, FIELDS)) return false
  if (own(b, 'metadata')) {
    const m = b.metadata
    if (!isObject(m) || !onlyFields(m, ['name', 'namespace', 'labels', 'annotations', 'created_by'])) return false
    const str = (v: unknown) => typeof v === 'string'
    if (!optional(m, 'name', str) || !optional(m, 'namespace', str) || !optional(m, 'created_by', str)) return false
    if (!optional(m, 'labels', isStringMap) || !optional(m, 'annotations', isStringMap)) return false
  }
  return optional(b, 'username', isUsername) && optional(b, 'created_at', Number.isInteger) &&
    optional(b, 'url', v => typeof v === 'string') && optional(b, 'sha512', v => typeof v === 'string') &&
    optional(b, 'filters', v => v === null || isStringMap(v)) && optional(b, 'headers', v => v === null || isStringMap(v)) &&
    optional(b, 'expires_at', Number.isInteger) && optional(b, 'rotated_at', Number.isInteger) && optional(b, 'disabled', isBoolean) && optional(b, 'last_used_at', Number.isInteger)
}

/** expires_at, when set or changed, lies in the future and within etcd's longest lease. */
function expiryIsValid (expiresAt: unknown, now: number): boolean {
  return expiresAt === undefined || (typeof expiresAt === 'number' && expiresAt > now && expiresAt - now <= MAX_LEASE_SECONDS)
}

/** A merge patch of an ApiKey: each field may also be null (removal). */
function patchBodyIsValid (p: unknown): boolean {
  if (!isObject(p)) return false
  if (!onlyFields(p, FIELDS)) return false
  const strOrNull = (v: unknown) => v === null || typeof v === 'string'
  if (own(p, 'metadata') && p.metadata !== null) {
    const m = p.metadata
    if (!isObject(m) || !onlyFields(m, ['name', 'namespace', 'labels', 'annotations', 'created_by'])) return false
    if (!optional(m, 'name', strOrNull) || !optional(m, 'namespace', strOrNull) || !optional(m, 'created_by', strOrNull)) return false
    if (!optional(m, 'labels', v => v === null || isPatchMap(v)) || !optional(m, 'annotations', v => v === null || isPatchMap(v))) return false
  }
  return optional(p, 'username', v => v === null || isUsername(v)) && optional(p, 'created_at', v => v === null || Number.isInteger(v)) &&
    optional(p, 'url', strOrNull) && optional(p, 'sha512', strOrNull) &&
    optional(p, 'filters', v => v === null || isPatchMap(v)) && optional(p, 'headers', v => v === null || isPatchMap(v)) &&
    optional(p, 'expires_at', v => v === null || Number.isInteger(v)) && optional(p, 'rotated_at', v => v === null || Number.isInteger(v)) &&
    optional(p, 'disabled', v => v === null || isBoolean(v)) && optional(p, 'last_used_at', v => v === null || Number.isInteger(v))
}

/** A stored key as SPEC.md's resource describes it. */
function keyIsValid (k: unknown): boolean {
  if (!isObject(k) || !onlyFields(k, FIELDS)) return false
  const m = k.metadata
  if (!isObject(m) || !onlyFields(m, ['name', 'namespace', 'labels', 'annotations', 'created_by'])) return false
  if (typeof m.name !== 'string' || typeof m.namespace !== 'string' || typeof m.created_by !== 'string') return false
  if (!optional(m, 'labels', isStringMap) || !optional(m, 'annotations', isStringMap)) return false
  return isUsername(k.username) && Number.isInteger(k.created_at) &&
    optional(k, 'url', v => typeof v === 'string') && optional(k, 'sha512', v => typeof v === 'string') &&
    optional(k, 'filters', v => v === null || isStringMap(v)) && optional(k, 'headers', v => v === null || isStringMap(v)) &&
    optional(k, 'expires_at', Number.isInteger) && optional(k, 'rotated_at', Number.isInteger) && optional(k, 'disabled', isBoolean) && optional(k, 'last_used_at', Number.isInteger)
}

/** RFC 7396. */
function mergePatch (target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return patch
  const result: Json = isObject(target) ? { ...target } : {}
  for (const [field, value] of Object.entries(patch)) {
    if (value === null) delete result[field]
    else result[field] = mergePatch(own(result, field) ? result[field] : undefined, value)
  }
  return result
}

/** SPEC.md "Pagination": the token a list accepts (`ns` undefined: GET /apikeys), or null for a 400. */
function decodeToken (text: string, ns: string | undefined): { rev: number, start: string } | null {
  if (!/^[A-Za-z0-9_-]+$/.test(text)) return null
  const bytes = Buffer.from(text, 'base64url')
  if (bytes.toString('base64url') !== text) return null // not canonical: spare bits, a stray last character
  let parsed: unknown
  try { parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes)) } catch { return null }
  if (!isObject(parsed) || !onlyFields(parsed, ['v', 'rev', 'start']) || parsed.v !== 1) return null
  const { rev, start } = parsed
  if (!Number.isSafeInteger(rev) || rev <= 0 || typeof start !== 'string') return null
  // Every namespace's list: anywhere inside the records, `<namespace>/<rest>` or a namespace prefix.
  if (ns === undefined) return start.split('/').length > 2 ? null : { rev, start }
  if (!start.startsWith(`${ns}/`) || start.includes('/', ns.length + 1)) return null
  return { rev, start }
}

type ContentClass = 'none' | 'json' | 'merge-patch' | 'other' | 'unknown'
const JSON_TYPES = new Set(['application/json', 'application/json; charset=utf-8', 'APPLICATION/JSON', 'application/json ; x=y'])
const MERGE_TYPES = new Set(['application/merge-patch+json', 'Application/Merge-Patch+JSON'])
const OTHER_TYPES = new Set(['text/plain', 'application/jsonp', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', '*/*', 'application/*', 'text/json', 'application/json-patch+json'])
function contentClass (type: string | undefined): ContentClass {
  if (type === undefined) return 'none'
  if (JSON_TYPES.has(type)) return 'json'
  if (MERGE_TYPES.has(type)) return 'merge-patch'
  if (OTHER_TYPES.has(type)) return 'other'
  return 'unknown'
}

/** A request as sent. */
export interface Sent {
  method: Method
  /** Path and query after BASE, or from the root when it starts with `//` (call()'s convention). */
  path: string
  headers: Record<string, string>
  auth: string | null
  payload?: string
  socket: boolean
}

/** What the plugin's router sees: the path (inject resolves it as a browser would) and the query. */
export function urlOf (sent: Sent): { pathname: string, search: string } {
  const url = sent.path.startsWith('//') ? sent.path.slice(1) : `${BASE}${sent.path}`
  if (!sent.socket) {
    const parsed = new URL(url, 'http://localhost')
    return { pathname: parsed.pathname, search: parsed.search.slice(1) }
  }
  const q = url.indexOf('?')
  return q === -1 ? { pathname: url, search: '' } : { pathname: url.slice(0, q), search: url.slice(q + 1) }
}

type Route =
  | { kind: 'outside' } // not under BASE: the host's, not the plugin's
  | { kind: 'router', statuses: number[] } // Fastify's router refuses it before any hook (see README)
  | { kind: 'uncertain' } // percent-escapes where routing or decoding could go either way
  | { kind: 'none' }
  | { kind: 'deeper' }
  | { kind: 'collection', ns: string }
  | { kind: 'item', ns: string, name: string }
  | { kind: 'rotate', ns: string, name: string } // POST .../apikey/:apikey/rotate
  | { kind: 'apikeys' } // GET /apikeys (every namespace), DELETE /apikeys?username= (revoke-all)

const decodes = (raw: string) => { try { decodeURIComponent(raw); return true } catch { return false } }

export function routeOf (pathname: string): Route {
  if (pathname !== BASE && !pathname.startsWith(`${BASE}/`)) return { kind: 'outside' }
  const segments = pathname.slice(BASE.length).split('/').slice(1)
  if (segments.length === 1 && segments[0] === 'apikeys') return { kind: 'apikeys' }
  const [first, nsRaw, collection, nameRaw, ...rest] = segments
  if ([first, collection].some(s => s !== undefined && s.includes('%'))) return { kind: 'uncertain' }
  if (first !== 'namespaces' || nsRaw === undefined || (collection !== 'apikey' && collection !== 'apikeys')) {
    // Whether the router tries to decode a bad escape on a path that is no route depends on its tree.
    return segments.every(decodes) ? { kind: 'none' } : { kind: 'uncertain' }
  }
  const params = nameRaw === undefined ? [nsRaw] : [nsRaw, nameRaw]
  // The router refuses a parameter over maxParamLength (414), and any escape it cannot decode (400).
  const refusals = [
    ...(params.some(p => p.length > MAX_PARAM_LENGTH) ? [414] : []),
    ...([...params, ...rest].some(s => !decodes(s)) ? [400] : [])
  ]
  if (refusals.length > 0) return { kind: 'router', statuses: refusals }
  const [ns, name] = params.map(p => decodeURIComponent(p))
  if (name !== undefined && rest.length === 1 && rest[0] === 'rotate') return { kind: 'rotate', ns, name }
  if (rest.length > 0) return { kind: 'deeper' }
  return name === undefined ? { kind: 'collection', ns } : { kind: 'item', ns, name }
}

/** The query string as Fastify's parser reads it: a repeated name becomes an array. */
function queryOf (search: string): Record<string, string | string[]> | null {
  const query: Record<string, string | string[]> = Object.create(null)
  for (const part of search.split('&')) {
    if (part === '') continue
    const eq = part.indexOf('=')
    let name: string, value: string
    try {
      name = decodeURIComponent((eq === -1 ? part : part.slice(0, eq)).replace(/\+/g, ' '))
      value = decodeURIComponent((eq === -1 ? '' : part.slice(eq + 1)).replace(/\+/g, ' '))
    } catch {
      return null // a malformed escape: how it is read is the parser's business
    }
    const before = query[name]
    query[name] = before === undefined ? value : [...[before].flat(), value]
  }
  return query
}

/** The query parameters each route takes (SPEC.md: any other is a 400 that names it). */
const LIST_QUERY = ['limit', 'continue', 'labelSelector', 'fieldSelector']
function unknownParameter (query: Record<string, string | string[]> | null, known: string[]): string | undefined {
  return query === null ? undefined : Object.keys(query).find(name => !known.includes(name))
}

/** The selectors of a list query: a filter, 'refused' for a 400, undefined for none. */
function selectorOf (query: Record<string, string | string[]>): ((k: Json) => boolean) | 'refused' | undefined {
  const filters: Array<(k: Json) => boolean> = []
  for (const name of ['labelSelector', 'fieldSelector']) {
    const value = query[name]
    if (value === undefined) continue
    if (typeof value !== 'string') return 'refused'
    const known = SELECTORS[`${name}=${value}`]
    if (known === undefined) throw new Error(`the oracle knows no ${name} ${JSON.stringify(value)}: add it to SELECTORS`)
    if (known === null) return 'refused'
    filters.push(known)
  }
  return filters.length === 0 ? undefined : k => filters.every(f => f(k))
}

/** What the model expects: the statuses allowed, and for a 2xx, what its body must be. */
export interface Prediction {
  statuses: number[] | 'any'
  /** Fastify's router may refuse the path itself (a bad escape, an overlong parameter), in its own body. */
  router?: boolean
  /** The path is outside basePath: the host answers, in its own body. */
  outside?: boolean
  why: string
  /** Checks a 2xx answer; returns a complaint or undefined. */
  check?: (answer: Answer) => string | undefined
}

export function predict (sent: Sent, model: Model, clock: { before: number }): Prediction {
  const { pathname, search } = urlOf(sent)
  const route = routeOf(pathname)
  if (route.kind === 'outside') return { statuses: 'any', outside: true, why: 'a path outside basePath is the host\'s' }
  if (route.kind === 'router') return { statuses: route.statuses, router: true, why: 'the router refuses a bad escape or an overlong parameter' }
  if (route.kind === 'uncertain') return { statuses: 'any', router: true, why: 'escapes the router may read either way' }
  const caller = callerOf(sent.auth ?? undefined, model)
  // Past the failure limit, invalid credentials from the address are a 429; valid ones never are.
  if (caller === null) return { statuses: [401, 429], why: 'no valid credentials' }
  const p = (statuses: number[] | 'any', why: string, check?: Prediction['check']): Prediction => ({ statuses, why, check })

  const method = sent.method
  const payload = sent.payload ?? ''
  const withBody = payload !== ''
  const type = contentClass(sent.headers['content-type'])
  const readsBody = method !== 'GET' && method !== 'HEAD' && (sent.headers['content-type'] !== undefined || withBody)
  const orBody = (statuses: number[]) => readsBody ? [...statuses, 400, 413, 415] : statuses
  if (route.kind === 'none' || route.kind === 'deeper') return p(orBody([404]), 'no such route')
  if (method === 'OPTIONS') return p(orBody([404, 405]), 'OPTIONS: no route (a host may add CORS)')
  if (route.kind === 'apikeys' && !['GET', 'HEAD', 'DELETE'].includes(method)) return p(orBody([405]), 'another method on /apikeys')

  // The body is read before validation: 413, 415 and unparsable JSON come first.
  let body: unknown
  if (readsBody) {
    if (type === 'unknown') return p('any', 'a Content-Type of unknown form')
    if (withBody) {
      if (Buffer.byteLength(payload) > BODY_LIMIT) return p(type === 'none' ? [413, 415] : [413], 'a body over bodyLimit')
      if (type === 'none' || type === 'other' || (type === 'merge-patch' && method !== 'PATCH')) return p([415], 'a body that is not JSON')
      try {
        body = JSON.parse(payload.replace(/^\ufeff/, ''))
      } catch {
        return p([400], 'a body that is not JSON')
      }
      if (hasPrototypeKeys(body)) return p([400], 'a body with __proto__ or constructor.prototype')
    }
  }
  const query = queryOf(search)
  if (route.kind === 'apikeys') {
    const unknown = unknownParameter(query, method === 'DELETE' ? ['username'] : LIST_QUERY)
    if (unknown !== undefined) return p([400], `an unknown query parameter ${JSON.stringify(unknown)}`)
    return method === 'DELETE' ? predictRevokeAll(query, caller, model, p) : predictList(undefined, query, caller, model, p)
  }
  if (route.kind === 'rotate') {
    if (method !== 'POST') return p([405], 'another method on a rotate path')
    if (query === null) return p([400], 'a query parameter, with a malformed escape, on a route that takes none')
    if (unknownParameter(query, []) !== undefined) return p([400], 'a query parameter on the rotate route')
    if (!NAME.test(route.ns)) return p([400], 'a bad namespace name')
    if (!NAME.test(route.name)) return p([400], 'a bad apikey name')
    return predictRotate(model.get(route.ns, route.name), payload === '' ? {} : body, sent.headers['if-match'], caller, clock, p)
  }
  const collection = route.kind === 'collection'
  if ((collection && !['GET', 'HEAD', 'POST'].includes(method)) || (!collection && !['GET', 'HEAD', 'PATCH', 'DELETE'].includes(method))) {
    return p([405], 'another method on an API path')
  }
  // Every route checks its query: a parameter it does not take is a 400 (so is a bad name, a bad body).
  const takesList = collection && method !== 'POST'
  // A malformed escape in a route that takes no query: its parameter (the fuzz's names all decode) is unknown.
  if (query === null && !takesList) return p([400], 'a query parameter, with a malformed escape, on a route that takes none')
  const unknown = unknownParameter(query, takesList ? LIST_QUERY : [])
  if (unknown !== undefined) return p([400], `an unknown query parameter ${JSON.stringify(unknown)}`)

  // Validation: params, body, query; each a 400.
  const { ns } = route
  if (!NAME.test(ns)) return p([400], 'a bad namespace name')
  if (route.kind === 'item' && !NAME.test(route.name)) return p([400], 'a bad apikey name')

  if (collection && method === 'POST') return predictCreate(ns, body, payload, caller, model, clock, p)
  if (collection) return predictList(ns, query, caller, model, p)
  const key = model.get(ns, route.name)
  const visible = key !== undefined && (caller.admin || key.record.username === caller.username)
  if (method === 'PATCH') return predictPatch(key, visible, body, withBody, sent.headers['if-match'], caller, model, clock, p)
  if (!visible) return p([404], 'no such key, or not the caller\'s')
  if (method === 'DELETE') return p([204], 'delete a visible key')
  const { record, etag } = key
  return p([200], 'read a visible key', answer => {
    if (method === 'HEAD') return undefined
    if (!isDeepStrictEqual(answer.json(), record)) return `GET answered ${answer.body.slice(0, 300)}; the model holds ${JSON.stringify(record).slice(0, 300)}`
    if (answer.headers.etag !== etag) return `ETag ${String(answer.headers.etag)}, the model's ${etag}`
  })
}

type P = (statuses: number[] | 'any', why: string, check?: Prediction['check']) => Prediction

function predictRevokeAll (query: Record<string, string | string[]> | null, caller: Caller, model: Model, p: P): Prediction {
  if (query === null) return p('any', 'a query string with a malformed escape')
  const { username } = query
  if (!isUsername(username)) return p([400], 'no username, or not one')
  if (!caller.admin) return p([403], 'only an admin revokes every key of a user')
  const count = model.ofUser(username as string).length
  return p([200], 'revoke every key of a user', answer => {
    if (!isDeepStrictEqual(answer.json(), { username, deleted: count })) return `revoke-all answered ${answer.body}; the model holds ${count} keys of ${JSON.stringify(username)}`
  })
}

function predictCreate (ns: string, body: unknown, payload: string, caller: Caller, model: Model, clock: { before: number }, p: P): Prediction {
  // An empty body creates a key with defaults; `null` is a body, and not an object.
  const given = payload === '' ? {} : body
  if (!createBodyIsValid(given)) return p([400], 'a POST body SPEC.md refuses')
  const b = given as Json
  if (b.metadata?.namespace !== undefined && b.metadata.namespace !== ns) return p([400], 'metadata.namespace is not the URL\'s')
  if (!expiryIsValid(b.expires_at, Math.floor(clock.before / 1000))) return p([400], 'expires_at not in the future')
  const username = b.username ?? caller.username
  if (!caller.admin && username !== caller.username) return p([403], 'a key for another user')
  const expiresAt = b.expires_at ?? caller.expiresAt
  if (caller.expiresAt !== undefined && expiresAt > caller.expiresAt) return p([403], 'a key that outlives the caller\'s own')
  if (!caller.admin && model.ofUser(username).length >= QUOTA) return p([403], `${username} holds ${QUOTA} keys already`)
  const labels = b.metadata?.labels
  const annotations = b.metadata?.annotations
  return p([201], 'a valid POST', answer => {
    const created = answer.json()
    const after = Math.floor(Date.now() / 1000)
    const expected = {
      metadata: {
        name: created.metadata?.name,
        namespace: ns,
        ...(labels !== undefined && { labels }),
        ...(annotations !== undefined && { annotations }),
        created_by: caller.username
      },
      username,
      created_at: created.created_at,
      ...(own(b, 'url') && { url: b.url }),
      ...(own(b, 'sha512') && { sha512: b.sha512 }),
      ...(own(b, 'filters') && { filters: b.filters }),
      ...(own(b, 'headers') && { headers: b.headers }),
      ...(expiresAt !== undefined && { expires_at: expiresAt }),
      // last_used_at in a body is ignored, as created_at is.
      ...(own(b, 'disabled') && { disabled: b.disabled }),
      key: created.key
    }
    if (!isDeepStrictEqual(created, expected)) return `POST answered ${answer.body.slice(0, 400)}; SPEC.md says ${JSON.stringify(expected).slice(0, 400)}`
    if (!/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(created.metadata.name)) return `name ${created.metadata.name} is not a UUID v4`
    if (!(created.created_at >= Math.floor(clock.before / 1000) && created.created_at <= after)) return `created_at ${created.created_at} is not now`
    if (typeof created.key !== 'string' || !SECRET.test(created.key)) return 'the secret has not the form sak_ + 43 + 6'
    if (answer.headers.location !== `${BASE}/namespaces/${ns}/apikey/${created.metadata.name}`) return `Location ${String(answer.headers.location)}`
    if (!/^"\d+"$/.test(String(answer.headers.etag))) return `ETag ${String(answer.headers.etag)}`
  })
}

/** A key's place in etcd: `<namespace>/<name>` (ASCII, so string order is byte order). */
const qualifiedOf = (k: Json) => `${k.metadata.namespace}/${k.metadata.name}`

/** A list of `ns`, or of every namespace when `ns` is undefined (GET /apikeys). */
function predictList (ns: string | undefined, query: Record<string, string | string[]> | null, caller: Caller, model: Model, p: P): Prediction {
  if (query === null) return p('any', 'a query string with a malformed escape')
  const { limit = '', continue: token = '' } = query
  if (typeof limit !== 'string' || !/^[0-9]*$/.test(limit)) return p([400], 'a bad limit')
  if (typeof token !== 'string') return p([400], 'two continue tokens')
  const selector = selectorOf(query)
  if (selector === 'refused') return p([400], 'a selector SPEC.md refuses')
  const pageSize = Math.min(Number(limit), 1000)
  const scope = ns ?? 'every namespace'
  const all = ns === undefined ? model.inKeyOrder() : model.inNamespace(ns)
  const mine = all.filter(k => (caller.admin || k.record.username === caller.username) && (selector === undefined || selector(k.record)))
  const checkItems = (items: unknown): string | undefined => {
    if (!Array.isArray(items)) return 'a list that is not an array'
    if (pageSize > 0 && items.length > pageSize) return `${items.length} items for limit ${pageSize}`
    for (const item of items) {
      if (!keyIsValid(item)) return `a listed item is not an ApiKey: ${JSON.stringify(item).slice(0, 200)}`
      if (ns !== undefined && item.metadata.namespace !== ns) return `namespace ${ns} lists a key of ${item.metadata.namespace}`
      if (!caller.admin && item.username !== caller.username) return `${caller.username} sees a key of ${item.username}`
      if (selector !== undefined && !selector(item)) return `a key the selectors exclude: ${JSON.stringify(item).slice(0, 200)}`
    }
    const names = items.map(qualifiedOf)
    if (names.some((n: string, i: number) => i > 0 && n <= names[i - 1])) return 'items not in key order'
  }
  if (token !== '') {
    const decoded = decodeToken(token, ns)
    if (decoded === null) return p([400], 'a continue token SPEC.md refuses')
    // A later page reads at the token's revision: its items are an older snapshot.
    const statuses = decoded.rev > model.maxRevision + 1_000_000 ? [400] : decoded.rev > model.maxRevision ? [200, 400] : decoded.rev < model.minRevision ? [200, 410] : [200]
    return p(statuses, 'a page after a continue token', answer => {
      if (answer.body === '') return undefined // HEAD
      const items = answer.json()
      const bad = checkItems(items)
      if (bad !== undefined) return bad
      if (items.some((i: Json) => Buffer.compare(Buffer.from(qualifiedOf(i)), Buffer.from(decoded.start)) < 0)) return `a key before the token's start ${JSON.stringify(decoded.start)}`
    })
  }
  const expected = pageSize > 0 ? mine.slice(0, pageSize) : mine
  const last = expected.at(-1)
  // A filtered page reads on to fill itself: a token when a key of the range follows its last.
  const more = pageSize > 0 && expected.length === pageSize && last !== undefined && all.some(k => qualifiedOf(k.record) > qualifiedOf(last.record))
  return p([200], 'a first page', answer => {
    if (answer.body === '') return undefined // HEAD
    const items = answer.json()
    const bad = checkItems(items)
    if (bad !== undefined) return bad
    if (!isDeepStrictEqual(items, expected.map(k => k.record))) {
      return `list of ${scope} (limit ${limit}) answered ${items.length} items [${items.map(qualifiedOf).join(', ').slice(0, 300)}]; the model has ${expected.length} [${expected.map(k => qualifiedOf(k.record)).join(', ').slice(0, 300)}]` +
        (items.length === expected.length ? `; first difference: ${JSON.stringify(items.find((i: Json, n: number) => !isDeepStrictEqual(i, expected[n].record))).slice(0, 400)}` : '')
    }
    if ((answer.headers['sensu-continue'] !== undefined) !== more) return `Sensu-Continue ${more ? 'missing' : 'present'}`
  })
}

/** SPEC.md "Lifecycle": a rotation of `key` (undefined: none in the model) with this body. */
function predictRotate (key: ModelKey | undefined, body: unknown, ifMatch: string | undefined, caller: Caller, clock: { before: number }, p: P): Prediction {
  const grace = isObject(body) ? body.grace_seconds : undefined
  if (!isObject(body) || !onlyFields(body, ['grace_seconds']) || !optional(body, 'grace_seconds', v => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= MAX_GRACE_SECONDS)) {
    return p([400], 'a rotate body SPEC.md refuses')
  }
  if (key === undefined || !(caller.admin || key.record.username === caller.username)) return p([404], 'no such key, or not the caller\'s')
  if (ifMatch !== undefined && !ifMatch.split(',').some(tag => tag.trim() === '*' || tag.trim() === key.etag)) return p([412], 'If-Match does not match')
  // The model follows the answer before the check runs: what it held is read now.
  const { record, etag: etagBefore, secret: secretBefore } = key
  if (caller.expiresAt !== undefined && (record.expires_at === undefined || record.expires_at > caller.expiresAt)) return p([403], 'a rotation of a key that outlives the caller\'s own')
  // A key whose expiry passes now is not found (SPEC: never rotate an expired key).
  const statuses = record.expires_at !== undefined && record.expires_at <= Math.floor(clock.before / 1000) + 2 ? [200, 404] : [200]
  return p(statuses, `a rotation (grace ${String(grace ?? 0)})`, answer => {
    const { key: secret, rotated_at: rotatedAt, ...rest } = answer.json()
    if (!isDeepStrictEqual(rest, (({ rotated_at: _r, ...r }) => r)(record))) return `rotate answered ${answer.body.slice(0, 400)}; the model holds ${JSON.stringify(record).slice(0, 400)}`
    if (!(rotatedAt >= Math.floor(clock.before / 1000) && rotatedAt <= Math.floor(Date.now() / 1000))) return `rotated_at ${String(rotatedAt)} is not now`
    if (typeof secret !== 'string' || !SECRET.test(secret) || secret === secretBefore) return 'the new secret has not the form sak_ + 43 + 6, or is the old one'
    const etag = String(answer.headers.etag)
    if (!/^"\d+"$/.test(etag) || etag === etagBefore) return `ETag ${etag} after ${etagBefore}`
  })
}

function predictPatch (key: ModelKey | undefined, visible: boolean, body: unknown, withBody: boolean, ifMatch: string | undefined, caller: Caller, model: Model, clock: { before: number }, p: P): Prediction {
  if (!withBody) return p([400], 'PATCH without a body')
  if (!patchBodyIsValid(body)) return p([400], 'a merge patch SPEC.md refuses')
  if (key === undefined || !visible) return p([404], 'no such key, or not the caller\'s')
  if (ifMatch !== undefined && !ifMatch.split(',').some(tag => tag.trim() === '*' || tag.trim() === key.etag)) return p([412], 'If-Match does not match')
  const before = key.record
  const after = mergePatch(before, body) as Json
  const immutable = [
    after.metadata?.name === before.metadata.name, after.metadata?.namespace === before.metadata.namespace,
    after.metadata?.created_by === before.metadata.created_by, after.created_at === before.created_at, after.rotated_at === before.rotated_at,
    // Set by the server only: the run's interval is longer than the run, so the model's keys have none.
    after.last_used_at === before.last_used_at
  ]
  if (immutable.includes(false)) return p([400], 'a change of an immutable field')
  if (!keyIsValid(after)) return p([400], 'the patched key is not a valid key')
  if (after.expires_at !== before.expires_at && !expiryIsValid(after.expires_at, Math.floor(clock.before / 1000))) return p([400], 'a new expires_at not in the future')
  if (!caller.admin && after.username !== caller.username) return p([403], 'a patch to another user')
  if (after.expires_at !== before.expires_at && caller.expiresAt !== undefined && (after.expires_at === undefined || after.expires_at > caller.expiresAt)) {
    return p([403], 'a patch that makes a key outlive the caller\'s own')
  }
  if (after.username !== before.username && key.createRevision <= (model.fenced.get(after.username) ?? 0)) {
    return p([400], 'a key made before a revoke-all of its new username')
  }
  const changed = !isDeepStrictEqual(after, before)
  const etagBefore = key.etag
  // SPEC.md does not bound a key's size; one that merge patches grew past bodyLimit may be refused.
  const statuses = Buffer.byteLength(JSON.stringify(after)) > BODY_LIMIT ? [200, 413] : [200]
  return p(statuses, 'a valid merge patch', answer => {
    if (!isDeepStrictEqual(answer.json(), after)) return `PATCH answered ${answer.body.slice(0, 400)}; RFC 7396 gives ${JSON.stringify(after).slice(0, 400)}`
    const etag = String(answer.headers.etag)
    if (!/^"\d+"$/.test(etag)) return `ETag ${etag}`
    if ((etag !== etagBefore) !== changed) return changed ? 'an update kept its ETag' : `a patch that changes nothing changed the ETag (${etagBefore} to ${etag})`
  })
}
