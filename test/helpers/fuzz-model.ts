// The fuzz suite's model of the server (test/fuzz.test.ts): what the earlier 2xx answers said is
// in the store (live keys, revoked secrets, continue tokens, fences, the revisions seen), and who an
// Authorization header makes the caller. Written without lib/, from SPEC.md.
import { createHash } from 'node:crypto'
import { ADMIN_TOKEN } from './app.js'

export type Json = Record<string, any>

export interface ModelKey {
  ns: string
  name: string
  /** The key as the last 2xx answer showed it, without its secret. */
  record: Json
  secret: string
  etag: string
  /** Every ETag the key had, for stale If-Match headers. */
  etags: string[]
  /** etcd's revision of its create: its first ETag. */
  createRevision: number
  /** The secret before the last rotation, when that rotation gave it a grace: its digest entry may still be in etcd. */
  previous?: string
}

/**
 * The selectors the fuzz sends (arbitraries.ts picks them), and what each keeps; null: a statement SPEC.md
 * refuses (a 400). The grammar itself is unit-tested in test/selectors.test.ts.
 */
export const SELECTORS: Record<string, ((k: Json) => boolean) | null> = {
  'labelSelector=team == a': k => k.metadata.labels?.team === 'a',
  'labelSelector=via != socket': k => k.metadata.labels?.via !== 'socket',
  'labelSelector=team in [a, b]': k => ['a', 'b'].includes(k.metadata.labels?.team),
  'labelSelector=team notin [a]': k => k.metadata.labels?.team !== 'a',
  'labelSelector=x matches y': k => typeof k.metadata.labels?.x === 'string' && k.metadata.labels.x.includes('y'),
  'fieldSelector=api_key.username == fuzzer': k => k.username === 'fuzzer',
  'fieldSelector=api_key.username != fuzzer && api_key.labels.team == a': k => k.username !== 'fuzzer' && k.metadata.labels?.team === 'a',
  'fieldSelector=api_key.namespace in [fuzz, other]': k => ['fuzz', 'other'].includes(k.metadata.namespace),
  'labelSelector=team = a': null,
  'labelSelector=': null,
  'fieldSelector=api_key.user == x': null,
  'fieldSelector=username == x': null
}

/** `expiresAt`: a caller authenticated by an expiring key makes nothing that outlives it (SPEC: Containment). */
export interface Caller { username: string, admin: boolean, expiresAt?: number }

export class Model {
  readonly keys = new Map<string, ModelKey>()
  readonly revoked: Array<{ ns: string, name: string, secret: string }> = []
  readonly tokens: Array<{ ns: string, token: string }> = []
  /**
   * Usernames a revoke-all was answered for, each with the newest revision seen before the answer:
   * keys of theirs created up to it were made before the fence etcd holds for them.
   */
  readonly fenced = new Map<string, number>()
  maxRevision = 1
  /**
   * The first revision this run saw. etcd compacts its history every 5 minutes (SPEC: Containment),
   * so a token forged with an older revision may name a compacted one: a 410.
   */
  minRevision = Infinity

  get (ns: string, name: string) { return this.keys.get(`${ns}/${name}`) }
  /** Keys of a namespace in etcd's order (names are ASCII, so string order is byte order). */
  inNamespace (ns: string) { return [...this.keys.values()].filter(k => k.ns === ns).sort((a, b) => (a.name < b.name ? -1 : 1)) }
  /** Every key in etcd's order of `<namespace>/<name>`, as GET /apikeys lists them. */
  inKeyOrder () { return [...this.keys.keys()].sort().map(qualified => this.keys.get(qualified) as ModelKey) }
  elsewhere (ns: string) { return [...this.keys.values()].filter(k => k.ns !== ns) }
  ofUser (username: string) { return [...this.keys.values()].filter(k => k.record.username === username) }
  bySecret (secret: string) { return [...this.keys.values()].find(k => k.secret === secret) }

  sawEtag (etag: unknown) {
    const revision = Number(/^"(\d+)"$/.exec(String(etag))?.[1])
    if (revision > this.maxRevision) this.maxRevision = revision
    if (revision < this.minRevision) this.minRevision = revision
  }

  created (ns: string, body: Json, etag: string) {
    const { key: secret, ...record } = body
    this.keys.set(`${ns}/${record.metadata.name}`, { ns, name: record.metadata.name, record, secret, etag, etags: [etag], createRevision: Number(etag.slice(1, -1)) })
    this.sawEtag(etag)
  }

  patched (key: ModelKey, record: Json, etag: string) {
    key.record = record
    if (etag !== key.etag) key.etags.push(etag)
    key.etag = etag
    this.sawEtag(etag)
  }

  /** A rotation answered: the new secret; the old one refused at once (grace 0) or after its grace. */
  rotated (key: ModelKey, body: Json, etag: string, graceSeconds: number) {
    const { key: secret, ...record } = body
    if (graceSeconds === 0) this.revoked.push({ ns: key.ns, name: key.name, secret: key.secret })
    key.previous = graceSeconds === 0 ? undefined : key.secret
    key.secret = secret
    this.patched(key, record, etag)
  }

  deleted (key: ModelKey) {
    this.keys.delete(`${key.ns}/${key.name}`)
    this.revoked.push({ ns: key.ns, name: key.name, secret: key.secret })
  }
}

export const pick = <T> (items: readonly T[], n: number): T | undefined => items.length === 0 ? undefined : items[n % items.length]
export const digest = (secret: string) => createHash('sha256').update(secret).digest('hex')
export const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v)
export const own = (o: Json, field: string) => Object.hasOwn(o, field)
export const onlyFields = (o: Json, allowed: string[]) => Object.keys(o).every(k => allowed.includes(k))
export const isStringMap = (v: unknown) => isObject(v) && Object.values(v).every(x => typeof x === 'string')
export const isPatchMap = (v: unknown) => isObject(v) && Object.values(v).every(x => x === null || typeof x === 'string')
export const isUsername = (v: unknown) => typeof v === 'string' && v.length >= 1 && v.length <= 256
export const optional = (o: Json, field: string, check: (v: unknown) => boolean) => !own(o, field) || check(o[field])

/** Who the Authorization header says the caller is (bearer admins, API keys as their username). */
export function callerOf (header: string | undefined, model: Model): Caller | null {
  const match = header === undefined ? null : /^(\S+) +(\S+) *$/.exec(header)
  if (match === null) return null
  const [, scheme, credentials] = match
  if (scheme.toLowerCase() === 'bearer' && credentials === ADMIN_TOKEN) return { username: 'admin', admin: true }
  const key = scheme.toLowerCase() === 'key' ? model.bySecret(credentials) : undefined
  // A disabled key authenticates nowhere (SPEC: Lifecycle).
  if (key === undefined || key.record.disabled === true) return null
  return { username: key.record.username, admin: key.record.username === 'admin', ...(key.record.expires_at !== undefined && { expiresAt: key.record.expires_at }) }
}
