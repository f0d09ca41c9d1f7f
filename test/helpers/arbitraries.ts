// fast-check generators of hostile requests for test/fuzz.test.ts. A generator cannot see what the
// server holds, so a plan names keys, secrets, ETags and continue tokens by index ("the n-th live key
// of this namespace"); the fuzz test resolves the plan against its model when it sends the request.
import fc from 'fast-check'
import { SELECTORS } from './fuzz-model.js'

export type Method = 'GET' | 'POST' | 'PATCH' | 'DELETE' | 'PUT' | 'HEAD' | 'OPTIONS'

/** Namespaces the fuzz keeps most of its keys in, so that the model and the lists stay small. */
export const NAMESPACES = ['fuzz', 'fuzz-b'] as const
/** The users whose API keys act as plain (non-admin) callers. */
export const USERS = ['fuzzer', 'other'] as const

/** A name as it goes into the path, or one of the model's keys, resolved when the request is made. */
export type NameRef =
  | { kind: 'live', pick: number } // a key of the request's namespace
  | { kind: 'own', pick: number } // a key of the request's namespace and the caller's username
  | { kind: 'elsewhere', pick: number } // a key of another namespace
  | { kind: 'revoked', pick: number } // a key deleted earlier
  | { kind: 'literal', segment: string }
  | { kind: 'mutated', pick: number, mutation: SegmentMutation }

/** Ways to spoil a real name in the path; each is [what, argument]. */
export type SegmentMutation =
  | ['append', string]
  | ['prepend', string]
  | ['truncate', number]
  | ['upper']
  | ['repeat', number] // the name repeated up to this many characters
  | ['replace-char', number, string]

export type AuthRef =
  | { kind: 'bearer', form: 'plain' | 'lower-scheme' | 'extra-spaces' }
  | { kind: 'key', user: 'admin' | typeof USERS[number], pick: number }
  | { kind: 'junk', form: JunkAuth, pick: number, text: string }

export type JunkAuth =
  | 'none' | 'garbage' | 'bearer-wrong' | 'bearer-flipped' | 'key-flipped' | 'key-forged' | 'key-revoked'
  | 'basic' | 'scheme-only' | 'tab-separated'

/** A body: none, a JSON value (its placeholders filled in when sent), or text as it is. */
export type BodyPlan =
  | { kind: 'none' }
  | { kind: 'json', value: unknown }
  | { kind: 'raw', text: string }

/** A placeholder in a PATCH body: the key's current value of this field (or of another key). */
export interface Same { $same: 'metadata.name' | 'metadata.namespace' | 'metadata.created_by' | 'created_at' }
/** A placeholder: the username of the request's caller. */
export const SELF = { $self: true } as const
/** A placeholder: this many seconds from the moment the request is made (expires_at). */
export interface FromNow { $fromNow: number }
const fromNow = (seconds: number): FromNow => ({ $fromNow: seconds })

/** expires_at: far enough in the future that no key expires during a run. */
const futureExpiry = fc.integer({ min: 3600, max: 100_000_000 }).map(fromNow)
/** expires_at that SPEC.md refuses: now or past, beyond etcd's longest lease, not an integer. */
const badExpiry = fc.oneof(
  fc.constantFrom(0, -1, -86_400, 9_000_000_001, 20_000_000_000).map(fromNow),
  fc.constantFrom(0, -1, 1.5, '2030', true, [1], 1e300)
)

export type IfMatchRef =
  | { kind: 'current' } | { kind: 'stale', pick: number } | { kind: 'star' } | { kind: 'literal', text: string }
  | { kind: 'list-with-current' }

export type ValueRef =
  | { kind: 'literal', text: string } // already URL-encoded
  | { kind: 'token', pick: number, sameNamespace: boolean, mutation?: TokenMutation }
  | { kind: 'forged', rev: ForgedRev, start: ForgedStart, extra?: Record<string, unknown> }

export type TokenMutation = ['flip', number] | ['truncate', number] | ['append', string] | ['pad']
export type ForgedRev = 'current' | 'future' | 'zero' | 'negative' | 'huge' | 'float' | 'string' | 'one'
export type ForgedStart = 'own' | 'own-nul' | 'own-high' | 'namespace-only' | 'other' | 'slash' | 'dotdot' | 'digests' | 'empty' | 'prefix-of-own'

export interface Plan {
  op: 'list' | 'create' | 'get' | 'patch' | 'delete' | 'rotate' | 'revoke-all' | 'junk'
  method: Method
  /** The namespace segment as sent (may be mutated). */
  ns: string
  plural: boolean
  name?: NameRef
  /** Path segments after the item, for junk routes. */
  tail?: string[]
  /** For junk routes: the path after BASE as it is, replacing the usual one. */
  rawPath?: string
  query: Array<[string, ValueRef]>
  auth: AuthRef
  /** undefined: application/json when there is a body; null: no Content-Type header. */
  contentType?: string | null
  body: BodyPlan
  ifMatch?: IfMatchRef
  headers: Record<string, string>
}

// ---------------------------------------------------------------------------
// Strings and JSON values

/** A URL cannot carry a lone surrogate: encodeURIComponent throws on one. */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g

/** Code units that break naive handling: NUL, controls, line terminators, lone surrogates, BOM. */
const nasty = fc.constantFrom('\u0000', '\n', '\r', '\t', '\u2028', '\u2029', '\ud800', '\udfff', '\ufeff', '"', '\\', '/', '%', '\u00e9', '\u{1F600}', 'e\u0301')

/** Any string, small: unicode, NUL bytes, lone surrogates, quotes. */
export const anyString = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 12 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 12 }) },
  { weight: 2, arbitrary: fc.array(fc.oneof(nasty, fc.string({ maxLength: 3 })), { maxLength: 5 }).map(parts => parts.join('')) },
  { weight: 1, arbitrary: fc.constantFrom('', 'null', 'true', '0', '__proto__', 'constructor', 'prototype', 'toString', 'sak_', 'admin') }
)

/** Keys of string maps: the prototype's own names and line terminators among them. */
const mapKey = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 10 }) },
  { weight: 1, arbitrary: anyString },
  { weight: 2, arbitrary: fc.constantFrom('team', 'constructor', 'toString', 'hasOwnProperty', 'valueOf', 'prototype', '', 'a.b/c', 'a\nb', '\r', '\u2028', 'x\u0000y', '__proto__') }
)

/** A map of strings, as labels, annotations, filters and headers are (valid, unless a key is __proto__). */
export const stringMap = fc.array(fc.tuple(mapKey, anyString), { maxLength: 4 }).map(entries => Object.fromEntries(entries))

/** Any JSON value, nested a little. */
const jsonish = fc.oneof(
  { weight: 3, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
  { weight: 1, arbitrary: fc.constantFrom(null, true, false, 0, -1, 1.5, 1e21, '', [], {}, [null], { '': '' }) }
)

/** A value of the wrong type for a string field or a string map. */
const notAString = fc.oneof(fc.integer(), fc.boolean(), fc.constant(null), fc.array(fc.string(), { maxLength: 2 }), fc.dictionary(fc.string({ maxLength: 3 }), fc.string(), { maxKeys: 2 }))

/** A map with one value of the wrong type, sometimes under a key a naive pattern would skip. */
const spoiledMap = fc.tuple(stringMap, fc.constantFrom('a', 'a\nb', '\r', '\u2028', '\u2029', 'constructor'), fc.oneof(notAString, fc.constant({ deep: { er: ['x'] } })))
  .map(([map, key, value]) => ({ ...map, [key]: value }))

// ---------------------------------------------------------------------------
// Bodies

/** A POST body that SPEC.md accepts (unless a map key is __proto__); namespace is the URL's. */
function validCreateBody (ns: string) {
  return fc.record({
    metadata: fc.record({
      name: anyString,
      namespace: fc.constant(ns),
      labels: stringMap,
      annotations: stringMap,
      created_by: anyString
    }, { requiredKeys: [] }),
    username: fc.oneof(
      { weight: 3, arbitrary: fc.constant(SELF) },
      { weight: 1, arbitrary: fc.constantFrom('admin', ...USERS) },
      { weight: 1, arbitrary: fc.string({ minLength: 1, maxLength: 20 }) },
      { weight: 1, arbitrary: fc.constantFrom('x'.repeat(256), '\u0000', '\u{1F600}'.repeat(128)) }
    ),
    created_at: fc.oneof(fc.integer(), fc.constant(0), fc.constant(Number.MAX_SAFE_INTEGER)),
    url: anyString,
    sha512: anyString,
    filters: fc.option(stringMap),
    headers: fc.option(stringMap),
    expires_at: futureExpiry,
    // One key in eight is made disabled; last_used_at is ignored in a POST.
    disabled: fc.integer({ min: 0, max: 7 }).map(n => n === 0),
    last_used_at: fc.integer()
  }, { requiredKeys: [] }).map(body => {
    // Most keys never expire: expires_at on one body in eight.
    const { expires_at: expiresAt, ...rest } = body
    return expiresAt !== undefined && expiresAt.$fromNow % 8 === 0 ? body : rest
  })
}

/** Changes that make a POST or PATCH body wrong: wrong types, unknown fields, prototype keys. */
const spoilers: Array<fc.Arbitrary<[string, unknown]>> = [
  fc.tuple(fc.constantFrom('key', 'unknown', 'constructor', 'prototype', 'kind', 'spec', 'Username', 'metadata.labels'), jsonish),
  fc.tuple(fc.constantFrom('username'), fc.oneof(notAString, fc.constant(''), fc.constant('y'.repeat(257)))),
  fc.tuple(fc.constantFrom('created_at'), fc.oneof(fc.constant(1.5), fc.constant('1'), fc.constant(true), fc.constant([1]))),
  fc.tuple(fc.constantFrom('url', 'sha512'), notAString),
  fc.tuple(fc.constant('expires_at'), badExpiry),
  fc.tuple(fc.constant('disabled'), fc.oneof(fc.constant('true'), fc.constant(1), fc.constant([]))),
  fc.tuple(fc.constant('last_used_at'), fc.oneof(fc.constant(1.5), fc.constant('1'), fc.constant(true))),
  fc.tuple(fc.constantFrom('filters', 'headers'), fc.oneof(spoiledMap, fc.constant('x'), fc.constant([]), fc.constant(1))),
  fc.tuple(fc.constant('metadata'), fc.oneof(
    fc.constant(null), fc.constant('x'), fc.constant([]),
    spoiledMap.map(labels => ({ labels })),
    spoiledMap.map(annotations => ({ annotations })),
    fc.constant({ namespace: 'another-one' }),
    fc.constant({ namespace: 7 }),
    fc.constant({ extra: 'x' }),
    fc.constant({ name: 5 })
  ))
]

/** A JSON body with `__proto__` or `constructor.prototype` spelled into its text. */
const prototypeText = fc.constantFrom(
  '{"__proto__":{"admin":true}}',
  '{"metadata":{"labels":{"__proto__":"x"}}}',
  '{"metadata":{"__proto__":{"namespace":"x"}}}',
  '{"\\u005f_proto__":{}}',
  '{"constructor":{"prototype":{"admin":true}}}',
  '{"metadata":{"labels":{"constructor":{"prototype":{}}}}}',
  '{"username":"u","__proto__":null}'
)

/** Text that is not JSON, or JSON of the wrong shape, or deeply nested. */
const junkText = fc.oneof(
  fc.constantFrom('', ' ', 'null', 'true', '0', '"str"', '[]', '[{}]', '{', '{}}', '{}{}', '{"a":1,}', "{'a':1}", 'undefined', 'NaN',
    '\ufeff{}', ' {} ', '{"username":"a","username":"b"}', '{"metadata":{},"metadata":null}', '\u0000', '{"url":"\u0000"}',
    '{"url":"\\ud800"}', '{"metadata":{"labels":{"a":"\\u0000"}}}'),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.tuple(fc.integer({ min: 1, max: 30_000 }), fc.constantFrom('[', '{"a":', '{"metadata":')).map(([depth, open]) => {
    const close = open === '[' ? ']' : '}'
    const inner = open === '[' ? '' : '1'
    return open.repeat(depth) + inner + close.repeat(depth)
  }),
  fc.tuple(fc.integer({ min: 1, max: 12_000 }), fc.constantFrom('a', 'a\nb', '\u2028')).map(([depth, key]) =>
    `{"metadata":{"labels":{${JSON.stringify(key)}:${'{"x":'.repeat(depth)}"deep"${'}'.repeat(depth)}}}}`),
  prototypeText
)

/** A body near bodyLimit (64 KiB): some just under, some over (413). */
const hugeBody = fc.tuple(
  fc.integer({ min: 60_000, max: 70_000 }),
  fc.constantFrom('a', '\u00e9', '\u{1F600}', '\u0000', '"'),
  fc.constantFrom('url', 'label', 'username', 'unknown')
).map(([size, char, where]): BodyPlan => {
  const text = char.repeat(Math.ceil(size / JSON.stringify(char).length))
  if (where === 'url') return { kind: 'json', value: { url: text } }
  if (where === 'label') return { kind: 'json', value: { metadata: { labels: { big: text } } } }
  if (where === 'username') return { kind: 'json', value: { username: text } }
  return { kind: 'json', value: { [text.slice(0, 1000)]: text } }
})

/** JSON that is not an object: only an empty body means "a key with defaults". */
const notAnObject = fc.constantFrom('null', 'true', '0', '"{}"', '[]', '[{}]').map((text): BodyPlan => ({ kind: 'raw', text }))

/** A POST body: mostly valid, often spoiled, sometimes junk or huge. */
export function createBody (ns: string): fc.Arbitrary<BodyPlan> {
  const valid = validCreateBody(ns)
  return fc.oneof(
    { weight: 3, arbitrary: fc.constant<BodyPlan>({ kind: 'none' }) },
    { weight: 1, arbitrary: notAnObject },
    { weight: 12, arbitrary: valid.map((value): BodyPlan => ({ kind: 'json', value })) },
    { weight: 4, arbitrary: fc.tuple(valid, fc.oneof(...spoilers)).map(([value, [field, bad]]): BodyPlan => ({ kind: 'json', value: { ...value, [field]: bad } })) },
    { weight: 2, arbitrary: junkText.map((text): BodyPlan => ({ kind: 'raw', text })) },
    { weight: 1, arbitrary: hugeBody }
  )
}

const same = (field: Same['$same']): Same => ({ $same: field })

/** A merge patch: mostly valid (null removes), often spoiled, sometimes junk or huge. */
export const patchBody: fc.Arbitrary<BodyPlan> = (() => {
  const nullableMap = fc.array(fc.tuple(mapKey, fc.option(anyString)), { maxLength: 3 }).map(entries => Object.fromEntries(entries))
  // Immutable fields may appear with their current value.
  const valid = fc.record({
    metadata: fc.record({
      labels: fc.option(nullableMap),
      annotations: fc.option(nullableMap),
      name: fc.constant(same('metadata.name')),
      namespace: fc.constant(same('metadata.namespace')),
      created_by: fc.constant(same('metadata.created_by'))
    }, { requiredKeys: [] }),
    username: fc.oneof(
      { weight: 4, arbitrary: fc.constant(SELF) },
      { weight: 1, arbitrary: fc.constantFrom('admin', ...USERS) },
      { weight: 1, arbitrary: fc.string({ minLength: 1, maxLength: 12 }) }
    ),
    created_at: fc.constant(same('created_at')),
    url: fc.option(anyString),
    sha512: fc.option(anyString),
    filters: fc.option(nullableMap),
    headers: fc.option(nullableMap),
    expires_at: fc.oneof({ weight: 1, arbitrary: futureExpiry }, { weight: 2, arbitrary: fc.constant(null) }),
    disabled: fc.option(fc.boolean())
  }, { requiredKeys: [] })
  // What a merge patch may not do: change an immutable field, remove the metadata or the username.
  const immutable = fc.oneof(
    fc.record({ metadata: fc.record({ name: fc.oneof(anyString, fc.constant(null)) }) }),
    fc.record({ metadata: fc.record({ namespace: fc.oneof(anyString, fc.constant(null)) }) }),
    fc.record({ metadata: fc.record({ created_by: fc.oneof(anyString, fc.constant(null)) }) }),
    fc.record({ created_at: fc.oneof(fc.integer(), fc.constant(null)) }),
    fc.record({ last_used_at: fc.integer() }),
    fc.constantFrom({ metadata: null }, { username: null })
  )
  return fc.oneof(
    { weight: 1, arbitrary: fc.constant<BodyPlan>({ kind: 'none' }) },
    { weight: 1, arbitrary: notAnObject },
    { weight: 16, arbitrary: valid.map((value): BodyPlan => ({ kind: 'json', value })) },
    { weight: 2, arbitrary: fc.tuple(valid, immutable).map(([value, change]): BodyPlan => ({ kind: 'json', value: { ...value, ...change } })) },
    { weight: 3, arbitrary: fc.tuple(valid, fc.oneof(...spoilers)).map(([value, [field, bad]]): BodyPlan => ({ kind: 'json', value: { ...value, [field]: bad } })) },
    { weight: 2, arbitrary: junkText.map((text): BodyPlan => ({ kind: 'raw', text })) },
    { weight: 1, arbitrary: hugeBody }
  )
})()

// ---------------------------------------------------------------------------
// Content types and headers

const contentType = fc.oneof(
  { weight: 30, arbitrary: fc.constant(undefined) },
  { weight: 3, arbitrary: fc.constantFrom('application/json; charset=utf-8', 'APPLICATION/JSON', 'application/json ; x=y', 'application/merge-patch+json', 'Application/Merge-Patch+JSON') },
  { weight: 2, arbitrary: fc.constantFrom<string | null>(null, 'text/plain', 'application/jsonp', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', '*/*', 'application/*', 'text/json', 'application/json-patch+json') },
  { weight: 1, arbitrary: fc.oneof(fc.string({ maxLength: 30 }), fc.constantFrom('application/json,text/plain', 'application/json; charset=utf-16le', ';', 'application/json\u0000', 'application//json', ' application/json')) }
)

const headerName = fc.oneof(
  fc.constantFrom('x-forwarded-for', 'accept', 'accept-encoding', 'x-request-id', 'if-none-match', 'if-match', 'cookie', 'origin', 'x-http-method-override', 'user-agent', 'range', 'expect', 'content-encoding', 'forwarded'),
  fc.stringMatching(/^[a-z][a-z0-9-]{0,15}$/)
)
// Printable ASCII and latin-1: what an HTTP client can put on the wire (inject does not check).
const headerValue = fc.oneof(
  fc.string({ unit: fc.integer({ min: 0x20, max: 0xff }).map(c => String.fromCharCode(c)), maxLength: 40 }),
  fc.constantFrom('', '*', '"1"', 'W/"1"', 'gzip', '100-continue', '../../etc/passwd', 'GET', '1.2.3.4, 5.6.7.8', 'application/json', 'bytes=0-1')
)
const extraHeaders = fc.oneof(
  { weight: 4, arbitrary: fc.constant({}) },
  { weight: 1, arbitrary: fc.dictionary(headerName, headerValue, { maxKeys: 3 }) }
)

// ---------------------------------------------------------------------------
// Callers

const authRef: fc.Arbitrary<AuthRef> = fc.oneof(
  { weight: 40, arbitrary: fc.constant<AuthRef>({ kind: 'bearer', form: 'plain' }) },
  { weight: 3, arbitrary: fc.constantFrom<AuthRef>({ kind: 'bearer', form: 'lower-scheme' }, { kind: 'bearer', form: 'extra-spaces' }) },
  { weight: 10, arbitrary: fc.nat().map((pick): AuthRef => ({ kind: 'key', user: 'admin', pick })) },
  { weight: 20, arbitrary: fc.nat().map((pick): AuthRef => ({ kind: 'key', user: 'fuzzer', pick })) },
  { weight: 7, arbitrary: fc.nat().map((pick): AuthRef => ({ kind: 'key', user: 'other', pick })) },
  {
    weight: 12,
    arbitrary: fc.record({
      kind: fc.constant('junk' as const),
      form: fc.constantFrom<JunkAuth>('none', 'garbage', 'bearer-wrong', 'bearer-flipped', 'key-flipped', 'key-forged', 'key-revoked', 'basic', 'scheme-only', 'tab-separated'),
      pick: fc.nat(),
      text: fc.string({ unit: fc.integer({ min: 0x21, max: 0x7e }).map(c => String.fromCharCode(c)), minLength: 1, maxLength: 60 })
    })
  }
)

// ---------------------------------------------------------------------------
// Paths

/** A namespace segment: mostly ours, sometimes another valid one, sometimes not a name at all. */
const nsSegment = fc.oneof(
  { weight: 14, arbitrary: fc.constant(NAMESPACES[0]) },
  { weight: 5, arbitrary: fc.constant(NAMESPACES[1]) },
  { weight: 1, arbitrary: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,8}$/) },
  { weight: 2, arbitrary: fc.constantFrom('', '-x', '.hidden', '_x', 'a'.repeat(63), 'a'.repeat(64), 'a'.repeat(101), '..', '.', '%2E%2E', 'fuzz%2Ffuzz-b', 'fuzz%00', '%00', 'fuzz%20', '%C3%A9t%C3%A9', '%zz', '%', 'fuzz%2F..%2Fother', 'a%252F', 'fu zz', 'ü', 'fuzz?x', 'fuzz;x') }
)

const segmentMutation: fc.Arbitrary<SegmentMutation> = fc.oneof(
  fc.tuple(fc.constant('append' as const), fc.constantFrom('x', '%00', '%2F', '%2Fx', '/', '/..', '.', '%20', '%', '%zz', '%C3%A9', '~', '+', ';', '%3B', '%0A')),
  fc.tuple(fc.constant('prepend' as const), fc.constantFrom('..%2F', '.', '-', '%2E', '~', '%00', '_')),
  fc.tuple(fc.constant('truncate' as const), fc.integer({ min: 0, max: 36 })),
  fc.tuple(fc.constant('upper' as const)),
  fc.tuple(fc.constant('repeat' as const), fc.constantFrom(63, 64, 100, 101, 2000)),
  fc.tuple(fc.constant('replace-char' as const), fc.integer({ min: 0, max: 35 }), fc.constantFrom('g', 'G', '_', '.', '%2F', '%00', '0'))
)

const nameRef: fc.Arbitrary<NameRef> = fc.oneof(
  { weight: 8, arbitrary: fc.nat().map((pick): NameRef => ({ kind: 'live', pick })) },
  { weight: 6, arbitrary: fc.nat().map((pick): NameRef => ({ kind: 'own', pick })) },
  { weight: 1, arbitrary: fc.nat().map((pick): NameRef => ({ kind: 'elsewhere', pick })) },
  { weight: 1, arbitrary: fc.nat().map((pick): NameRef => ({ kind: 'revoked', pick })) },
  { weight: 1, arbitrary: fc.uuid({ version: 4 }).map((segment): NameRef => ({ kind: 'literal', segment })) },
  { weight: 1, arbitrary: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,20}$/).map((segment): NameRef => ({ kind: 'literal', segment })) },
  { weight: 4, arbitrary: fc.tuple(fc.nat(), segmentMutation).map(([pick, mutation]): NameRef => ({ kind: 'mutated', pick, mutation })) }
)

// ---------------------------------------------------------------------------
// Query strings

const limitValue = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 1, max: 5 }).map(String) },
  { weight: 1, arbitrary: fc.constantFrom('0', '', '00', '007', '999', '1000', '1001', '99999999999999999999999') },
  { weight: 2, arbitrary: fc.constantFrom('-1', '1.5', '1e3', 'abc', '%20 1', '0x10', '%00', '%C3%A9', '+1', '1%2C2', 'Infinity', 'NaN', '%zz') }
)

const forgedRev = fc.constantFrom<ForgedRev>('current', 'current', 'one', 'future', 'zero', 'negative', 'huge', 'float', 'string')
const forgedStart = fc.constantFrom<ForgedStart>('own', 'own', 'own-nul', 'own-high', 'namespace-only', 'other', 'slash', 'dotdot', 'digests', 'empty', 'prefix-of-own')
const tokenMutation: fc.Arbitrary<TokenMutation> = fc.oneof(
  fc.tuple(fc.constant('flip' as const), fc.nat()),
  fc.tuple(fc.constant('truncate' as const), fc.nat()),
  fc.tuple(fc.constant('append' as const), fc.constantFrom('A', '=', '==', '%00', '.', '%2F', 'x'.repeat(1100))),
  fc.tuple(fc.constant('pad' as const))
)

const continueValue: fc.Arbitrary<ValueRef> = fc.oneof(
  { weight: 6, arbitrary: fc.nat().map((pick): ValueRef => ({ kind: 'token', pick, sameNamespace: true })) },
  { weight: 1, arbitrary: fc.nat().map((pick): ValueRef => ({ kind: 'token', pick, sameNamespace: false })) },
  { weight: 2, arbitrary: fc.tuple(fc.nat(), tokenMutation).map(([pick, mutation]): ValueRef => ({ kind: 'token', pick, sameNamespace: true, mutation })) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('forged' as const), rev: forgedRev, start: forgedStart }) },
  { weight: 1, arbitrary: fc.constantFrom<ValueRef>({ kind: 'forged', rev: 'current', start: 'own', extra: { v: 2 } }, { kind: 'forged', rev: 'current', start: 'own', extra: { x: 1 } }, { kind: 'forged', rev: 'current', start: 'own', extra: { start: 7 } }) },
  { weight: 2, arbitrary: fc.oneof(fc.constantFrom('', 'x', '%00', 'eyJ2IjoxfQ', 'e30', 'bnVsbA', 'W10', '%zz', 'a b', '-_-_', '===='), fc.base64String({ maxLength: 40 })).map((text): ValueRef => ({ kind: 'literal', text: encodeURIComponent(text) })) }
)

/** `labelSelector=...` or `fieldSelector=...`, from the oracle's table (each with its meaning there). */
const selectorValue: fc.Arbitrary<[string, ValueRef]> = fc.constantFrom(...Object.keys(SELECTORS)).map(entry => {
  const eq = entry.indexOf('=')
  return [entry.slice(0, eq), { kind: 'literal', text: encodeURIComponent(entry.slice(eq + 1)) }]
})

const listQuery: fc.Arbitrary<Array<[string, ValueRef]>> = fc.tuple(
  fc.option(limitValue, { freq: 2 }),
  fc.option(continueValue, { freq: 2 }),
  fc.oneof({ weight: 3, arbitrary: fc.constant<Array<[string, ValueRef]>>([]) }, { weight: 1, arbitrary: fc.array(selectorValue, { minLength: 1, maxLength: 2 }) }),
  fc.oneof(
    { weight: 8, arbitrary: fc.constant<Array<[string, ValueRef]>>([]) },
    {
      weight: 1,
      arbitrary: fc.constantFrom<Array<[string, ValueRef]>>(
        [['limit', { kind: 'literal', text: '1' }]], // a second limit: an array
        [['continue', { kind: 'literal', text: 'x' }]],
        [['foo', { kind: 'literal', text: 'bar' }]],
        [['labelSelecter', { kind: 'literal', text: 'team%3D%3Da' }]],
        [['username', { kind: 'literal', text: 'fuzzer' }]],
        [['__proto__', { kind: 'literal', text: 'x' }]],
        [['constructor', { kind: 'literal', text: 'x' }]],
        [['limit[]', { kind: 'literal', text: '1' }]]
      )
    }
  )
).map(([limit, cont, selectors, extra]) => {
  const query: Array<[string, ValueRef]> = []
  if (limit !== null) query.push(['limit', { kind: 'literal', text: limit }])
  if (cont !== null) query.push(['continue', cont])
  return [...query, ...selectors, ...extra]
})

const ifMatch: fc.Arbitrary<IfMatchRef | undefined> = fc.oneof(
  { weight: 14, arbitrary: fc.constant(undefined) },
  { weight: 2, arbitrary: fc.constant<IfMatchRef>({ kind: 'current' }) },
  { weight: 1, arbitrary: fc.constant<IfMatchRef>({ kind: 'star' }) },
  { weight: 1, arbitrary: fc.nat().map((pick): IfMatchRef => ({ kind: 'stale', pick })) },
  { weight: 1, arbitrary: fc.constant<IfMatchRef>({ kind: 'list-with-current' }) },
  { weight: 1, arbitrary: fc.constantFrom('', '"1"', 'W/"1"', '"abc"', '*, "1"', '"', '0').map((text): IfMatchRef => ({ kind: 'literal', text })) }
)

// ---------------------------------------------------------------------------
// Requests

const base = {
  ns: nsSegment,
  plural: fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  auth: authRef,
  contentType,
  headers: extraHeaders
}

const listPlan = fc.record({ ...base, query: listQuery, method: fc.oneof({ weight: 9, arbitrary: fc.constant<Method>('GET') }, { weight: 1, arbitrary: fc.constant<Method>('HEAD') }) })
  .map((p): Plan => ({ ...p, op: 'list', body: { kind: 'none' } }))

/** GET /apikeys: every namespace (`ns` only picks the namespace whose tokens it reuses). */
const listAllPlan = fc.record({ ...base, query: listQuery, method: fc.oneof({ weight: 9, arbitrary: fc.constant<Method>('GET') }, { weight: 1, arbitrary: fc.constant<Method>('HEAD') }) })
  .map((p): Plan => ({ ...p, op: 'list', rawPath: '/apikeys', body: { kind: 'none' } }))

const createPlan = base.ns.chain(ns => fc.record({ ...base, ns: fc.constant(ns), body: createBody(ns) }))
  .map((p): Plan => ({ ...p, op: 'create', method: 'POST', query: [] }))

const getPlan = fc.record({ ...base, name: nameRef, method: fc.oneof({ weight: 9, arbitrary: fc.constant<Method>('GET') }, { weight: 1, arbitrary: fc.constant<Method>('HEAD') }) })
  .map((p): Plan => ({ ...p, op: 'get', query: [], body: { kind: 'none' } }))

const patchPlan = fc.record({ ...base, name: nameRef, body: patchBody, ifMatch })
  .map((p): Plan => ({ ...p, op: 'patch', method: 'PATCH', query: [] }))

/** A rotation's body: mostly none or a grace of 0 (the old secret ends at once), some graces, some a 400. */
const rotateBody = fc.oneof(
  { weight: 4, arbitrary: fc.constant<BodyPlan>({ kind: 'none' }) },
  { weight: 4, arbitrary: fc.constantFrom<unknown>({}, { grace_seconds: 0 }, { grace_seconds: 2 }, { grace_seconds: 3600 }).map((value): BodyPlan => ({ kind: 'json', value })) },
  {
    weight: 1,
    arbitrary: fc.constantFrom<unknown>({ grace_seconds: -1 }, { grace_seconds: 604801 }, { grace_seconds: 1.5 }, { grace_seconds: '3' }, { grace_seconds: null }, { grace: 1 }, [], null, 'x')
      .map((value): BodyPlan => ({ kind: 'json', value }))
  }
)

const rotatePlan = fc.record({ ...base, name: nameRef, body: rotateBody, ifMatch })
  .map((p): Plan => ({ ...p, op: 'rotate', method: 'POST', query: [], tail: ['rotate'] }))

const deletePlan = fc.record({ ...base, name: nameRef })
  .map((p): Plan => ({ ...p, op: 'delete', method: 'DELETE', query: [], body: { kind: 'none' } }))

/** DELETE /apikeys?username=: an admin revokes every key of a user (rarely: it empties the model). */
const revokeAllPlan = fc.record({
  ...base,
  method: fc.oneof({ weight: 4, arbitrary: fc.constant<Method>('DELETE') }, { weight: 1, arbitrary: fc.constantFrom<Method>('GET', 'POST', 'PATCH', 'PUT', 'HEAD', 'OPTIONS') }),
  username: fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom('other', 'fuzzer', 'admin') },
    { weight: 2, arbitrary: anyString.filter(u => u !== '') },
    { weight: 1, arbitrary: fc.constantFrom(null, '', 'y'.repeat(257)) }
  ),
  twice: fc.integer({ min: 0, max: 5 }).map(n => n === 0)
}).map(({ username, twice, ...p }): Plan => {
  const value = (u: string): [string, ValueRef] => ['username', { kind: 'literal', text: encodeURIComponent(u.replace(LONE_SURROGATE, '\ufffd')) }]
  const query = username === null ? [] : twice ? [value(username), value('x')] : [value(username)]
  return { ...p, op: 'revoke-all', rawPath: '/apikeys', query, body: { kind: 'none' } }
})

/** Path pieces for junk routes; `{name}` becomes a live key's name. */
const junkSegment = fc.oneof(
  fc.constantFrom('namespaces', 'fuzz', 'apikey', 'apikeys', '{name}', '{name}', '', '.', '..', '%2E%2E', '%2F', '%00', 'x', 'api', 'core', 'v2', 'apikey-digests', 'keys', '%C3%A9', '*', ':namespace'),
  fc.stringMatching(/^[A-Za-z0-9._~-]{1,8}$/)
)

const junkPlan = fc.record({
  ...base,
  method: fc.constantFrom<Method>('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'),
  name: nameRef,
  tail: fc.array(junkSegment, { maxLength: 3 }),
  shape: fc.constantFrom('collection', 'item', 'deeper', 'random', 'outside'),
  segments: fc.array(junkSegment, { minLength: 0, maxLength: 6 }),
  query: fc.oneof({ weight: 3, arbitrary: fc.constant<Array<[string, ValueRef]>>([]) }, { weight: 1, arbitrary: listQuery }),
  body: fc.oneof({ weight: 2, arbitrary: fc.constant<BodyPlan>({ kind: 'none' }) }, { weight: 1, arbitrary: createBody('fuzz') }, { weight: 1, arbitrary: patchBody }),
  ifMatch
}).map(({ shape, segments, tail, ...p }): Plan => {
  if (shape === 'collection') return { ...p, op: 'junk', name: undefined }
  if (shape === 'item') return { ...p, op: 'junk' }
  if (shape === 'deeper') return { ...p, op: 'junk', tail: tail.length === 0 ? ['x'] : tail }
  const rawPath = `/${segments.join('/')}`
  return { ...p, op: 'junk', rawPath: shape === 'outside' ? `/..${rawPath}` : rawPath }
})

/** One request of the fuzz: mostly well-formed operations (so that a good share are 2xx), some junk. */
export const planArb: fc.Arbitrary<Plan> = fc.oneof(
  { weight: 5, arbitrary: listPlan },
  { weight: 2, arbitrary: listAllPlan },
  { weight: 8, arbitrary: createPlan },
  { weight: 6, arbitrary: getPlan },
  { weight: 7, arbitrary: patchPlan },
  { weight: 3, arbitrary: deletePlan },
  { weight: 3, arbitrary: rotatePlan },
  { weight: 3, arbitrary: junkPlan },
  { weight: 1, arbitrary: fc.oneof({ weight: 1, arbitrary: revokeAllPlan }, { weight: 9, arbitrary: getPlan }) }
)

/** Raw paths for a real socket, which sends them as they are: `..`, `%2F`, `%00`, overlong names. */
export const socketSegment = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('..', '.', '%2E%2E', '%2e.', '%2F', '..%2F..', '%00', 'x%00', '%2Fapikey-digests', '', '%25', '%zz', '%', '%C0%AE', '%ff', '%E2%80%A8', 'a;b', '%3B') },
  { weight: 1, arbitrary: fc.constantFrom(63, 64, 100, 101, 200, 5000).map(n => 'a'.repeat(n)) },
  { weight: 2, arbitrary: fc.stringMatching(/^[A-Za-z0-9._~-]{1,12}$/) },
  { weight: 3, arbitrary: fc.constant('{name}') }
)
