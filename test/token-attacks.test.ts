// Continue tokens under attack (issue 4, item 2; SPEC "Pagination"). Real Sensu-Continue tokens of
// namespace `dev`, and of its neighbours in etcd's byte order (`de/` and `dev.x/` sort just before
// `dev/`, `dev0/` and `dev2/` just after), are mutated and forged by fast-check and sent to `dev`.
// Each answer is judged against a model that decodes the token on its own and reads etcd directly
// at the token's revision:
// - a token the SPEC calls invalid is a 400 `{ message, code: 1 }`;
// - a compacted revision is a 410 `{ message, code: 7 }`, and nothing else is;
// - a token that still decodes to a position inside `dev/` is a 200 holding exactly the page etcd
//   holds there (for a non-admin, only the caller's keys), whose Sensu-Continue carries on at the
//   same revision; a few such tokens the server may also refuse (see `lenient` in judgeToken);
// - never a 5xx, and no answer carries another namespace's key names (nor, for a non-admin,
//   another user's), an etcd key path, a digest or a secret, in its body or headers.
// test/pagination.test.ts has the hand-made table of bad tokens; this file is the generated side.
// FUZZ_RUNS raises the runs of each property (at least 300); FUZZ_SEED sets fast-check's seed (key
// names are new UUIDs each run, so a failure also prints its token and answer in full).
import t, { type Test } from 'tap'
import fc from 'fast-check'
import { isDeepStrictEqual } from 'node:util'
import type { IRequestOp } from 'etcd3'
import { sharedEtcd, dedicatedEtcd, type EtcdHandle } from './helpers/etcd.js'
import { adminAuth, buildApp, keyAuth, type Answer, type TestApp } from './helpers/app.js'
import { byteOrder, listPage, walk, type Key } from './helpers/list.js'
import { checkError } from './helpers/assert.js'
import { digestSecret, generateSecret } from '../lib/keys/secrets.js'

const RUNS = Math.max(300, Number(process.env.FUZZ_RUNS) || 0)
const SEED = process.env.FUZZ_SEED === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(process.env.FUZZ_SEED)
t.comment(`fast-check: ${RUNS} runs per property, seed ${SEED} (FUZZ_RUNS, FUZZ_SEED)`)

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

// ---------------------------------------------------------------------------
// The world: `dev` and its neighbours, each with keys whose names are known

const NS = 'dev'
const NEIGHBOURS = ['de', 'dev.x', 'dev0', 'dev2']
type Caller = 'admin' | 'bob' | 'carol'
const CALLERS: Caller[] = ['admin', 'bob', 'carol']

/**
 * Keys written straight into etcd with names of our choosing: some sort before every UUID, some
 * after. No name is part of another, so that finding one in an answer means that key leaked.
 */
const HAND_MADE: Record<string, Array<{ name: string, username: string }>> = {
  dev: [
    { name: '0-dev-first', username: 'admin' },
    { name: 'Zulu-dev', username: 'admin' },
    { name: 'bob.raw-dev', username: 'bob' },
    { name: 'zzzz.dev-last', username: 'admin' }
  ],
  dev2: [
    { name: '0-dev2-first', username: 'admin' },
    { name: 'dev2-canary', username: 'bob' },
    { name: 'zzzz.dev2-last', username: 'bob' }
  ],
  de: [{ name: 'de-canary', username: 'bob' }],
  'dev.x': [{ name: 'dev.x-canary', username: 'admin' }],
  dev0: [{ name: 'dev0-canary', username: 'bob' }]
}

interface World {
  app: TestApp
  /** `<root>/apikeys/` */
  records: string
  /** Every key of `dev` as the API shows it, by name. */
  dev: Map<string, Key>
  /** The username of every key dev ever held (two were deleted: older revisions hold them). */
  owners: Map<string, string>
  /** Names of the keys of every other namespace. */
  foreign: string[]
  /** The etcd root, every digest and every secret: never in an answer. */
  secret: string[]
  auth: Record<Caller, string>
  /** Real Sensu-Continue headers: of `dev` for the admin and for bob, and of the neighbours. */
  tokens: { dev: string[], bob: string[], foreign: string[] }
}

const json = (value: unknown) => JSON.stringify(value)
const encode = (text: string) => Buffer.from(text, 'utf8').toString('base64url')
const decode = (token: string) => Buffer.from(token, 'base64url').toString('utf8')

async function seedWorld (t: Test, etcd: EtcdHandle): Promise<World> {
  const app = await buildApp(t, etcd)
  const bob = await app.createKey(NS, { username: 'bob' })
  const carol = await app.createKey('dev2', { username: 'carol' })
  const made = await Promise.all([
    ...Array.from({ length: 9 }, () => app.createKey(NS)),
    ...Array.from({ length: 3 }, () => app.createKey(NS, { username: 'bob' })),
    ...NEIGHBOURS.flatMap(ns => [app.createKey(ns), app.createKey(ns, { username: 'bob' })])
  ])
  const secrets = [bob, carol, ...made].map(k => k.secret)

  // The hand-made keys copy the stored format of a key the API made, as seedRaw does.
  const template = JSON.parse(await app.etcd.get(`${app.root}/apikeys/dev2/${carol.name}`).string() ?? 'null')
  const entry = await app.etcd.get(`${app.root}/apikey-digests/${digestSecret(carol.secret)}`).string()
  if (template?.key_sha256 !== digestSecret(carol.secret) || entry !== `dev2/${carol.name}`) {
    throw new Error(`the stored format is not what this test copies: ${json(template)} / ${entry}`)
  }
  const ops: IRequestOp[] = []
  for (const [ns, keys] of Object.entries(HAND_MADE)) {
    for (const { name, username } of keys) {
      const secret = generateSecret('sak_')
      const digest = digestSecret(secret)
      secrets.push(secret)
      const record = { ...template, metadata: { ...template.metadata, name, namespace: ns }, username, key_sha256: digest }
      ops.push(
        { request_put: { key: Buffer.from(`${app.root}/apikeys/${ns}/${name}`), value: Buffer.from(json(record)) } },
        { request_put: { key: Buffer.from(`${app.root}/apikey-digests/${digest}`), value: Buffer.from(`${ns}/${name}`) } }
      )
    }
  }
  await app.etcd.kv.txn({ compare: [], success: ops, failure: [] })

  const auth = { admin: adminAuth, bob: keyAuth(bob.secret), carol: keyAuth(carol.secret) }
  const tokensOf = async (ns: string, limits: number[], caller: Caller = 'admin') => {
    const tokens: string[] = []
    for (const limit of limits) {
      for (const token of (await walk(app, ns, limit, { auth: auth[caller] })).tokens) if (token !== undefined) tokens.push(token)
    }
    return tokens
  }
  // A history, so that real tokens name different revisions and old revisions hold other keys:
  // tokens of dev at limits 1 and 2; a key of the admin's and one of bob's created, a key of bob's
  // patched; tokens at limits 3 and 5, and bob's; then the two new keys deleted.
  const early = await tokensOf(NS, [1, 2])
  const gone = [await app.createKey(NS), await app.createKey(NS, { username: 'bob' })]
  secrets.push(...gone.map(k => k.secret))
  const patched = await app.call({ method: 'PATCH', path: `/namespaces/${NS}/apikey/${made[9].name}`, body: { metadata: { labels: { patched: 'yes' } } } })
  if (patched.statusCode !== 200 || made[9].resource.username !== 'bob') throw new Error(`patch failed: ${patched.statusCode} ${patched.body}`)
  const later = await tokensOf(NS, [3, 5])
  const bobs = await tokensOf(NS, [1, 2], 'bob')
  for (const { name } of gone) {
    const res = await app.call({ method: 'DELETE', path: `/namespaces/${NS}/apikey/${name}` })
    if (res.statusCode !== 204) throw new Error(`delete failed: ${res.statusCode}`)
  }
  const foreignTokens = [
    ...(await Promise.all(NEIGHBOURS.map(ns => tokensOf(ns, [1])))).flat(),
    ...await tokensOf('dev2', [1], 'carol'),
    ...await tokensOf('dev2', [1], 'bob')
  ]

  // What etcd holds is the truth the answers are judged by.
  const records = `${app.root}/apikeys/`
  const stored = await app.etcd.getAll().prefix(records).strings()
  const dev = new Map<string, Key>()
  const foreign: string[] = []
  for (const [etcdKey, value] of Object.entries(stored)) {
    const [ns, name] = etcdKey.slice(records.length).split('/')
    if (ns === NS) dev.set(name, publicKey(value))
    else foreign.push(name)
  }
  const owners = new Map([...dev].map(([name, key]) => [name, key.username as string]))
  for (const { name, resource } of gone) owners.set(name, resource.username)
  const digests = (await app.etcd.getAll().prefix(`${app.root}/apikey-digests/`).keys()).map(k => k.split('/').at(-1)!)
  const names = [...owners.keys(), ...foreign]
  if (dev.size !== 17 || owners.size !== 19 || foreign.length !== 15 || digests.length !== 32) throw new Error('the world is not as seeded')
  if (names.some(a => names.some(b => a !== b && b.includes(a)))) throw new Error('a key name is part of another')
  return {
    app,
    records,
    dev,
    owners,
    foreign,
    secret: [app.root, ...new Set([...digests, ...secrets.map(digestSecret)]), ...secrets],
    auth,
    tokens: { dev: [...early, ...later], bob: bobs, foreign: foreignTokens }
  }
}

/** A stored record as the API shows it: without its digest. */
function publicKey (value: string): Key {
  const { key_sha256: _digest, ...key } = JSON.parse(value)
  return key
}

// ---------------------------------------------------------------------------
// The model: what the SPEC says of a token, and what etcd holds where it points

type Verdict =
  | { kind: 'none' }
  | { kind: 'bad', why: string }
  /** A position inside dev/. `lenient`: why the server may refuse it all the same. */
  | { kind: 'good', rev: number, start: string, lenient: string[] }

const BASE64URL = /^[A-Za-z0-9_-]+$/

/** The SPEC's reading of a token, written apart from lib/continue-token.ts. */
function judgeToken (text: string | undefined): Verdict {
  if (text === undefined || text === '') return { kind: 'none' }
  const bad = (why: string): Verdict => ({ kind: 'bad', why })
  if (!BASE64URL.test(text)) return bad('not base64url')
  const lenient: string[] = []
  if (text.length > 1024) lenient.push('over 1,024 characters')
  const bytes = Buffer.from(text, 'base64url')
  // Node decodes a dangling character or non-zero padding bits without a word.
  if (bytes.toString('base64url') !== text) lenient.push('non-canonical base64url')
  let source: string
  try {
    source = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes)
  } catch {
    source = bytes.toString('utf8')
    lenient.push('not UTF-8')
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(source)
  } catch {
    return bad('not JSON')
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return bad('not a JSON object')
  if (Object.keys(parsed).sort().join() !== 'rev,start,v') return bad('fields other than v, rev, start')
  const { v, rev, start } = parsed as Record<string, unknown>
  if (v !== 1) return bad('v is not 1')
  if (typeof rev !== 'number' || !Number.isSafeInteger(rev) || rev < 1) return bad('rev is not a positive integer')
  if (typeof start !== 'string') return bad('start is not a string')
  if (!start.startsWith(`${NS}/`)) return bad(`start outside ${NS}/`)
  // Names hold no `/`: a start with one after the namespace is no position a server would make.
  if (start.includes('/', NS.length + 1)) lenient.push('a / after dev/')
  return { kind: 'good', rev, start, lenient }
}

type Limit = number | string | undefined

type Expected =
  | { status: 400, why: string, future?: true }
  | { status: 410, why: string, lenient: string[] }
  | {
    status: 200
    why: string
    items: Key[]
    /** The Sensu-Continue the page must carry: at `rev` (at least `rev` for a first page). */
    next?: { rev: number, start: string }
    first: boolean
    lenient: string[]
  }

/** What the answer must be: the verdict, and for a position in dev/ a read of etcd of our own. */
async function expectation (w: World, verdict: Verdict, caller: Caller, limit: Limit): Promise<Expected> {
  if (verdict.kind === 'bad') return { status: 400, why: verdict.why }
  const start = verdict.kind === 'none' ? `${NS}/` : verdict.start
  const revision = verdict.kind === 'none' ? undefined : verdict.rev
  let res
  try {
    res = await w.app.etcd.kv.range({ key: Buffer.from(w.records + start), range_end: Buffer.from(`${w.records}${NS}0`), revision })
  } catch (err) {
    const message = String((err as Error).message)
    // A token the server may refuse all the same (lenient) may be a 400 here too.
    if (/compacted/.test(message)) return { status: 410, why: 'a compacted revision', lenient: verdict.kind === 'good' ? verdict.lenient : [] }
    if (/future revision/.test(message)) return { status: 400, why: 'a revision etcd has not reached', future: true }
    throw err
  }
  const all = res.kvs.map(kv => publicKey(kv.value.toString('utf8')))
  const visible = caller === 'admin' ? all : all.filter(k => k.username === caller)
  const size = Math.min(Number(limit ?? 0), 1000)
  const items = size === 0 ? visible : visible.slice(0, size)
  const last = items.at(-1)
  const more = last !== undefined && all.indexOf(last) < all.length - 1
  const lenient = verdict.kind === 'good' ? verdict.lenient : []
  return {
    status: 200,
    why: verdict.kind === 'none' ? 'no token' : lenient.length > 0 ? `in dev/, ${lenient.join(', ')}` : 'a position in dev/',
    items,
    next: size > 0 && items.length === size && more ? { rev: revision ?? Number(res.header.revision), start: `${NS}/${last.metadata.name}\u0000` } : undefined,
    first: verdict.kind === 'none',
    lenient
  }
}

/** What is wrong with an answer, or undefined. */
function problemWith (w: World, caller: Caller, expected: Expected, res: Answer): string | undefined {
  const status = res.statusCode
  if (status >= 500) return `a ${status}`
  const header = res.headers['sensu-continue']
  const seen = [res.body, json(res.headers), typeof header === 'string' ? decode(header) : '']
  const leaked = w.secret.find(s => seen.some(text => text.includes(s)))
  if (leaked !== undefined) return `the answer carries ${leaked === w.app.root ? 'the etcd root' : 'a digest or a secret'}`
  const visible = (name: string) => status === 200 && w.owners.has(name) && (caller === 'admin' || w.owners.get(name) === caller)
  const named = [...w.owners.keys(), ...w.foreign].find(name => !visible(name) && seen.some(text => text.includes(name)))
  if (named !== undefined) return `the answer names key ${named}, of ${w.owners.has(named) ? 'another user' : 'another namespace'}`

  if (status === 200) {
    if (expected.status !== 200) return `a 200, where ${expected.why} is a ${expected.status}`
    let items: unknown
    try {
      items = JSON.parse(res.body)
    } catch {
      return 'a 200 whose body is not JSON'
    }
    if (!Array.isArray(items)) return 'a 200 whose body is not an array'
    for (const item of items as Key[]) {
      const name = item?.metadata?.name
      if (item?.metadata?.namespace !== NS || !w.owners.has(name)) return `a 200 holding ${json(item?.metadata)}`
      if (caller !== 'admin' && item.username !== caller) return `a 200 for ${caller} holding a key of ${item.username}`
    }
    if (!isDeepStrictEqual(items, expected.items)) {
      const names = (keys: Key[]) => json(keys.map(k => k?.metadata?.name))
      return `a 200 that is not the page etcd holds there: ${names(items as Key[])}, not ${names(expected.items)}`
    }
    if (expected.next === undefined) return header === undefined ? undefined : 'a Sensu-Continue on the last page'
    if (typeof header !== 'string') return 'no Sensu-Continue, while keys remain'
    let next: Record<string, unknown>
    try {
      next = JSON.parse(decode(header))
    } catch {
      return `a Sensu-Continue that is no token: ${header}`
    }
    const same = expected.first
      ? typeof next.rev === 'number' && next.rev >= expected.next.rev && isDeepStrictEqual(next, { ...expected.next, v: 1, rev: next.rev })
      : isDeepStrictEqual(next, { v: 1, ...expected.next })
    return same ? undefined : `Sensu-Continue ${json(next)}, not ${json({ v: 1, ...expected.next })}`
  }
  if (status === 400 && !(expected.status === 400 || expected.lenient.length > 0)) {
    return `a 400, where ${expected.why} is a ${expected.status}`
  }
  if (status === 410 && expected.status !== 410) return `a 410, where ${expected.why} is a ${expected.status}`
  if (status !== 400 && status !== 410) return `a ${status}`
  if (!/^application\/json/.test(String(res.headers['content-type']))) return `a ${status} that is not JSON`
  let body: Record<string, unknown>
  try {
    body = JSON.parse(res.body)
  } catch {
    return `a ${status} whose body is not JSON`
  }
  if (Object.keys(body ?? {}).sort().join() !== 'code,message') return `a ${status} whose body is not { message, code }: ${res.body}`
  if (body.code !== (status === 400 ? 1 : 7)) return `a ${status} with code ${body.code}`
  if (typeof body.message !== 'string' || !/\S/.test(body.message)) return `a ${status} without a message`
  return undefined
}

// ---------------------------------------------------------------------------
// Sending a token and keeping count

class Tally {
  readonly statuses = new Map<string, number>()
  readonly reasons = new Map<string, number>()
  count (caller: Caller, status: number, why: string) {
    for (const [map, key] of [[this.statuses, String(status)], [this.statuses, `${caller} ${status}`], [this.reasons, `${status} ${why}`]] as const) {
      map.set(key, (map.get(key) ?? 0) + 1)
    }
  }

  /** Statuses of 500 and above, with their counts. */
  serverErrors (): string[] {
    return [...this.statuses].filter(([k]) => !k.includes(' ') && Number(k) >= 500).map(([k, n]) => `${k}: ${n}`)
  }

  print (t: Test, title: string) {
    const line = (map: Map<string, number>, keys: string[]) => keys.map(k => `${k}: ${map.get(k)}`).join(', ')
    const keys = [...this.statuses.keys()].sort()
    t.comment(`${title}: statuses ${line(this.statuses, keys.filter(k => !k.includes(' ')))}; by caller ${line(this.statuses, keys.filter(k => k.includes(' ')))}`)
    t.comment(`${title}: why ${line(this.reasons, [...this.reasons.keys()].sort())}`)
  }
}

interface Attack { token: string | undefined, caller: Caller, limit: Limit }

/** Sends one token to dev; returns what is wrong with the answer, or undefined. */
async function attack (w: World, tally: Tally, { token, caller, limit }: Attack): Promise<string | undefined> {
  const verdict = judgeToken(token)
  let expected = await expectation(w, verdict, caller, limit)
  const { res } = await listPage(w.app, NS, { token, limit, auth: w.auth[caller] })
  // With an etcd shared with others (ETCD_ENDPOINTS), the revision may have come meanwhile.
  if (res.statusCode === 200 && expected.status === 400 && expected.future) expected = await expectation(w, verdict, caller, limit)
  // And its periodic compaction (every 5 minutes, SPEC: Containment) may have passed the revision meanwhile.
  if (res.statusCode === 410 && expected.status === 200 && verdict.kind !== 'none') expected = await expectation(w, verdict, caller, limit)
  tally.count(caller, res.statusCode, expected.why)
  const problem = problemWith(w, caller, expected, res)
  if (problem === undefined) return undefined
  const decoded = token === undefined ? '' : json(decode(token))
  return `${problem}\n  token ${json(token)} = ${decoded}\n  caller ${caller}, limit ${limit}, expected ${expected.status} (${expected.why})\n  answer ${res.statusCode} ${res.body.slice(0, 400)}`
}

/** Runs a property; fails `t` with fast-check's report (counterexample, seed, path) if it fails. */
async function property<T> (t: Test, w: World, title: string, arbitrary: fc.Arbitrary<T>, toAttack: (input: T) => Attack) {
  const tally = new Tally()
  const began = Date.now()
  const details = await fc.check(fc.asyncProperty(arbitrary, async input => {
    const problem = await attack(w, tally, toAttack(input))
    if (problem !== undefined) throw new Error(problem)
  }), { numRuns: RUNS, seed: SEED })
  tally.print(t, `${title} (${Date.now() - began} ms)`)
  t.same(tally.serverErrors(), [], `${title}: no 5xx`)
  if (details.failed) t.fail(`${title}:\n${fc.defaultReportMessage(details)}`)
  else t.pass(`${title}: ${details.numRuns} runs`)
  return tally
}

/** Runs fixed attacks; one assertion for all, failing with the first few problems. */
async function every (t: Test, w: World, title: string, attacks: Attack[]) {
  const tally = new Tally()
  const problems: string[] = []
  for (const a of attacks) {
    const problem = await attack(w, tally, a)
    if (problem !== undefined) problems.push(problem)
  }
  tally.print(t, title)
  t.same(tally.serverErrors(), [], `${title}: no 5xx`)
  t.strictSame(problems.slice(0, 3), [], `${title}: ${attacks.length} answers as the model says (${problems.length} not)`)
  return tally
}

// ---------------------------------------------------------------------------
// Arbitraries

const callerArb = fc.constantFrom<Caller>('admin', 'admin', 'bob', 'bob', 'carol')
const limitArb = fc.constantFrom<Limit>(undefined, '0', 1, 1, 2, 2, 3, 5, 1000, '5000')
const B64URL_CHARS = [...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_']
const oneChar = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...B64URL_CHARS) },
  { weight: 2, arbitrary: fc.constantFrom('=', '+', '/', '.', '%', ' ', '\u0000', '~', '\\', 'é', '\u{1F600}') },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) }
)
const interestingBytes = [...'/."\\0123456789-e}{,: '].map(c => c.charCodeAt(0)).concat([0x00, 0x7f, 0x80, 0xc0, 0xef, 0xff])
const oneByte = fc.oneof(fc.constantFrom(...interestingBytes), fc.integer({ min: 0, max: 255 }))

type Edit<T> = { op: 'flip', at: number, bit: number } | { op: 'set' | 'insert', at: number, unit: T } | { op: 'delete', at: number }
function editsOf<T> (unit: fc.Arbitrary<T>, bits: number): fc.Arbitrary<Array<Edit<T>>> {
  const at = fc.nat({ max: 10_000 })
  return fc.array(fc.oneof(
    fc.record({ op: fc.constant('flip' as const), at, bit: fc.integer({ min: 0, max: bits - 1 }) }),
    fc.record({ op: fc.constantFrom('set' as const, 'insert' as const), at, unit }),
    fc.record({ op: fc.constant('delete' as const), at })
  ), { minLength: 1, maxLength: 4 })
}

/** Applies edits to a sequence; positions wrap around its length. */
function applyEdits<T> (units: T[], edits: Array<Edit<T>>, flip: (unit: T, bit: number) => T): T[] {
  const out = [...units]
  for (const edit of edits) {
    if (edit.op === 'insert') {
      out.splice(edit.at % (out.length + 1), 0, edit.unit)
      continue
    }
    if (out.length === 0) continue
    const i = edit.at % out.length
    if (edit.op === 'flip') out[i] = flip(out[i], edit.bit)
    else if (edit.op === 'set') out[i] = edit.unit
    else out.splice(i, 1)
  }
  return out
}

/** Forged tokens: JSON assembled field by field (duplicates, `__proto__`, odd numbers), in odd encodings. */
function forgedArb (w: World, realRevs: number[], current: number) {
  const devNames = [...w.owners.keys()]
  const digests = w.secret.filter(s => /^[0-9a-f]{64}$/.test(s))
  /** Mostly `usual`, now and then `odd`. */
  const mostly = <T>(usual: fc.Arbitrary<T>, odd: fc.Arbitrary<T>, weight = 6) =>
    fc.oneof({ weight, arbitrary: usual }, { weight: 1, arbitrary: odd })
  const vText = mostly(fc.constant('1'), fc.constantFrom('1.0', '1e0', '10e-1', '0', '2', '-1', '"1"', 'true', 'null', '[1]', '1.5', '01'), 12)
  const revText = fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(...realRevs).map(String) },
    { weight: 2, arbitrary: fc.integer({ min: 1, max: current }).map(String) },
    { weight: 2, arbitrary: fc.integer({ min: current + 1, max: current + 3 }).map(String) },
    { weight: 1, arbitrary: fc.integer({ min: current + 1, max: Number.MAX_SAFE_INTEGER }).map(String) },
    {
      weight: 3,
      arbitrary: fc.constantFrom(
        '0', '-0', '-1', '0.5', '1.5', `${realRevs[0]}.5`, `${realRevs[0]}.0`, `${realRevs[0]}e0`, `${realRevs[0]}0e-1`,
        `${Number.MAX_SAFE_INTEGER}`, `${2 ** 53}`, `${2 ** 53 + 2}`, '1e300', '-1e300', '1e309', '5e-324',
        `${-Number.MAX_SAFE_INTEGER}`, '1E2', '00', `0${realRevs[0]}`, `+${realRevs[0]}`, 'NaN', 'Infinity', '0x10',
        'null', 'true', 'false', '[]', '{}', `"${realRevs[0]}"`, '""', `[${realRevs[0]}]`, `{"rev":${realRevs[0]}}`
      )
    },
    { weight: 1, arbitrary: fc.double().map(json) },
    { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 1 }).map(json) }
  )
  const prefix = fc.constantFrom(
    'dev/', 'dev2/', 'de/', 'dev0/', 'dev.x/', 'dev', 'de', 'dev.', 'dev0', 'DEV/', '', '/', '//',
    '/dev/', './dev/', 'dev//', 'dev/./', '../', '../../', 'apikeys/dev/', '../apikeys/dev/', '../apikey-digests/',
    `${w.app.root}/apikeys/dev/`, `${w.app.root}/apikey-digests/`, '/sensu.io/apikeys/dev/', 'dev\u0000/', '\u0000dev/',
    'dev%2F', 'dev\\', 'dev\u2215'
  )
  /** Pieces that keep a start inside dev/ after `dev/`: no `/`. */
  const inside = fc.oneof(
    fc.constantFrom('..', '.', '\u0000', '\u0001', '\uffff', '\ud800', '\udfff', '\u{10ffff}', '%00', '%2F', '\\', ' ', '\n', '"'),
    fc.constantFrom(...devNames),
    fc.constantFrom(...w.foreign),
    fc.stringMatching(/^[A-Za-z0-9._-]{1,12}$/)
  )
  const piece = fc.oneof(
    inside,
    fc.constantFrom('/', '../', '/..'),
    fc.constantFrom(...NEIGHBOURS.map(ns => `${ns}/`), ...NEIGHBOURS),
    fc.constantFrom(...digests).map(d => `../apikey-digests/${d}`),
    fc.constantFrom(...digests),
    fc.string({ unit: 'binary', maxLength: 6 })
  )
  const end = fc.constantFrom('', '\u0000', '\u0000', '/', '\uffff')
  const realStarts = [...new Set(w.tokens.dev.map(token => JSON.parse(decode(token)).start as string))]
  const start = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(...realStarts) },
    { weight: 3, arbitrary: fc.tuple(fc.array(inside, { maxLength: 3 }), end).map(([pieces, e]) => `dev/${pieces.join('')}${e}`) },
    { weight: 6, arbitrary: fc.tuple(prefix, fc.array(piece, { maxLength: 4 }), end).map(([p, pieces, e]) => p + pieces.join('') + e) },
    {
      weight: 1,
      arbitrary: fc.tuple(prefix, fc.integer({ min: 100, max: 3000 }), fc.constantFrom('a', '/', '\u0000', '..', 'é'))
        .map(([p, n, c]) => p + c.repeat(n))
    },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) }
  )
  const startText = mostly(start.map(json), fc.constantFrom('null', '1', '[]', '{}', '["dev/"]', 'dev/', "'dev/'", '{"start":"dev/"}'), 12)
  const extraName = fc.constantFrom('ns', 'namespace', 'V', 'Rev', 'Start', 'start ', ' v', '__proto__', 'constructor', 'prototype', 'toString', 'limit', 'root', '', 'v\u0000', 'rev\u0000')
  const absent = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { freq: 20 })
  const objectText = fc.record({
    v: absent(vText),
    rev: absent(revText),
    start: absent(startText),
    extra: mostly(fc.constant<Array<[string, string]>>([]), fc.array(fc.tuple(extraName, fc.jsonValue({ maxDepth: 1 }).map(json)), { minLength: 1, maxLength: 2 })),
    twice: mostly(fc.constant<Array<[string, string]>>([]), fc.array(fc.oneof<Array<fc.Arbitrary<[string, string]>>>(
      fc.tuple(fc.constant('v'), vText), fc.tuple(fc.constant('rev'), revText), fc.tuple(fc.constant('start'), startText)
    ), { minLength: 1, maxLength: 2 })),
    rotate: fc.nat({ max: 8 }),
    space: mostly(fc.constant(''), fc.constantFrom(' ', '\n', '\t', '\u00a0', '\ufeff'))
  }).map(({ v, rev, start, extra, twice, rotate, space }) => {
    const fields: Array<[string, string | null]> = [['v', v], ['rev', rev], ['start', start]]
    const entries = [...fields.filter((f): f is [string, string] => f[1] !== null), ...extra, ...twice]
    const turn = rotate % Math.max(entries.length, 1)
    return `${space}{${[...entries.slice(turn), ...entries.slice(0, turn)].map(([k, value]) => `${json(k)}:${value}`).join(',')}}${space}`
  })
  const text = mostly(objectText,
    fc.oneof(fc.jsonValue({ maxDepth: 2 }).map(json), fc.constantFrom('null', '[]', '"dev/"', `[1,${realRevs[0]},"dev/"]`, '', ' ')), 15)
  const encodings: Record<string, (text: string) => string> = {
    base64url: encode,
    'base64url, padded': s => encode(s).padEnd(Math.ceil(encode(s).length / 4) * 4, '='),
    base64: s => Buffer.from(s).toString('base64'),
    'twice base64url': s => encode(encode(s)),
    latin1: s => Buffer.from(s, 'latin1').toString('base64url'),
    utf16le: s => Buffer.from(s, 'utf16le').toString('base64url'),
    hex: s => Buffer.from(s).toString('hex'),
    'the JSON itself': s => s
  }
  const encoding = mostly(fc.constant('base64url'), fc.constantFrom(...Object.keys(encodings)), 12)
  // A digest is never sent in clear: the request's log line would hold it (the leak watch's alarm).
  return fc.tuple(text, encoding).map(([s, how]) => encodings[digests.some(d => s.includes(d)) ? 'base64url' : how](s))
}

// ---------------------------------------------------------------------------
// The properties, on etcd shared by this file's tests

const world = await seedWorld(t, etcd)
const allTokens = [...world.tokens.dev, ...world.tokens.bob, ...world.tokens.foreign]

t.test('the world: real tokens of dev, of bob in dev, and of the neighbours', async t => {
  t.ok(world.tokens.dev.length >= 25 && world.tokens.bob.length >= 4 && world.tokens.foreign.length >= 8,
    `${world.tokens.dev.length} tokens of dev, ${world.tokens.bob.length} of bob's, ${world.tokens.foreign.length} of other namespaces`)
  const revs = new Set([...world.tokens.dev, ...world.tokens.bob].map(token => JSON.parse(decode(token)).rev))
  t.ok(revs.size >= 2, `the tokens of dev name ${revs.size} revisions`)
  const sorted = [...world.dev.keys()].sort(byteOrder)
  t.equal(sorted[0], '0-dev-first', 'a hand-made key sorts first in dev')
  t.equal(sorted.at(-1), 'zzzz.dev-last', 'and one last')
  const all = await walk(world.app, NS, 4)
  t.strictSame(all.items, sorted.map(name => world.dev.get(name)), 'walking dev reads every key as etcd holds it, hand-made ones included')
  const bobs = await walk(world.app, NS, 2, { auth: world.auth.bob })
  t.strictSame(bobs.items.map(k => k.metadata.name), sorted.filter(n => world.dev.get(n)!.username === 'bob'), 'bob walks his five keys')
  const keys = world.app.etcd.getAll().prefix(world.records)
  t.equal((await keys.keys()).filter(k => k.includes('/dev2/') || k.includes('/de/') || k.includes('/dev.x/') || k.includes('/dev0/')).length, 15,
    'the neighbours hold 15 keys')
})

t.test('every real token, as it is, by every caller at every limit', async t => {
  const attacks = allTokens.flatMap(token => CALLERS.flatMap(caller => [2, undefined].map(limit => ({ token, caller, limit }))))
  await every(t, world, 'real tokens', attacks)
})

t.test('real tokens in non-canonical base64url: the same bytes, read or refused, never more', async t => {
  // Node's decoder drops a dangling character and ignores the unused bits of the last one.
  const attacks: Attack[] = []
  for (const token of [...world.tokens.dev, ...world.tokens.bob, ...world.tokens.foreign]) {
    const last = B64URL_CHARS.indexOf(token.at(-1)!)
    const spare = [0, 0, 4, 2][token.length % 4]
    if (spare > 0) attacks.push({ token: token.slice(0, -1) + B64URL_CHARS[last | ((1 << spare) - 1)], caller: 'admin', limit: 2 })
    for (const c of ['A', '_']) attacks.push({ token: token + c, caller: 'bob', limit: 1 })
  }
  const tally = await every(t, world, 'non-canonical', attacks)
  t.comment(`the server's choice for non-canonical tokens: ${[...tally.statuses].filter(([k]) => !k.includes(' ')).map(([k, n]) => `${k}: ${n}`).join(', ')}`)
})

t.test('real tokens with characters of their base64url text flipped, replaced, inserted or deleted', async t => {
  const arb = fc.tuple(fc.constantFrom(...allTokens), editsOf(oneChar, 7), callerArb, limitArb)
  await property(t, world, 'base64url text mutated', arb, ([token, edits, caller, limit]) => ({
    token: applyEdits([...token], edits, (c, bit) => String.fromCodePoint(c.codePointAt(0)! ^ (1 << bit))).join(''),
    caller,
    limit
  }))
})

t.test('real tokens with bytes of their JSON flipped, replaced, inserted or deleted, encoded again', async t => {
  const arb = fc.tuple(fc.constantFrom(...allTokens), editsOf(oneByte, 8), callerArb, limitArb)
  await property(t, world, 'JSON bytes mutated', arb, ([token, edits, caller, limit]) => ({
    token: Buffer.from(applyEdits([...Buffer.from(token, 'base64url')], edits, (b, bit) => b ^ (1 << bit))).toString('base64url'),
    caller,
    limit
  }))
})

t.test('real tokens truncated at every length, as text and as JSON', async t => {
  const picked = [world.tokens.dev[0], world.tokens.dev.at(-1)!, world.tokens.bob[0], ...world.tokens.foreign.filter((_, i) => i % 3 === 0)]
  const attacks: Attack[] = []
  for (const token of picked) {
    const bytes = Buffer.from(token, 'base64url')
    for (let n = 0; n < token.length; n++) attacks.push({ token: token.slice(0, n), caller: CALLERS[n % 3], limit: [2, undefined][n % 2] })
    for (let n = 0; n < bytes.length; n++) attacks.push({ token: bytes.subarray(0, n).toString('base64url'), caller: CALLERS[(n + 1) % 3], limit: [undefined, 1][n % 2] })
  }
  await every(t, world, 'truncated', attacks)
})

t.test('forged tokens: revisions, start keys, fields, encodings', async t => {
  const realRevs = [...new Set(allTokens.map(token => JSON.parse(decode(token)).rev as number))]
  const current = Number((await world.app.etcd.kv.range({ key: Buffer.from('\0') })).header.revision)
  const tally = await property(t, world, 'forged', fc.tuple(forgedArb(world, realRevs, current), callerArb, limitArb),
    ([token, caller, limit]) => ({ token, caller, limit }))
  // The generator reaches each kind of answer, not only refusals.
  for (const kind of ['200 a position in dev/', '400 start outside dev/', '400 a revision etcd has not reached', '400 rev is not a positive integer']) {
    t.ok((tally.reasons.get(kind) ?? 0) > 0, `forged tokens include: ${kind} (${tally.reasons.get(kind) ?? 0})`)
  }
})

t.test('a sweep: each forged revision, start and field set on real tokens, by every caller', async t => {
  const current = Number((await world.app.etcd.kv.range({ key: Buffer.from('\0') })).header.revision)
  const digest = world.secret.find(s => /^[0-9a-f]{64}$/.test(s))!
  const [devName, dev2Name, deName, dotName] = ['Zulu-dev', '0-dev2-first', 'de-canary', 'dev.x-canary']
  const bases = [world.tokens.dev[0], world.tokens.dev.at(-1)!, world.tokens.bob[0]].map(token => JSON.parse(decode(token)))
  const revs: unknown[] = [0, -0, -1, -(2 ** 53), 0.5, 1.5, current + 0.5, current + 1, current + 1000, Number.MAX_SAFE_INTEGER,
    2 ** 53, 1e300, -1e300, String(current), '', null, true, [current], {}]
  const starts = ['dev/', 'dev/..', 'dev/../dev2/', 'dev/\u0000', '\u0000dev/', 'dev2/', `dev2/${dev2Name}`, 'de/', `de/${deName}`,
    'dev0/', 'dev.x/', `dev.x/${dotName}`, '../apikey-digests/', `../apikey-digests/${digest}`, `dev/../../apikey-digests/${digest}`,
    `${world.app.root}/apikeys/dev/`, '/dev/', '', 'dev', `dev/${'a'.repeat(2000)}`, 'é'.repeat(3000), 'dev/x/y', `dev/${devName}`,
    `dev/${devName}\u0000`, 'dev/\uffff', 'dev/\ud800']
  const texts: string[] = []
  for (const base of bases) {
    for (const rev of revs) texts.push(json({ ...base, rev }))
    for (const start of starts) texts.push(json({ ...base, start }))
    const { v, rev, start } = base
    texts.push(json({ v: 2, rev, start }), json({ v: '1', rev, start }), json({ v: 0, rev, start }), json({ rev, start }),
      json({ v, start }), json({ v, rev }), json({}), json({ v, rev, start, ns: 'dev' }), json({ v, rev, start, start2: 'dev2/' }),
      `{"v":1,"rev":${rev},"start":${json(start)},"__proto__":{"start":"dev2/"}}`, `{"__proto__":{"v":1,"rev":${rev},"start":"dev/"}}`,
      `{"v":1,"rev":${rev},"start":"dev2/","start":${json(start)}}`, `{"v":1,"rev":${rev},"start":${json(start)},"start":"dev2/"}`)
  }
  const attacks = texts.flatMap(text => CALLERS.map((caller, i) => ({ token: encode(text), caller, limit: [2, undefined, 1][i] })))
  await every(t, world, 'sweep', attacks)
})

t.test('parameter pollution: two continue parameters, or one in another case', async t => {
  const [mine, theirs] = [world.tokens.dev[0], world.tokens.foreign.find(tok => decode(tok).includes('"de/'))!]
  for (const query of [`continue=${mine}&continue=${theirs}`, `continue=${theirs}&continue=${mine}`, `continue[]=${theirs}`, `Continue=${theirs}&limit=2`]) {
    const res = await world.app.call({ path: `/namespaces/${NS}/apikey?${query}` })
    t.ok(res.statusCode === 200 || res.statusCode === 400, `${query.replace(/=[^&]+/g, '=…')}: ${res.statusCode}`)
    if (res.statusCode === 400) checkError(t, res, 400, 1)
    else t.ok(res.json().every((k: Key) => k.metadata.namespace === NS && world.dev.has(k.metadata.name)), 'only keys of dev')
    t.strictSame(world.foreign.filter(n => res.body.includes(n)), [], 'no key of another namespace named')
  }
})

// ---------------------------------------------------------------------------
// Compaction: on an etcd of this test's own (compaction is global)

t.test('a compacted revision is a 410; a revision forged past the current one is a 400', async t => {
  const own = await dedicatedEtcd()
  t.teardown(() => own.close())
  const w = await seedWorld(t, own)
  const tokens = [...w.tokens.dev, ...w.tokens.bob]
  const rev = JSON.parse(decode(tokens[0])).rev as number
  await w.app.etcd.put(`${w.app.root}/elsewhere`).value('moves the revision on')
  const current = Number((await w.app.etcd.kv.range({ key: Buffer.from('\0') })).header.revision)
  t.ok(current > rev, 'etcd moved past the tokens\' revision')
  await w.app.etcd.kv.compact({ revision: current })

  for (const [whose, token] of [['the admin\'s', tokens[0]], ['bob\'s', w.tokens.bob[0]]]) {
    for (const [caller, limit] of [['admin', 2], ['bob', undefined]] as const) {
      const { res } = await listPage(w.app, NS, { token, limit, auth: w.auth[caller] })
      checkError(t, res, 410, 7, `${whose} real token after compaction, sent by ${caller} (limit=${limit})`)
      t.match(res.json().message, /restart/i, 'the message says to restart the list')
      t.notOk(res.body.includes(w.app.root), 'and names no etcd key')
      const forged = encode(json({ ...JSON.parse(decode(token)), rev: current + 1 }))
      checkError(t, (await listPage(w.app, NS, { token: forged, limit, auth: w.auth[caller] })).res, 400, 1,
        `the same token with rev ${current + 1}, past the current revision`)
    }
  }

  const revArb = fc.oneof(
    fc.integer({ min: 1, max: current - 1 }),
    fc.constant(current),
    fc.integer({ min: current + 1, max: current + 3 }),
    fc.integer({ min: current + 1, max: Number.MAX_SAFE_INTEGER }),
    fc.constantFrom(2 ** 53, 1e300, current + 0.5, 0, -current)
  )
  const tally = await property(t, w, 'compacted etcd, rev forged', fc.tuple(fc.constantFrom(...tokens), revArb, callerArb, limitArb),
    ([token, r, caller, limit]) => ({ token: encode(json({ ...JSON.parse(decode(token)), rev: r })), caller, limit }))
  t.ok(['200', '400', '410'].every(s => (tally.statuses.get(s) ?? 0) > 0), 'the forged revisions met all three answers')
})
