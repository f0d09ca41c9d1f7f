// Writes per username: a non-admin caller's creates, patches and deletes take tokens from its
// username's bucket; past it a 429 with Retry-After that changes nothing in etcd. Admins are not
// limited, `writeLimit: false` turns it off, and the standalone server reads WRITE_LIMIT_*.
import t, { type Test } from 'tap'
import { sharedEtcd } from './helpers/etcd.js'
import { buildApp, keyAuth, type Answer, type TestApp } from './helpers/app.js'
import { checkError } from './helpers/assert.js'
import { WriteLimiter } from '../lib/http/write-limit.js'
import { ConfigError, loadConfig } from '../lib/server/config.js'

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

/** Refills so slowly (one write per 10 s) that no token comes back while a test runs: counts are exact. */
const SLOW = 0.1

const create = (api: TestApp, auth: string) => api.call({ method: 'POST', path: '/namespaces/default/apikey', body: {}, auth })

/** The usernames of the key records in etcd. */
async function recordsOf (api: TestApp, username: string): Promise<number> {
  const all = await api.snapshot()
  return Object.entries(all).filter(([key, value]) => key.startsWith(`${api.root}/apikeys/`) && JSON.parse(value).username === username).length
}

function checkRefused (t: Test, res: Answer, username: string, maxWait: number, what: string) {
  checkError(t, res, 429, 9, what)
  const wait = Number(res.headers['retry-after'])
  t.ok(Number.isInteger(wait) && wait >= 1 && wait <= maxWait, `${what}: Retry-After ${res.headers['retry-after']}, whole seconds from 1 to ${maxWait}`)
  t.equal(res.json().message, `too many writes for user ${username}; retry after ${wait} seconds`, `${what}: the message names the user and the wait`)
}

t.test('the bucket: a burst at once, then one write per 1/perSecond s; Retry-After rounds up', async t => {
  let now = 1_000_000
  const limiter = new WriteLimiter({ perSecond: 2, burst: 3 }, 100, () => now)
  t.same([1, 2, 3, 4].map(() => limiter.take('bob')), [0, 0, 0, 1], 'three at once, the fourth waits 1 s (0.5 s rounded up)')
  t.equal(limiter.take('alice'), 0, 'another username has its own bucket')
  now += 250
  t.equal(limiter.take('bob'), 1, 'half a token back after 0.25 s: not yet')
  now += 250
  t.equal(limiter.take('bob'), 0, 'one token back after 0.5 s')
  now += 60_000
  t.same([1, 2, 3, 4].map(() => limiter.take('bob')), [0, 0, 0, 1], 'a long pause refills to the burst, no more')

  const slow = new WriteLimiter({ perSecond: 0.25, burst: 1 }, 100, () => now)
  t.same([slow.take('bob'), slow.take('bob')], [0, 4], 'one write per 4 s: Retry-After 4')
})

t.test('a flood of usernames keeps at most maxUsernames buckets; the least recently seen goes first', async t => {
  let now = 0
  const limiter = new WriteLimiter({ perSecond: 1, burst: 2 }, 1000, () => now)
  for (let i = 0; i < 50_000; i++) limiter.take(`user-${i}`)
  t.equal(limiter.size, 1000, '50 000 usernames, 1000 buckets')

  limiter.take('bob')
  limiter.take('bob')
  t.equal(limiter.take('bob'), 1, 'bob is past his burst')
  for (let i = 0; i < 998; i++) limiter.take(`other-${i}`)
  t.equal(limiter.take('bob'), 1, 'seen recently, bob is still remembered among 999 others')
  now += 10
  for (let i = 0; i < 1000; i++) limiter.take(`late-${i}`)
  t.equal(limiter.size, 1000)
  t.equal(limiter.take('bob'), 0, 'after 1000 newer usernames, bob is forgotten and starts with a full bucket')
})

t.test('a non-admin key\'s burst of creates past the limit: 429s, and etcd holds exactly the allowed keys', async t => {
  const api = await buildApp(t, etcd, { writeLimit: { perSecond: SLOW, burst: 5 } })
  const bob = await api.createKey('default', { username: 'bob' })
  const answers = await Promise.all(Array.from({ length: 12 }, () => create(api, keyAuth(bob.secret))))
  const created = answers.filter(res => res.statusCode === 201)
  const refused = answers.filter(res => res.statusCode !== 201)
  t.equal(created.length, 5, 'five of twelve creates at once are made (the burst)')
  t.equal(refused.length, 7, 'seven are refused')
  for (const res of refused) checkRefused(t, res, 'bob', 10, 'a create past the limit')
  t.equal(await recordsOf(api, 'bob'), 1 + 5, 'etcd holds bob\'s first key and the five made, no more')
  t.equal((await api.call({ path: '/namespaces/default/apikey', auth: keyAuth(bob.secret) })).statusCode, 200, 'bob still reads')
})

t.test('the default limit: 20 at once, 10 a second', async t => {
  const api = await buildApp(t, etcd)
  const bob = await api.createKey('default', { username: 'bob' })
  const started = Date.now()
  const answers = await Promise.all(Array.from({ length: 40 }, () => create(api, keyAuth(bob.secret))))
  const seconds = (Date.now() - started) / 1000
  const created = answers.filter(res => res.statusCode === 201).length
  // Each token that came back while the creates ran lets one more through: at most 10 a second.
  t.ok(created >= 20 && created <= 20 + Math.ceil(seconds * 10), `${created} of 40 made in ${seconds.toFixed(2)} s: the burst of 20 and at most 10 a second more`)
  const refused = answers.filter(res => res.statusCode !== 201)
  t.equal(refused.length, 40 - created, 'the others are refused')
  t.ok(refused.length > 0, 'some are refused')
  for (const res of refused) checkRefused(t, res, 'bob', 1, 'a create past the default limit')
  t.equal(await recordsOf(api, 'bob'), 1 + created)
})

t.test('the admin bearer\'s burst of the same size is not limited', async t => {
  const api = await buildApp(t, etcd, { writeLimit: { perSecond: SLOW, burst: 5 } })
  const answers = await Promise.all(Array.from({ length: 12 }, () => api.createKey('default', { username: 'bob' })))
  t.equal(answers.length, 12, 'all twelve made (createKey fails on anything but 201)')
  t.equal(await recordsOf(api, 'bob'), 12)
})

t.test('patches and deletes count too, per username; a refused one changes nothing', async t => {
  const api = await buildApp(t, etcd, { writeLimit: { perSecond: SLOW, burst: 3 } })
  const [bob1, bob2, bob3, bob4] = await Promise.all([1, 2, 3, 4].map(() => api.createKey('default', { username: 'bob' })))
  const carol = await api.createKey('default', { username: 'carol' })
  const as = keyAuth(bob1!.secret)
  const patch = (name: string) => api.call({ method: 'PATCH', path: `/namespaces/default/apikey/${name}`, body: { metadata: { labels: { seen: 'yes' } } }, auth: as })
  const remove = (name: string) => api.call({ method: 'DELETE', path: `/namespaces/default/apikey/${name}`, auth: as })

  t.equal((await patch(bob2!.name)).statusCode, 200, 'a patch: the first write')
  t.equal((await remove(bob3!.name)).statusCode, 204, 'a delete: the second')
  t.equal((await patch(bob2!.name)).statusCode, 200, 'a patch: the third')
  const before = await api.snapshot()
  checkRefused(t, await remove(bob4!.name), 'bob', 10, 'a fourth write, a delete')
  checkRefused(t, await patch(bob4!.name), 'bob', 10, 'a patch')
  checkRefused(t, await create(api, as), 'bob', 10, 'a create')
  t.same(await api.snapshot(), before, 'the refused writes changed nothing in etcd')
  t.equal((await api.call({ path: `/namespaces/default/apikey/${bob4!.name}`, auth: as })).statusCode, 200, 'bob\'s fourth key is still there, and bob still reads')
  t.equal((await create(api, keyAuth(carol.secret))).statusCode, 201, 'carol\'s writes are counted on their own')
})

t.test('writeLimit: false turns the limit off', async t => {
  const api = await buildApp(t, etcd, { writeLimit: false })
  const bob = await api.createKey('default', { username: 'bob' })
  const answers = await Promise.all(Array.from({ length: 30 }, () => create(api, keyAuth(bob.secret))))
  t.same(answers.map(res => res.statusCode), Array(30).fill(201), '30 creates at once: all made')
})

t.test('the standalone server: WRITE_LIMIT_PER_SECOND and WRITE_LIMIT_BURST', async t => {
  t.same(loadConfig({}).writeLimit, { perSecond: 10, burst: 20 }, 'default: 10 a second, bursts of 20')
  t.same(loadConfig({ WRITE_LIMIT_PER_SECOND: '2', WRITE_LIMIT_BURST: '5' }).writeLimit, { perSecond: 2, burst: 5 })
  t.same(loadConfig({ WRITE_LIMIT_BURST: '50' }).writeLimit, { perSecond: 10, burst: 50 }, 'each alone')
  t.equal(loadConfig({ WRITE_LIMIT_PER_SECOND: '0' }).writeLimit, false, '0 a second: no limit')
  const bad: Array<[Record<string, string>, string]> = [
    [{ WRITE_LIMIT_PER_SECOND: '-1' }, 'WRITE_LIMIT_PER_SECOND'],
    [{ WRITE_LIMIT_PER_SECOND: 'ten' }, 'WRITE_LIMIT_PER_SECOND'],
    [{ WRITE_LIMIT_BURST: '0' }, 'WRITE_LIMIT_BURST'],
    [{ WRITE_LIMIT_BURST: '2.5' }, 'WRITE_LIMIT_BURST']
  ]
  for (const [env, name] of bad) {
    t.throws(() => loadConfig(env), { constructor: ConfigError, message: new RegExp(`^${name} must be .* \\(got "`) }, JSON.stringify(env))
  }
})
