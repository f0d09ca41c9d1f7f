// Containing a leaked key (SPEC: Containment): an admin revokes every key of a username in one
// call, and wins against the key minting more; a short-lived key makes nothing that outlives it;
// an Idempotency-Key entry goes with its key; every change leaves an audit line (who, what, when,
// from where; never a secret).
import { randomUUID } from 'node:crypto'
import t from 'tap'
import { sharedEtcd } from './helpers/etcd.js'
import { adminAuth, buildApp, keyAuth, uniqueRoot, type TestApp } from './helpers/app.js'
import { checkError } from './helpers/assert.js'
import { inParallel } from './helpers/load.js'

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

t.test('DELETE /apikeys?username= revokes every key of that user, in all namespaces', async t => {
  const api = await buildApp(t, etcd)
  const bobs = [
    ...await Promise.all(['a', 'a', 'a', 'b', 'b', 'c'].map(ns => api.createKey(ns, { username: 'bob' })))
  ]
  const alices = await Promise.all(['a', 'c'].map(ns => api.createKey(ns, { username: 'alice' })))
  const revoke = (username: string, auth?: string) => api.call({ method: 'DELETE', path: `/apikeys?username=${username}`, ...(auth !== undefined && { auth }) })

  const before = await api.snapshot()
  checkError(t, await revoke('bob', keyAuth(alices[0].secret)), 403, 4, 'a non-admin')
  checkError(t, await revoke('bob', keyAuth(bobs[0].secret)), 403, 4, 'bob himself (no admin)')
  checkError(t, await api.call({ method: 'DELETE', path: '/apikeys' }), 400, 1, 'no username')
  t.match((await api.call({ method: 'DELETE', path: '/apikeys' })).json().message, /username is required/)
  const listed = await api.call({ method: 'GET', path: '/apikeys?username=bob' })
  checkError(t, listed, 400, 1, 'GET /apikeys lists, and username is no parameter of a list')
  t.match(listed.json().message, /^unknown query parameter "username"/, 'the 400 names it')
  checkError(t, await api.call({ method: 'PUT', path: '/apikeys?username=bob', body: {} }), 405, 1, 'another method')
  t.same(await api.snapshot(), before, 'none of these changed anything')

  const res = await revoke('bob')
  t.equal(res.statusCode, 200)
  t.same(res.json(), { username: 'bob', deleted: 6 }, 'answered with the count')
  for (const bob of bobs) t.equal((await api.call({ path: '/namespaces/a/apikey', auth: keyAuth(bob.secret) })).statusCode, 401, 'bob\'s key no longer authenticates')
  for (const alice of alices) t.equal((await api.call({ path: '/namespaces/a/apikey', auth: keyAuth(alice.secret) })).statusCode, 200, 'alice\'s still does')

  const left = await api.snapshot()
  const records = Object.entries(left).filter(([key]) => key.startsWith(`${api.root}/apikeys/`))
  t.same(records.map(([, value]) => JSON.parse(value).username).sort(), ['alice', 'alice'], 'etcd holds only alice\'s records')
  const digests = Object.keys(left).filter(key => key.startsWith(`${api.root}/apikey-digests/`))
  t.equal(digests.length, 2, 'and their two digest entries, none of bob\'s')
  t.match(JSON.parse(left[`${api.root}/apikey-fences/bob`]), { username: 'bob' }, 'and bob\'s revocation fence')
  t.equal(Object.keys(left).length, 5, 'and nothing else')
  t.same((await revoke('bob')).json(), { username: 'bob', deleted: 0 }, 'a second call finds nothing')
})

t.test('every change leaves one audit line: who, what, when, from where', async t => {
  const api = await buildApp(t, etcd)
  const key = await api.createKey('ops', { username: 'carol', headers: { Authorization: 'Bearer do-not-log-me' } })
  await api.call({ method: 'PATCH', path: `/namespaces/ops/apikey/${key.name}`, body: { metadata: { labels: { x: 'y' } } } })
  await api.call({ method: 'DELETE', path: `/namespaces/ops/apikey/${key.name}` })
  await api.createKey('ops', { username: 'carol' })
  await api.call({ method: 'DELETE', path: '/apikeys?username=carol' })
  await api.call({ path: '/namespaces/ops/apikey' })

  const lines = api.logs()
  t.ok(lines.length > 10, `${lines.length} log lines captured`)
  const audits = lines.filter(line => line.audit !== undefined)
  t.same(audits.map(line => line.audit.action), ['create', 'patch', 'delete', 'create', 'revoke-all'], 'one line per change, none for a read')
  for (const line of audits) {
    t.match(line.audit, { by: 'admin', admin: true, from: '127.0.0.1' }, `${line.audit.action}: who and from where`)
    t.type(line.time, 'number', 'when')
    t.type(line.reqId, 'string', 'and which request')
  }
  t.match(audits[0].audit, { namespace: 'ops', name: key.name, username: 'carol' }, 'create: which key, for whom')
  t.match(audits[1].audit, { namespace: 'ops', name: key.name, fields: ['metadata'] }, 'patch: which fields, not their values')
  t.match(audits[2].audit, { namespace: 'ops', name: key.name, username: 'carol' }, 'delete')
  t.match(audits[4].audit, { username: 'carol', deleted: 1 }, 'revoke-all: whose keys, how many')
  const text = JSON.stringify(audits)
  t.notOk(text.includes(key.secret), 'no secret')
  t.notOk(text.includes('do-not-log-me'), 'no value of the key\'s own headers')
})

t.test('a non-admin creates keys for its user only up to the quota; admins are not limited', async t => {
  const api = await buildApp(t, etcd, { maxKeysPerUser: 3 })
  const bob = await api.createKey('a', { username: 'bob' })
  const asBob = keyAuth(bob.secret)
  const mint = (namespace: string) => api.call({ method: 'POST', path: `/namespaces/${namespace}/apikey`, body: {}, auth: asBob })
  t.equal((await mint('a')).statusCode, 201, 'bob\'s second key')
  const third = await mint('b')
  t.equal(third.statusCode, 201, 'his third, in another namespace')
  const before = await api.snapshot()
  const refused = await mint('c')
  checkError(t, refused, 403, 4, 'a fourth: the quota counts every namespace')
  t.match(refused.json().message, /holds 3 keys/)
  t.same(await api.snapshot(), before, 'and wrote nothing')

  const byAdmin = await api.call({ method: 'POST', path: '/namespaces/c/apikey', body: { username: 'bob' } })
  t.equal(byAdmin.statusCode, 201, 'an admin is not limited: bob now holds 4 keys')
  checkError(t, await mint('c'), 403, 4, 'so bob still may not mint one')

  for (const res of [third, byAdmin]) {
    const { namespace, name } = res.json().metadata
    t.equal((await api.call({ method: 'DELETE', path: `/namespaces/${namespace}/apikey/${name}` })).statusCode, 204)
  }
  t.equal((await mint('c')).statusCode, 201, 'with two revoked, bob may mint again, up to 3')
  checkError(t, await mint('c'), 403, 4, 'and not past them')
})

/** A list through `api` authenticated with `secret`: 200 while it authenticates, 401 after. */
const listWith = (api: TestApp, secret: string) => api.call({ path: '/namespaces/default/apikey', auth: keyAuth(secret) })
const now = () => Math.floor(Date.now() / 1000)

t.test('revoke-all wins against a leaked key minting more, on two servers', async t => {
  const ROUNDS = 3
  const KEYS = 60
  const LOOPS = 4
  const root = uniqueRoot()
  // Two servers over one etcd; quota and write limit out of the way, so that minting never stops by itself.
  const options = { root, maxKeysPerUser: false as const, writeLimit: false as const }
  const servers = [await buildApp(t, etcd, options), await buildApp(t, etcd, options)]
  const [a, b] = servers
  for (let round = 1; round <= ROUNDS; round++) {
    const user = `u${round}`
    const keys = await inParallel(Array.from({ length: KEYS }, (_, i) => i), 8, i => a.createKey(['ns-a', 'ns-b', 'ns-c'][i % 3], { username: user }))
    const leaked = keys[0].secret
    // The leaked key mints from LOOPS loops, alternating servers, into a namespace that sorts
    // before all others (so a scan meets the minted keys first); each loop mints with the key it
    // minted last, as an attacker covering its tracks would.
    let answered = false
    const minted: Array<{ secret: string, answeredAfterRevoke: boolean }> = []
    let refusedAfter = 0
    const mint = async (loop: number) => {
      let credential = leaked
      // Past the answer, 5 more tries each (with the last key it minted, then the leaked one), then stop.
      for (let i = 0, after = 0; after < 5; i++) {
        const late = answered
        const res = await servers[(loop + i) % 2].call({ method: 'POST', path: '/namespaces/0000-x/apikey', body: {}, auth: keyAuth(credential) })
        if (late) after++
        if (res.statusCode === 201) {
          credential = res.json().key
          minted.push({ secret: credential, answeredAfterRevoke: late })
        } else {
          if (late) refusedAfter++
          credential = leaked
        }
      }
    }
    const loops = Array.from({ length: LOOPS }, (_, i) => mint(i))
    while (minted.length < 8) await new Promise(resolve => setImmediate(resolve))
    const mintedBefore = minted.length
    const revoke = await a.call({ method: 'DELETE', path: `/apikeys?username=${user}` })
    answered = true
    const mintedDuring = minted.length - mintedBefore
    await Promise.all(loops)
    t.equal(revoke.statusCode, 200, `round ${round}: revoke-all answered 200`)
    const { deleted } = revoke.json()
    t.ok(deleted >= KEYS + mintedBefore, `round ${round}: it deleted ${deleted} keys (${KEYS} made, ${mintedBefore} minted before it)`)
    t.equal(minted.filter(m => m.answeredAfterRevoke).length, 0, `round ${round}: no mint answered 201 after the revoke-all did`)

    let survivors = 0
    for (const secret of [leaked, ...keys.map(k => k.secret), ...minted.map(m => m.secret)]) {
      for (const server of servers) if ((await listWith(server, secret)).statusCode !== 401) survivors++
    }
    t.equal(survivors, 0, `round ${round}: none of ${KEYS} keys and ${minted.length} minted authenticates on either server`)
    const left = Object.values(await a.snapshot()).filter(value => value.includes(`"username":"${user}"`) && value.includes('key_sha256'))
    t.equal(left.length, 0, `round ${round}: etcd holds no record of ${user}`)
    const fresh = await b.createKey('ns-a', { username: user })
    for (const server of servers) t.equal((await listWith(server, fresh.secret)).statusCode, 200, `round ${round}: a key made afterwards works`)
    t.comment(`revoke-all round ${round}: ${KEYS} keys, ${mintedBefore} minted before the call, ${mintedDuring} minted during it, ` +
      `${refusedAfter} mints refused after it, ${deleted} deleted, ${survivors} survivors`)
  }
})

t.test('a revoked key is refused, hidden and uncounted even while its record is still in etcd', async t => {
  const api = await buildApp(t, etcd, { maxKeysPerUser: 2 })
  const old = await api.createKey('a', { username: 'dave' })
  const other = await api.createKey('a', { username: 'erin' })
  // The fence alone, as a revoke-all cut short after writing it leaves things.
  await api.etcd.put(`${api.root}/apikey-fences/dave`).value(JSON.stringify({ username: 'dave', revoked_at: now() }))
  t.equal((await listWith(api, old.secret)).statusCode, 401, 'its secret no longer authenticates')
  t.equal(await api.app.apiKeys.verify(old.secret), null, 'verify says no')
  checkError(t, await api.call({ path: `/namespaces/a/apikey/${old.name}` }), 404, 2, 'GET')
  checkError(t, await api.call({ method: 'PATCH', path: `/namespaces/a/apikey/${old.name}`, body: { metadata: { labels: { x: 'y' } } } }), 404, 2, 'PATCH')
  checkError(t, await api.call({ method: 'DELETE', path: `/namespaces/a/apikey/${old.name}` }), 404, 2, 'DELETE')
  const listed = (await api.call({ path: '/namespaces/a/apikey' })).json().map((k: { metadata: { name: string } }) => k.metadata.name)
  t.same(listed, [other.name], 'a list leaves it out')
  const paged = (await api.call({ path: '/namespaces/a/apikey?limit=1' })).json().map((k: { metadata: { name: string } }) => k.metadata.name)
  t.ok(!paged.includes(old.name), 'and so does a page')
  checkError(t, await api.call({ method: 'PATCH', path: `/namespaces/a/apikey/${other.name}`, body: { username: 'dave' } }), 400, 1,
    'an older key cannot be given to a revoked username')
  t.match((await api.call({ method: 'PATCH', path: `/namespaces/a/apikey/${other.name}`, body: { username: 'dave' } })).json().message, /revoked after this apikey was made/)

  const fresh = await api.createKey('a', { username: 'dave' })
  t.equal((await listWith(api, fresh.secret)).statusCode, 200, 'a key made after the fence works')
  const asDave = keyAuth(fresh.secret)
  t.equal((await api.call({ method: 'POST', path: '/namespaces/a/apikey', body: {}, auth: asDave })).statusCode, 201, 'the revoked key does not count toward dave\'s quota of 2')
  checkError(t, await api.call({ method: 'POST', path: '/namespaces/a/apikey', body: {}, auth: asDave }), 403, 4, 'his live keys do')
  t.same((await api.call({ method: 'DELETE', path: '/apikeys?username=dave' })).json(), { username: 'dave', deleted: 3 }, 'a revoke-all then removes the old record too')
})

t.test('a caller authenticated by an expiring key makes nothing that outlives it', async t => {
  const api = await buildApp(t, etcd)
  const expiresAt = now() + 600
  const short = await api.createKey('a', { username: 'frank', expires_at: expiresAt })
  const asShort = keyAuth(short.secret)
  const mint = (body: object) => api.call({ method: 'POST', path: '/namespaces/a/apikey', body, auth: asShort })

  const plain = await mint({})
  t.equal(plain.statusCode, 201, 'a create without expires_at is made')
  t.equal(plain.json().expires_at, expiresAt, 'and gets the caller\'s own expiry')
  const sooner = await mint({ expires_at: expiresAt - 60 })
  t.equal(sooner.json().expires_at, expiresAt - 60, 'a sooner expiry is kept')
  t.equal((await mint({ expires_at: expiresAt })).statusCode, 201, 'the same expiry is allowed')
  const before = await api.snapshot()
  const later = await mint({ expires_at: expiresAt + 1 })
  checkError(t, later, 403, 4, 'a later expiry')
  t.match(later.json().message, new RegExp(`expires at ${expiresAt}`))
  t.same(await api.snapshot(), before, 'and nothing was written')

  const patch = (name: string, body: object, auth = asShort) => api.call({ method: 'PATCH', path: `/namespaces/a/apikey/${name}`, body, auth })
  const own = short.name
  checkError(t, await patch(own, { expires_at: null }), 403, 4, 'removing its own expiry')
  checkError(t, await patch(own, { expires_at: expiresAt + 3600 }), 403, 4, 'moving its own expiry later')
  checkError(t, await patch(plain.json().metadata.name, { expires_at: null }), 403, 4, 'removing another key\'s expiry')
  t.same(await api.snapshot(), before, 'none of these changed anything')
  t.equal((await patch(own, { expires_at: expiresAt - 10 })).json().expires_at, expiresAt - 10, 'moving it sooner is allowed')
  t.equal((await patch(own, { metadata: { labels: { a: 'b' } } })).statusCode, 200, 'as is a patch that leaves expires_at alone')

  // An admin-made key of frank that never expires: the short-lived key may label it, not keep it alive longer.
  const lasting = await api.createKey('a', { username: 'frank' })
  t.equal((await patch(lasting.name, { metadata: { labels: { seen: 'yes' } } })).statusCode, 200, 'a patch that leaves its expiry alone is fine')
  checkError(t, await patch(lasting.name, { expires_at: expiresAt + 60 }), 403, 4, 'giving it an expiry past the caller\'s')

  // The bearer admin is not bound.
  t.equal((await api.call({ method: 'POST', path: '/namespaces/a/apikey', body: { username: 'frank' } })).json().expires_at, undefined, 'the bearer admin makes a lasting key')
  t.equal((await patch(own, { expires_at: null }, adminAuth)).statusCode, 200, 'and may remove an expiry')
  t.equal((await patch(own, { expires_at: expiresAt + 3600 }, adminAuth)).json().expires_at, expiresAt + 3600, 'or move it later')
})

t.test('an Idempotency-Key entry lives and dies with its key', async t => {
  const api = await buildApp(t, etcd)
  const entries = async () => Object.keys(await api.snapshot()).filter(key => key.startsWith(`${api.root}/apikey-idempotency/`)).length
  const create = (idempotencyKey: string, body: object = { username: 'gina' }) =>
    api.call({ method: 'POST', path: '/namespaces/a/apikey', body, headers: { 'idempotency-key': idempotencyKey } })
  const first = await create(randomUUID())
  const second = await create(randomUUID())
  await create(randomUUID(), { username: 'gina', expires_at: now() + 3600 })
  t.equal(await entries(), 3, 'three creates with an Idempotency-Key: three entries')

  t.equal((await api.call({ method: 'DELETE', path: `/namespaces/a/apikey/${first.json().metadata.name}` })).statusCode, 204)
  t.equal(await entries(), 2, 'a delete takes its key\'s entry with it')
  const patched = await api.call({ method: 'PATCH', path: `/namespaces/a/apikey/${second.json().metadata.name}`, body: { expires_at: now() + 60 } })
  t.equal(patched.statusCode, 200)
  t.equal(await entries(), 1, 'a new expiry ends the entry, which cannot follow it to the new lease')
  t.same((await api.call({ method: 'DELETE', path: '/apikeys?username=gina' })).json(), { username: 'gina', deleted: 2 })
  t.equal(await entries(), 0, 'a revoke-all takes the rest')

  const key = randomUUID()
  const made = await create(key, { username: 'hugo' })
  t.equal((await api.call({ method: 'DELETE', path: `/namespaces/a/apikey/${made.json().metadata.name}` })).statusCode, 204)
  const again = await create(key, { username: 'hugo' })
  t.equal(again.statusCode, 201, 'the same Idempotency-Key after its key was deleted makes a new key')
  t.not(again.json().metadata.name, made.json().metadata.name, 'another one')
  t.equal(again.headers['idempotent-replayed'], undefined, 'not a replay')
})

t.test('apiKeys.revokeAllOf gives a host the same guarantee', async t => {
  const api = await buildApp(t, etcd)
  const keys = [await api.createKey('a', { username: 'ivan' }), await api.createKey('b', { username: 'ivan' })]
  const judy = await api.createKey('a', { username: 'judy' })
  t.equal(await api.app.apiKeys.revokeAllOf('ivan'), 2, 'it answers how many keys it deleted')
  for (const key of keys) t.equal((await listWith(api, key.secret)).statusCode, 401, 'ivan\'s keys are refused')
  t.equal((await listWith(api, judy.secret)).statusCode, 200, 'judy\'s is not')
  await t.rejects(api.app.apiKeys.revokeAllOf(''), /username must be a non-empty string/, 'a bad username is refused')
  const later = await api.createKey('a', { username: 'ivan' })
  t.equal((await listWith(api, later.secret)).statusCode, 200, 'a key made afterwards works')
})

t.test('a key disabled, rotated, deleted or shortened while its write is under way makes nothing and changes nothing', async t => {
  // The host's own preHandler hook holds a request marked x-hold after authentication (the key
  // is verified) until the test has changed the key, as a slow request body would.
  let gate: { reached: () => void, release: Promise<void> } | undefined
  const api = await buildApp(t, etcd, {}, app => {
    app.addHook('preHandler', async request => {
      const held = gate
      if (request.headers['x-hold'] === undefined || held === undefined) return
      held.reached()
      await held.release
    })
  })
  const HOLD = { 'x-hold': '1' }
  /** `send`'s answer, with `meanwhile` done between its authentication and its handler. */
  const heldWhile = async <T>(send: () => Promise<T>, meanwhile: () => Promise<unknown>): Promise<T> => {
    let reached = () => {}
    let release = () => {}
    const arrived = new Promise<void>(resolve => { reached = resolve })
    gate = { reached, release: new Promise<void>(resolve => { release = resolve }) }
    const answer = send()
    await arrived
    await meanwhile()
    release()
    gate = undefined
    return await answer
  }
  const records = async () => Object.keys(await api.snapshot()).filter(key => key.startsWith(`${api.root}/apikeys/`)).sort()
  const mintWith = (secret: string, body: object = {}) => () => api.call({ method: 'POST', path: '/namespaces/m/apikey', body, auth: keyAuth(secret), headers: HOLD })
  const patchKey = (key: { location: string }, body: object) => async () => {
    const res = await api.call({ method: 'PATCH', path: `/${key.location}`, body })
    t.equal(res.statusCode, 200, `meanwhile, an admin patches the key with ${JSON.stringify(body)}`)
  }
  const rotateKey = (key: { location: string }, grace: number) => async () => {
    const res = await api.call({ method: 'POST', path: `/${key.location}/rotate`, body: { grace_seconds: grace } })
    t.equal(res.statusCode, 200, `meanwhile, an admin rotates the key with a grace of ${grace} s`)
  }

  const refusedCases: Array<[string, (key: { location: string }) => () => Promise<unknown>]> = [
    ['disabled', key => patchKey(key, { disabled: true })],
    ['rotated without a grace', key => rotateKey(key, 0)],
    ['deleted', key => async () => t.equal((await api.call({ method: 'DELETE', path: `/${key.location}` })).statusCode, 204, 'meanwhile, an admin deletes the key')]
  ]
  for (const [what, change] of refusedCases) {
    const leaked = await api.createKey('m', { username: 'kim' })
    const before = await records()
    const res = await heldWhile(mintWith(leaked.secret), change(leaked))
    checkError(t, res, 401, 5, `a create by a key ${what} meanwhile`)
    t.same((await records()).filter(key => !before.includes(key)), [], `a key ${what} meanwhile mints nothing`)
  }

  // Changed otherwise, the key still authenticates: its create is verified again and made.
  const labelled = await api.createKey('m', { username: 'kim' })
  const made = await heldWhile(mintWith(labelled.secret), patchKey(labelled, { metadata: { labels: { seen: 'yes' } } }))
  t.equal(made.statusCode, 201, 'a key whose labels changed meanwhile still mints', { body: made.body })
  const graced = await api.createKey('m', { username: 'kim' })
  const inGrace = await heldWhile(mintWith(graced.secret), rotateKey(graced, 60))
  t.equal(inGrace.statusCode, 201, 'a key rotated with a grace meanwhile mints with its old secret, which still works')

  // Its expiry moved earlier meanwhile: the key being made may not outlive the new one.
  const soon = Math.floor(Date.now() / 1000) + 3600
  const shortened = await api.createKey('m', { username: 'kim', expires_at: soon })
  const before = await records()
  const tooLong = await heldWhile(mintWith(shortened.secret), patchKey(shortened, { expires_at: soon - 1800 }))
  checkError(t, tooLong, 403, 4, 'a create that would outlive the minter\'s new expiry')
  t.match(tooLong.json().message, `expires at ${soon - 1800}`, 'naming the new expiry')
  t.same((await records()).filter(key => !before.includes(key)), [], 'and nothing was made')

  // A PATCH and a rotation by a key whose expiry moved earlier meanwhile: bounded by the new one.
  const bounded = await api.createKey('m', { username: 'kim', expires_at: soon })
  const target = await api.createKey('m', { username: 'kim', expires_at: soon - 600 })
  const movedPatch = await heldWhile(
    () => api.call({ method: 'PATCH', path: `/${target.location}`, body: { expires_at: soon - 300 }, auth: keyAuth(bounded.secret), headers: HOLD }),
    patchKey(bounded, { expires_at: soon - 1800 }))
  checkError(t, movedPatch, 403, 4, 'a PATCH past the new expiry of the key that makes it')
  t.equal((await api.call({ path: `/${target.location}` })).json().expires_at, soon - 600, 'the patched key keeps its expiry')
  const rotator = await api.createKey('m', { username: 'kim', expires_at: soon })
  const movedRotation = await heldWhile(
    () => api.call({ method: 'POST', path: `/${target.location}/rotate`, body: {}, auth: keyAuth(rotator.secret), headers: HOLD }),
    patchKey(rotator, { expires_at: soon - 1800 }))
  checkError(t, movedRotation, 403, 4, 'a rotation of a key that outlives the new expiry of the key that makes it')
  t.equal((await api.call({ path: '/namespaces/m/apikey', auth: keyAuth(target.secret) })).statusCode, 200, 'the key\'s secret still works')

  // A rotation made by a key disabled meanwhile: refused, the rotated key's secret unchanged.
  const minter = await api.createKey('m', { username: 'kim' })
  const other = await api.createKey('m', { username: 'kim' })
  const rotation = await heldWhile(
    () => api.call({ method: 'POST', path: `/${other.location}/rotate`, body: {}, auth: keyAuth(minter.secret), headers: HOLD }),
    patchKey(minter, { disabled: true }))
  checkError(t, rotation, 401, 5, 'a rotation by a key disabled meanwhile')
  t.equal((await api.call({ path: '/namespaces/m/apikey', auth: keyAuth(other.secret) })).statusCode, 200, 'the other key\'s secret still works')
  // A leaked key's PATCH under way cannot switch it back on, nor its DELETE remove another key.
  const disabler = await api.createKey('m', { username: 'kim' })
  const undo = await heldWhile(
    () => api.call({ method: 'PATCH', path: `/${disabler.location}`, body: { disabled: false }, auth: keyAuth(disabler.secret), headers: HOLD }),
    patchKey(disabler, { disabled: true }))
  checkError(t, undo, 401, 5, 'a PATCH by a key disabled meanwhile')
  t.equal((await api.call({ path: `/${disabler.location}` })).json().disabled, true, 'the key stays disabled')
  const victim = await api.createKey('m', { username: 'kim' })
  const deleter = await api.createKey('m', { username: 'kim' })
  const heldDelete = await heldWhile(
    () => api.call({ method: 'DELETE', path: `/${victim.location}`, auth: keyAuth(deleter.secret), headers: HOLD }),
    patchKey(deleter, { disabled: true }))
  checkError(t, heldDelete, 401, 5, 'a DELETE by a key disabled meanwhile')
  t.equal((await api.call({ path: `/${victim.location}` })).statusCode, 200, 'the other key is still there')
  const labeller = await api.createKey('m', { username: 'kim' })
  const relabel = await heldWhile(
    () => api.call({ method: 'PATCH', path: `/${labeller.location}`, body: { metadata: { labels: { mine: 'yes' } } }, auth: keyAuth(labeller.secret), headers: HOLD }),
    patchKey(labeller, { metadata: { annotations: { by: 'admin' } } }))
  t.equal(relabel.statusCode, 200, 'a PATCH by a key an admin annotated meanwhile applies', { body: relabel.body })
  t.same([relabel.json().metadata.labels, relabel.json().metadata.annotations], [{ mine: 'yes' }, { by: 'admin' }], 'both changes hold')
  // A key rotating itself while an admin labels it: verified again, rotated.
  const self = await api.createKey('m', { username: 'kim' })
  const selfRotation = await heldWhile(
    () => api.call({ method: 'POST', path: `/${self.location}/rotate`, body: {}, auth: keyAuth(self.secret), headers: HOLD }),
    patchKey(self, { metadata: { labels: { seen: 'yes' } } }))
  t.equal(selfRotation.statusCode, 200, 'a key labelled meanwhile rotates itself', { body: selfRotation.body })
  t.equal((await api.call({ path: '/namespaces/m/apikey', auth: keyAuth(selfRotation.json().key) })).statusCode, 200, 'and its new secret works')
})
