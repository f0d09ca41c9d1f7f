// Paged and streamed lists (SPEC "Pagination"): page sizes, Sensu-Continue, snapshot reads,
// the limit rules, compaction, the continue token's checks, and lists filtered for a non-admin.
import t from 'tap'
import { randomUUID } from 'node:crypto'
import type { Etcd3 } from 'etcd3'
import { sharedEtcd, dedicatedEtcd } from './helpers/etcd.js'
import { buildApp, keyAuth, type CreatedKey, type TestApp } from './helpers/app.js'
import { digestSecret } from '../lib/keys/secrets.js'
import { checkError } from './helpers/assert.js'
import { seedRaw } from './helpers/seed.js'
import { byteOrder, listPage as list, namesOf, walk, type Key } from './helpers/list.js'

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

// ---------------------------------------------------------------------------
// Helpers

const sortedNames = (keys: Key[]) => keys.map(k => k.metadata.name as string).sort(byteOrder)
const byName = (keys: Key[]) => [...keys].sort((a, b) => byteOrder(a.metadata.name, b.metadata.name))

/** A continue token built by hand: base64url (no padding) of the JSON given. */
const encodeJson = (value: unknown) => Buffer.from(JSON.stringify(value), 'utf8').toString('base64url')
/** A token in the documented format. */
const tokenOf = (rev: number, start: string) => encodeJson({ v: 1, rev, start })
const decodeToken = (token: string) => JSON.parse(Buffer.from(token, 'base64url').toString('utf8'))

/** Runs `make(0..count-1)` at most `size` at a time. */
async function inBatches<T> (count: number, size: number, make: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = []
  for (let i = 0; i < count; i += size) {
    const batch = Array.from({ length: Math.min(size, count - i) }, (_, j) => make(i + j))
    out.push(...await Promise.all(batch))
  }
  return out
}

/** Creates `count` keys through the API, 25 at a time. */
const createMany = (app: TestApp, ns: string, count: number, body: Key = {}) =>
  inBatches(count, 25, () => app.createKey(ns, body))

/** etcd's current revision, read with the test's own client. */
async function currentRevision (client: Etcd3): Promise<number> {
  const res = await client.kv.range({ key: Buffer.from('\0') })
  return Number(res.header.revision)
}

// ---------------------------------------------------------------------------
// Page sizes and Sensu-Continue

t.test('limit=100: 250 keys in pages of 100, 100, 50; 200 keys in two pages', async t => {
  const app = await buildApp(t, etcd)
  const [of250, of200] = await Promise.all([createMany(app, 'p250', 250), createMany(app, 'p200', 200)])

  const w250 = await walk(app, 'p250', 100)
  t.strictSame(w250.pages.map(p => p.length), [100, 100, 50], '250 keys: pages of 100, 100, 50')
  t.strictSame(w250.tokens.map(tok => tok !== undefined), [true, true, false], 'Sensu-Continue on pages 1 and 2, none on page 3')
  t.equal(new Set(namesOf(w250.items)).size, 250, 'no key twice')
  t.strictSame(namesOf(w250.items), sortedNames(of250.map(c => c.resource)), 'every key, in byte order of the names')
  t.strictSame(w250.items, byName(of250.map(c => c.resource)), 'each as created')

  // The documented token format: the revision of page 1 and the start after the page's last key.
  const [first, second] = [decodeToken(w250.tokens[0]!), decodeToken(w250.tokens[1]!)]
  t.strictSame(first, { v: 1, rev: first.rev, start: `p250/${w250.pages[0].at(-1)!.metadata.name}\u0000` }, 'token 1 format')
  t.strictSame(second, { v: 1, rev: first.rev, start: `p250/${w250.pages[1].at(-1)!.metadata.name}\u0000` }, 'token 2: same revision')

  const w200 = await walk(app, 'p200', 100)
  t.strictSame(w200.pages.map(p => p.length), [100, 100], '200 keys: two pages')
  t.strictSame(w200.tokens, [w200.tokens[0], undefined], 'an exact multiple: no Sensu-Continue on the last page')
  t.ok(w200.tokens[0], 'a Sensu-Continue on the first page')
  t.strictSame(w200.items, byName(of200.map(c => c.resource)), 'every key of p200 once, in order, none of p250')
})

t.test('a walk reads the snapshot of its first page, whatever is written meanwhile', async t => {
  const app = await buildApp(t, etcd)
  const original = byName((await createMany(app, 'snap', 30)).map(c => c.resource))

  const { res, next } = await list(app, 'snap', { limit: 10 })
  t.equal(res.statusCode, 200)
  const page1 = res.json() as Key[]
  t.strictSame(page1, original.slice(0, 10), 'page 1: the first ten keys')
  const cursor = page1.at(-1)!.metadata.name as string

  // New keys: server-made UUIDs, some sorting ahead of the cursor and some behind it.
  const added: CreatedKey[] = []
  while (!(added.some(k => byteOrder(k.name, cursor) < 0) && added.some(k => byteOrder(k.name, cursor) > 0))) {
    if (added.length >= 200) throw new Error('200 new UUIDs all on one side of the cursor')
    added.push(...await createMany(app, 'snap', 5))
  }
  // Keys ahead of the cursor: some deleted, some patched.
  const deleted = original.slice(12, 17)
  const patched = original.slice(20, 23)
  for (const key of deleted) {
    t.equal((await app.call({ method: 'DELETE', path: `/namespaces/snap/apikey/${key.metadata.name}` })).statusCode, 204)
  }
  for (const key of patched) {
    const r = await app.call({ method: 'PATCH', path: `/namespaces/snap/apikey/${key.metadata.name}`, body: { metadata: { labels: { changed: 'yes' } } } })
    t.equal(r.statusCode, 200)
  }
  const now = (await list(app, 'snap')).res.json() as Key[]
  t.equal(now.length, 30 + added.length - deleted.length, 'the writes happened: a new list sees them')
  t.ok(patched.every(p => now.find(k => k.metadata.name === p.metadata.name)?.metadata.labels?.changed === 'yes'), 'the patches happened')

  const rest = await walk(app, 'snap', 10, { from: next })
  t.strictSame([...page1, ...rest.items], original, 'the walk returns exactly the keys of page 1\'s snapshot, with their bodies then')
  t.strictSame(rest.pages.map(p => p.length), [10, 10], 'pages 2 and 3 are full')
  t.equal(rest.tokens.at(-1), undefined, 'and the last carries no Sensu-Continue')
})

// ---------------------------------------------------------------------------
// limit

t.test('a limit above 1,000 is read as 1,000', async t => {
  const app = await buildApp(t, etcd)
  const seeded = byName((await seedRaw(app, 'big', 1200)).map(s => s.body))

  const w = await walk(app, 'big', 5000)
  t.strictSame(w.pages.map(p => p.length), [1000, 200], 'limit=5000: a page of 1,000, then the other 200')
  t.strictSame(w.tokens.map(tok => tok !== undefined), [true, false], 'the token carries on')
  t.strictSame(w.items, seeded, 'every key once, in order')

  for (const limit of ['1001', '99999999999999999999999']) {
    const { res, next } = await list(app, 'big', { limit })
    t.equal(res.statusCode, 200)
    t.strictSame(res.json(), seeded.slice(0, 1000), `limit=${limit}: the first 1,000 keys`)
    t.ok(next, `limit=${limit}: with Sensu-Continue`)
  }
  const { res, next } = await list(app, 'big', { limit: 1000 })
  t.strictSame([res.json().length, next !== undefined], [1000, true], 'limit=1000 itself is a page of 1,000')
})

t.test('without limit (or limit=0, or an empty limit): one streamed array of every key, beyond one batch', async t => {
  const app = await buildApp(t, etcd)
  const seeded = await seedRaw(app, 'stream', 1200)
  const expected = byName(seeded.map(s => s.body))
  const other = await createMany(app, 'stream2', 3)

  for (const limit of [undefined, 0, '000', '']) {
    const { res, next } = await list(app, 'stream', { limit })
    t.equal(res.statusCode, 200, `limit=${limit}: 200`)
    t.match(res.headers['content-type'], /^application\/json/, 'JSON')
    t.equal(next, undefined, 'no Sensu-Continue')
    const items = res.json() as Key[]
    t.equal(items.length, 1200, `limit=${limit}: all 1,200 keys`)
    t.strictSame(items, expected, 'each once, in name order, as stored')
  }
  // The raw records are real keys: their secrets authenticate through their digest entries.
  const sample = seeded[777]
  const own = await app.call({ path: `/namespaces/stream/apikey/${sample.body.metadata.name}`, auth: keyAuth(sample.secret) })
  t.equal(own.statusCode, 200, 'a seeded key authenticates with its secret')
  t.strictSame(own.json(), sample.body, 'and reads back as written')
  t.strictSame(sortedNames((await list(app, 'stream2')).res.json()), sortedNames(other.map(c => c.resource)), 'the other namespace holds its own three')
})

t.test('limit that is not a non-negative integer: 400', async t => {
  const app = await buildApp(t, etcd)
  await createMany(app, 'lim', 3)
  for (const limit of ['-1', 'abc', '1.5', '1e3', '0x10']) {
    const { res } = await list(app, 'lim', { limit })
    checkError(t, res, 400, 1, `limit=${limit}`)
  }
  const { res } = await list(app, 'lim', { limit: 2 })
  t.equal(res.json().length, 2, 'while limit=2 is a page of two')
})

// ---------------------------------------------------------------------------
// Compaction

t.test('a token whose revision etcd compacted: 410, restart the list', async t => {
  // Compaction is global to an etcd: this test owns one.
  const own = await dedicatedEtcd()
  t.teardown(() => own.close())
  const app = await buildApp(t, own)
  await createMany(app, 'c', 5)

  const { next } = await list(app, 'c', { limit: 2 })
  const rev = decodeToken(next!).rev as number
  t.equal((await list(app, 'c', { limit: 2, token: next })).res.statusCode, 200, 'before compaction, page 2 reads')

  await app.createKey('c')
  const current = await currentRevision(app.etcd)
  t.ok(current > rev, 'etcd moved past page 1\'s revision')
  await app.etcd.kv.compact({ revision: current })

  for (const limit of [2, undefined]) {
    const { res } = await list(app, 'c', { limit, token: next })
    checkError(t, res, 410, 7, `limit=${limit}: compacted revision`)
    t.match(res.json().message, /restart/i, 'the message says to restart the list')
    t.notMatch(res.body, app.root, 'and names no etcd key')
  }
  const restarted = await walk(app, 'c', 2)
  t.equal(restarted.items.length, 6, 'a list started again reads every key')
})

// ---------------------------------------------------------------------------
// The token's checks

t.test('a token that is not one of this namespace: 400, revealing nothing', async t => {
  const app = await buildApp(t, etcd)
  const dev = await createMany(app, 'dev', 3)
  const dev2Names = (await createMany(app, 'dev2', 3)).map(k => k.name)
  const rev = await currentRevision(app.etcd)
  const digest = digestSecret(dev[0].secret)

  // The hand-built encoding is the server's: a token made this way for dev/ reads dev.
  const good = await list(app, 'dev', { limit: 2, token: tokenOf(rev, 'dev/\u0000') })
  t.equal(good.res.statusCode, 200, 'a well-formed hand-made token is accepted')
  t.strictSame(namesOf(good.res.json()), sortedNames(dev.map(c => c.resource)).slice(0, 2), 'and reads dev from its start')

  const bad: Array<[string, string]> = [
    ['not base64url', '!!!'],
    ['padded base64url', `${tokenOf(rev, 'dev/\u0000')}==`],
    ['base64url of text', Buffer.from('hello, world').toString('base64url')],
    ['JSON null', encodeJson(null)],
    ['JSON array', encodeJson([1, rev, 'dev/'])],
    ['JSON string', encodeJson('dev/')],
    ['v 2', encodeJson({ v: 2, rev, start: 'dev/\u0000' })],
    ['no v', encodeJson({ rev, start: 'dev/\u0000' })],
    ['no rev', encodeJson({ v: 1, start: 'dev/\u0000' })],
    ['no start', encodeJson({ v: 1, rev })],
    ['an extra field', encodeJson({ v: 1, rev, start: 'dev/\u0000', ns: 'dev2' })],
    ['rev a string', encodeJson({ v: 1, rev: String(rev), start: 'dev/\u0000' })],
    ['rev a fraction', encodeJson({ v: 1, rev: 1.5, start: 'dev/\u0000' })],
    ['rev 0', tokenOf(0, 'dev/\u0000')],
    ['rev negative', tokenOf(-1, 'dev/\u0000')],
    ['rev beyond etcd\'s', tokenOf(rev + 1_000_000, 'dev/\u0000')],
    ['start in dev2', tokenOf(rev, 'dev2/\u0000')],
    ['start at a dev2 key', tokenOf(rev, `dev2/${dev2Names[0]}`)],
    ['start through ..', tokenOf(rev, 'dev/../dev2/x')],
    ['start dev/../dev2/', tokenOf(rev, 'dev/../dev2/\u0000')],
    ['start in the digest index', tokenOf(rev, '../apikey-digests/\u0000')],
    ['start at a digest through dev', tokenOf(rev, `dev/../../apikey-digests/${digest}`)],
    ['start empty', tokenOf(rev, '')],
    ['start without its slash', tokenOf(rev, 'dev')],
    ['start absolute', tokenOf(rev, `${app.root}/apikeys/dev/\u0000`)]
  ]
  for (const [what, token] of bad) {
    for (const limit of [2, undefined]) {
      const { res } = await list(app, 'dev', { limit, token })
      checkError(t, res, 400, 1, `${what} (limit=${limit})`)
      t.strictSame(dev2Names.filter(n => res.body.includes(n)), [], `${what}: no dev2 key named`)
      t.notOk(res.body.includes(digest) || res.body.includes(app.root), `${what}: no digest, no etcd key`)
    }
  }
})

t.test('a token of namespace a used on namespace b: 400', async t => {
  const app = await buildApp(t, etcd)
  const aNames = (await createMany(app, 'a', 5)).map(k => k.name)
  await createMany(app, 'b', 5)
  const { next } = await list(app, 'a', { limit: 2 })
  for (const limit of [2, undefined]) {
    const { res } = await list(app, 'b', { limit, token: next })
    checkError(t, res, 400, 1, `a's token on b (limit=${limit})`)
    t.strictSame(aNames.filter(n => res.body.includes(n)), [], 'names none of a\'s keys')
  }
  t.equal((await list(app, 'a', { limit: 2, token: next })).res.statusCode, 200, 'the same token still reads a')
})

// ---------------------------------------------------------------------------
// A non-admin caller: the list is filtered while paging

t.test('a non-admin lists only its own keys, page by page', async t => {
  const app = await buildApp(t, etcd)
  const bobKey = await app.createKey('team', { username: 'bob' })
  const bob = keyAuth(bobKey.secret)
  const [bobs, admins] = await Promise.all([
    createMany(app, 'team', 7, { username: 'bob' }),
    createMany(app, 'team', 20),
    createMany(app, 'team', 5, { username: 'alice' })
  ])
  const expected = byName([bobKey, ...bobs].map(c => c.resource))

  const w = await walk(app, 'team', 3, { auth: bob })
  t.ok(w.pages.every(p => p.length <= 3), 'no page over the limit')
  t.ok(w.items.every(k => k.username === 'bob'), 'only bob\'s keys')
  t.strictSame(w.items, expected, 'walking every page yields exactly bob\'s eight keys, in order')
  t.ok(w.tokens.slice(0, -1).every(tok => tok !== undefined) && w.tokens.at(-1) === undefined,
    'Sensu-Continue on every page but the last')
  t.equal(decodeToken(w.tokens[0]!).v, 1, 'the same token format')

  const all = await list(app, 'team', { auth: bob })
  t.strictSame(all.res.json(), expected, 'without limit: bob\'s keys only')
  t.equal((await walk(app, 'team', 3)).items.length, 8 + admins.length + 5, 'while the admin sees all 33')

  // Token rules are the same.
  checkError(t, (await list(app, 'team', { limit: 3, auth: bob, token: '!!!' })).res, 400, 1, 'bob, a malformed token')
  const elsewhere = await createMany(app, 'other', 2, { username: 'bob' })
  const { next } = await list(app, 'other', { limit: 1, auth: bob })
  t.ok(next, 'bob pages another namespace')
  const { res } = await list(app, 'team', { limit: 3, auth: bob, token: next })
  checkError(t, res, 400, 1, 'bob, another namespace\'s token')
  t.strictSame(elsewhere.filter(k => res.body.includes(k.name)), [], 'naming none of its keys')
})

t.test('a filtered page reads at most 10,000 keys: it may be empty and still carry a token', async t => {
  const app = await buildApp(t, etcd)
  // bob's key lives elsewhere; in `cap`, 10,005 admin keys sort ahead of bob's three.
  const bob = keyAuth((await app.createKey('home', { username: 'bob' })).secret)
  const others = await seedRaw(app, 'cap', 10_005)
  const bobs = await seedRaw(app, 'cap', 3, { username: 'bob', name: () => `ffffffff-ffff-4fff-bfff-${randomUUID().slice(-12)}` })
  const lastOther = sortedNames(others.map(s => s.body)).at(-1)!
  t.ok(bobs.every(s => byteOrder(s.body.metadata.name, lastOther) > 0), 'bob\'s keys sort after the others')

  const first = await list(app, 'cap', { limit: 5, auth: bob })
  t.equal(first.res.statusCode, 200)
  t.strictSame(first.res.json(), [], 'page 1 scanned 10,000 keys and found none of bob\'s')
  t.ok(first.next, 'and still carries a token')
  // The page ended on a key bob may not see (a 404 to him): its token must not name it.
  const { start } = decodeToken(first.next as string)
  const otherNames = new Set(others.map(s => `cap/${s.body.metadata.name as string}`))
  t.notOk(otherNames.has(start.endsWith('\u0000') ? start.slice(0, -1) : start), `the token names no key bob may not see (start ${JSON.stringify(start)})`)
  t.ok(start.length < `cap/${lastOther}`.length, 'only a prefix that sorts past what was scanned')
  const rest = await walk(app, 'cap', 5, { auth: bob, from: first.next })
  t.strictSame(rest.items, byName(bobs.map(s => s.body)), 'the next page has bob\'s three keys')
  t.equal(rest.tokens.at(-1), undefined, 'and ends the walk')
})
