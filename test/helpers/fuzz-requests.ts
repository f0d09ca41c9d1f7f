// Turning the fuzz suite's plans (test/helpers/arbitraries.ts) into requests: a plan names keys,
// secrets, ETags and continue tokens by index, and the Renderer resolves them against the model
// (test/helpers/fuzz-model.ts) when the request is made.
import { createHash } from 'node:crypto'
import { crc32 } from 'node:zlib'
import { ADMIN_TOKEN, adminAuth, keyAuth } from './app.js'
import {
  SELF, type AuthRef, type BodyPlan, type IfMatchRef, type NameRef, type Plan, type SegmentMutation, type TokenMutation, type ValueRef
} from './arbitraries.js'
import { callerOf, isObject, own, pick, type Json, type Model, type ModelKey } from './fuzz-model.js'
import type { Sent } from './fuzz-oracle.js'

export const AUTH_NAMESPACE = 'fuzz-auth'

function forgeSecret (seed: string): string {
  const body = `sak_${createHash('sha256').update(seed).digest().toString('base64url')}`
  const sum = Buffer.alloc(4)
  sum.writeUInt32BE(crc32(Buffer.from(body)))
  return body + sum.toString('base64url')
}

/** One character replaced by another of the same alphabet, so that the text surely changes. */
function flip (text: string, at: number): string {
  if (text === '') return 'x'
  const i = at % text.length
  const c = text[i] === 'A' ? 'B' : 'A'
  return text.slice(0, i) + c + text.slice(i + 1)
}

function mutateSegment (name: string, [how, arg, arg2]: SegmentMutation): string {
  switch (how) {
    case 'append': return name + arg
    case 'prepend': return arg + name
    case 'truncate': return name.slice(0, arg)
    case 'upper': return name.toUpperCase()
    case 'repeat': return name.repeat(Math.ceil(arg / Math.max(1, name.length))).slice(0, arg)
    case 'replace-char': { const i = arg % Math.max(1, name.length); return name.slice(0, i) + arg2 + name.slice(i + 1) }
  }
}

function mutateToken (token: string, [how, arg]: TokenMutation): string {
  switch (how) {
    case 'flip': return flip(token, arg)
    case 'truncate': return token.slice(0, arg % Math.max(1, token.length))
    case 'append': return token + arg
    case 'pad': return token + '='.repeat((4 - token.length % 4) % 4 || 4)
  }
}

export class Renderer {
  constructor (private readonly model: Model) {}

  /** The decoded namespace of a plan, when it is a plain name. */
  private nsOf (plan: Plan) { return /^[A-Za-z0-9._-]+$/.test(plan.ns) ? plan.ns : '' }

  target (plan: Plan, self: string): ModelKey | undefined {
    const ref = plan.name
    if (ref === undefined) return undefined
    if (ref.kind === 'live' || ref.kind === 'mutated') return pick(this.model.inNamespace(this.nsOf(plan)), ref.pick)
    if (ref.kind === 'own') {
      const keys = this.model.inNamespace(this.nsOf(plan))
      return pick(keys.filter(k => k.record.username === self), ref.pick) ?? pick(keys, ref.pick)
    }
    if (ref.kind === 'elsewhere') return pick(this.model.elsewhere(this.nsOf(plan)), ref.pick)
    return undefined
  }

  nameSegment (plan: Plan, ref: NameRef, target: ModelKey | undefined): string {
    const fresh = (n: number) => `00000000-0000-4000-8000-${String(n % 1e12).padStart(12, '0')}`
    switch (ref.kind) {
      case 'literal': return ref.segment
      case 'revoked': return pick(this.model.revoked, ref.pick)?.name ?? fresh(ref.pick)
      case 'mutated': return mutateSegment(target?.name ?? fresh(ref.pick), ref.mutation)
      default: return target?.name ?? fresh(ref.pick)
    }
  }

  auth (ref: AuthRef): string | null {
    const live = [...this.model.keys.values()]
    switch (ref.kind) {
      case 'bearer': return ref.form === 'plain' ? adminAuth : ref.form === 'lower-scheme' ? `bearer ${ADMIN_TOKEN}` : `Bearer   ${ADMIN_TOKEN}  `
      case 'key': {
        const key = pick(this.model.ofUser(ref.user), ref.pick)
        if (key === undefined) throw new Error(`no live key of ${ref.user}: call Fuzz.ensureKeyOf first`)
        return keyAuth(key.secret)
      }
      case 'junk':
        switch (ref.form) {
          case 'none': return null
          case 'garbage': return ref.text
          case 'bearer-wrong': return `Bearer ${ref.text}`
          case 'bearer-flipped': return `Bearer ${flip(ADMIN_TOKEN, ref.pick)}`
          case 'key-flipped': return keyAuth(flip(pick(live, ref.pick)?.secret ?? forgeSecret(ref.text), ref.pick))
          case 'key-forged': return keyAuth(forgeSecret(ref.text))
          case 'key-revoked': return keyAuth(pick(this.model.revoked, ref.pick)?.secret ?? forgeSecret(ref.text))
          case 'basic': return `Basic ${Buffer.from(`admin:${ADMIN_TOKEN}`).toString('base64')}`
          case 'scheme-only': return ref.pick % 2 === 0 ? 'Bearer' : 'Key'
          case 'tab-separated': return `Bearer\t${ADMIN_TOKEN}`
        }
    }
  }

  /** Fills the placeholders of a body: the target key's immutable fields, the caller's name. */
  fill (value: unknown, target: ModelKey | undefined, self: string): unknown {
    if (Array.isArray(value)) return value.map(v => this.fill(v, target, self))
    if (!isObject(value)) return value
    if (value === SELF || own(value, '$self')) return self
    if (own(value, '$fromNow')) return Math.floor(Date.now() / 1000) + Number(value.$fromNow)
    if (own(value, '$same')) {
      switch (value.$same) {
        case 'metadata.name': return target?.record.metadata.name ?? 'no-such-key'
        case 'metadata.namespace': return target?.record.metadata.namespace ?? 'no-such-namespace'
        case 'metadata.created_by': return target?.record.metadata.created_by ?? 'nobody'
        default: return target?.record.created_at ?? 0
      }
    }
    // defineProperty: a key named __proto__ stays a key, as JSON.parse would make it.
    const out: Json = {}
    for (const [k, v] of Object.entries(value)) Object.defineProperty(out, k, { value: this.fill(v, target, self), enumerable: true, writable: true, configurable: true })
    return out
  }

  payload (body: BodyPlan, target: ModelKey | undefined, self: string): string | undefined {
    if (body.kind === 'none') return undefined
    if (body.kind === 'raw') return body.text
    return JSON.stringify(this.fill(body.value, target, self))
  }

  ifMatch (ref: IfMatchRef, target: ModelKey | undefined): string {
    switch (ref.kind) {
      case 'current': return target?.etag ?? '"1"'
      case 'stale': return pick(target?.etags.slice(0, -1) ?? [], ref.pick) ?? '"1"'
      case 'star': return '*'
      case 'list-with-current': return `"1", ${target?.etag ?? '"2"'}`
      case 'literal': return ref.text
    }
  }

  queryValue (ref: ValueRef, ns: string): string {
    if (ref.kind === 'literal') return ref.text
    if (ref.kind === 'token') {
      const tokens = this.model.tokens.filter(tk => (tk.ns === ns) === ref.sameNamespace)
      const token = pick(tokens, ref.pick)?.token ?? encodeToken({ v: 1, rev: this.model.maxRevision, start: `${ns}/\u0000` })
      return ref.mutation === undefined ? token : mutateToken(token, ref.mutation)
    }
    const rev = { current: this.model.maxRevision, one: 1, future: this.model.maxRevision + 1e9, zero: 0, negative: -5, huge: 2 ** 60, float: 1.5, string: '5' }[ref.rev]
    const first = this.model.inNamespace(ns)[0]?.name ?? 'm'
    const start = {
      own: `${ns}/${first}\u0000`,
      'own-nul': `${ns}/\u0000`,
      'own-high': `${ns}/\uffff`,
      'namespace-only': ns,
      other: 'some-other-namespace/x\u0000',
      slash: `${ns}/a/b`,
      dotdot: `${ns}/../${AUTH_NAMESPACE}/`,
      digests: '../apikey-digests/',
      empty: '',
      'prefix-of-own': `${ns.slice(0, -1)}/`
    }[ref.start]
    return encodeToken({ v: 1, rev, start, ...ref.extra })
  }

  render (plan: Plan): Sent {
    const auth = this.auth(plan.auth)
    const self = callerOf(auth ?? undefined, this.model)?.username ?? 'fuzzer'
    const target = this.target(plan, self)
    const collection = `/namespaces/${plan.ns}/${plan.plural ? 'apikeys' : 'apikey'}`
    let path: string
    if (plan.rawPath !== undefined) path = plan.rawPath.replaceAll('{name}', target?.name ?? 'x')
    else if (plan.name === undefined) path = collection
    else path = `${collection}/${this.nameSegment(plan, plan.name, target)}`
    if (plan.tail !== undefined) path += `/${plan.tail.map(s => s.replaceAll('{name}', target?.name ?? 'x')).join('/')}`
    const query = plan.query.map(([name, ref]) => `${name}=${this.queryValue(ref, this.nsOf(plan))}`).join('&')
    if (query !== '') path += `?${query}`

    const headers: Record<string, string> = {}
    for (const [name, value] of Object.entries(plan.headers)) {
      if (!['content-type', 'content-length', 'transfer-encoding', 'authorization', 'host', 'connection'].includes(name)) headers[name] = value
    }
    const payload = this.payload(plan.body, target, self)
    const type = plan.contentType === undefined ? (payload === undefined ? undefined : 'application/json') : plan.contentType
    if (type !== null && type !== undefined) headers['content-type'] = type
    if (plan.ifMatch !== undefined) headers['if-match'] = this.ifMatch(plan.ifMatch, target)
    return { method: plan.method, path, headers, auth, payload, socket: false }
  }
}

function encodeToken (token: Json): string {
  return Buffer.from(JSON.stringify(token)).toString('base64url')
}
