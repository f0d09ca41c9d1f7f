// The watch-fed read cache: reads served from it are consistent (a write acknowledged by one
// server is seen by the next read through another, at once), and a broken watch never leaves a
// revoked key accepted: reads go to etcd until the watch is back.
import t from 'tap'
import { dedicatedEtcd, sharedEtcd } from './helpers/etcd.js'
import { buildApp, keyAuth, uniqueRoot, type TestApp } from './helpers/app.js'
import { waitFor } from './helpers/wait.js'

/** Resolves once the app's cache follows etcd and has caught up with etcd's current revision. */
async function cacheLive (api: TestApp) {
  const current = Number((await api.etcd.kv.range({ key: Buffer.from('\0') })).header.revision)
  await waitFor(() => {
    const status = api.app.apiKeys.cacheStatus()
    return status?.live === true && status.revision >= current
  }, { timeout: 15_000, interval: 25, what: `the cache to follow etcd up to revision ${current}` })
}

const reads = (api: TestApp) => api.app.apiKeys.cacheStatus()?.reads ?? { cache: 0, etcd: 0 }

t.test('a write through one server is read at once through another, while a load runs', async t => {
  const etcd = await sharedEtcd()
  t.teardown(() => etcd.close())
  const root = uniqueRoot()
  const [a, b] = [await buildApp(t, etcd, { root }), await buildApp(t, etcd, { root })]
  await Promise.all([cacheLive(a), cacheLive(b)])
  const before = reads(b)

  // Background load on both servers: creates and reads, so that the watch always has work.
  const state = { running: true }
  const load = Promise.all([a, b].map(async api => {
    let n = 0
    while (state.running) {
      const { name } = await api.createKey('load')
      await api.call({ path: `/namespaces/load/apikey/${name}` })
      n++
    }
    return n
  }))

  const ROUNDS = 150
  let seen = 0
  for (let i = 0; i < ROUNDS; i++) {
    const [writer, reader] = i % 2 === 0 ? [a, b] : [b, a]
    const created = await writer.createKey('default', { metadata: { labels: { round: String(i) } } })
    const path = `/namespaces/default/apikey/${created.name}`
    const got = await reader.call({ path })
    const patched = await writer.call({ method: 'PATCH', path, body: { metadata: { labels: { round: 'patched' } } }, headers: { 'content-type': 'application/merge-patch+json' } })
    const afterPatch = await reader.call({ path })
    const verified = await reader.call({ path, auth: keyAuth(created.secret) })
    const deleted = await writer.call({ method: 'DELETE', path })
    const refused = await reader.call({ path, auth: keyAuth(created.secret) })
    const gone = await reader.call({ path })
    const ok = got.statusCode === 200 && patched.statusCode === 200 && afterPatch.json().metadata.labels.round === 'patched' &&
      verified.statusCode === 200 && deleted.statusCode === 204 && refused.statusCode === 401 && gone.statusCode === 404
    if (!ok) {
      t.fail(`round ${i}: create→GET ${got.statusCode}, PATCH ${patched.statusCode}→label ${afterPatch.json().metadata?.labels?.round}, ` +
        `Key ${verified.statusCode}, DELETE ${deleted.statusCode}→Key ${refused.statusCode}, GET ${gone.statusCode}`)
      break
    }
    seen++
  }
  state.running = false
  const loaded = await load
  t.equal(seen, ROUNDS, `${ROUNDS} rounds: every create, patch and delete through one server was seen by the very next read through the other`)
  const after = reads(b)
  t.comment(`reader b: ${after.cache - before.cache} reads from the cache, ${after.etcd - before.etcd} from etcd; load requests ${loaded.join(' + ')}`)
  t.ok(after.cache - before.cache > ROUNDS, 'and the reads were served from the cache')
})

t.test('pages of a list come from the cache while it is at the walk\'s revision, else from etcd at it', async t => {
  const etcd = await sharedEtcd()
  t.teardown(() => etcd.close())
  const api = await buildApp(t, etcd)
  const names: string[] = []
  for (let i = 0; i < 12; i++) names.push((await api.createKey('paged')).name)
  names.sort()
  await cacheLive(api)

  // With no write during the walk, every page comes from the cache, the later ones after a
  // one-key read in etcd at the token's revision (which says whether it was compacted).
  const quiet = reads(api)
  const { names: quietWalk } = await walkAll(api)
  t.same(quietWalk, names, 'a walk with no write meanwhile: the namespace, in name order')
  t.equal(reads(api).etcd - quiet.etcd, 0, 'with no range read from etcd', { quiet, now: reads(api), status: api.app.apiKeys.cacheStatus() })

  const first = await api.call({ path: '/namespaces/paged/apikey?limit=5' })
  const token = String(first.headers['sensu-continue'])
  // A write after the first page: the walk must not see it (one snapshot).
  const late = await api.createKey('paged')
  const walked = first.json().map((k: any) => k.metadata.name)
  for (let next: string | undefined = token; next !== undefined;) {
    const page = await api.call({ path: `/namespaces/paged/apikey?limit=5&continue=${next}` })
    t.equal(page.statusCode, 200)
    walked.push(...page.json().map((k: any) => k.metadata.name))
    next = page.headers['sensu-continue'] as string | undefined
  }
  t.same(walked, names, 'the walk is the namespace as it was at the first page, in name order')
  t.notOk(walked.includes(late.name), 'without the key created after it')
  const fresh = await api.call({ path: '/namespaces/paged/apikey?limit=100' })
  t.equal(fresh.json().length, 13, 'a new walk sees it')
})

/** Every page of `paged`, 5 at a time. */
async function walkAll (api: TestApp) {
  const names: string[] = []
  let pages = 0
  for (let next: string | undefined = ''; next !== undefined; pages++) {
    const page = await api.call({ path: `/namespaces/paged/apikey?limit=5${next === '' ? '' : `&continue=${next}`}` })
    names.push(...page.json().map((k: any) => k.metadata.name))
    next = page.headers['sensu-continue'] as string | undefined
  }
  return { names, pages }
}

t.test('while the watch is down, the cache serves nothing: reads go to etcd', async t => {
  const etcd = await dedicatedEtcd()
  t.teardown(() => etcd.close())
  const root = uniqueRoot()
  const [a, b] = [await buildApp(t, etcd, { root, requestTimeout: 1500 }), await buildApp(t, etcd, { root, requestTimeout: 1500 })]
  const keys: Array<{ name: string, secret: string }> = []
  for (let i = 0; i < 20; i++) keys.push(await a.createKey('default'))
  await cacheLive(b)
  const verify = (key: { name: string, secret: string }) => b.call({ path: `/namespaces/default/apikey/${key.name}`, auth: keyAuth(key.secret) })
  t.equal((await verify(keys[0])).statusCode, 200, 'accepted through b, from its cache')

  // etcd stopped: b's watch breaks. b still holds every key, and must not answer from them.
  await etcd.stop()
  await waitFor(() => b.app.apiKeys.cacheStatus()?.live === false, { what: 'b\'s cache to see its watch is down' })
  t.equal(b.app.apiKeys.cacheStatus()?.live, false, 'b\'s cache knows its watch is down')
  const before = reads(b)
  const res = await verify(keys[1])
  t.equal(res.statusCode, 503, 'a key b holds is not accepted from memory: etcd cannot say it was not revoked')
  t.ok(reads(b).etcd > before.etcd, 'the read went to etcd')

  await etcd.start()
  // b's client waits out its circuit breaker (1 s: BREAKER_HALF_OPEN_AFTER in lib/store/client-policy.ts) before it sends to etcd again.
  const back = await waitFor(async () => {
    const res = await verify(keys[1])
    return res.statusCode !== 503 && res
  }, { timeout: 15_000, interval: 150, what: 'b to answer other than 503 once etcd is back' })
  t.equal(back.statusCode, 200, 'b answers again once etcd is back')
  t.comment(`b's cache was ${b.app.apiKeys.cacheStatus()?.live === true ? 'live' : 'still down'} at that moment`)
  const statuses: number[] = []
  for (const key of keys.slice(2)) {
    const path = `/namespaces/default/apikey/${key.name}`
    t.equal((await a.call({ method: 'DELETE', path })).statusCode, 204)
    statuses.push((await verify(key)).statusCode)
  }
  t.same(statuses, statuses.map(() => 401), `every one of the ${statuses.length} keys deleted through a after the restart is refused by b at once`)
  await cacheLive(b)
  t.equal((await verify(keys[1])).statusCode, 200, 'and b\'s cache follows etcd again')
})
