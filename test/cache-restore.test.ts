// etcd restored from a snapshot under a running server: its read cache holds a later history than
// etcd now has. The server must not trust it: a key deleted after the restore is refused at once,
// and the cache reloads (README, "Restoring etcd from a snapshot").
import t, { type Test } from 'tap'
import { grpcProxy, restorableEtcd } from './helpers/etcd.js'
import { buildApp, keyAuth, uniqueRoot, type TestApp } from './helpers/app.js'
import { waitFor } from './helpers/wait.js'

/** Resolves once the app's cache follows etcd and has caught up with etcd's current revision. */
async function cacheLive (api: TestApp) {
  const current = Number((await api.etcd.kv.range({ key: Buffer.from('\0') })).header.revision)
  await waitFor(() => {
    const status = api.app.apiKeys.cacheStatus()
    return status?.live === true && status.revision >= current
  }, { timeout: 20_000, interval: 25, what: () => `the cache to follow etcd up to revision ${current} (now ${JSON.stringify(api.app.apiKeys.cacheStatus())})` })
}

const reads = (api: TestApp) => api.app.apiKeys.cacheStatus()?.reads ?? { cache: 0, etcd: 0 }
const warned = (api: TestApp, message: RegExp) => api.logs().filter(line => message.test(line.msg))
const wentBack = (api: TestApp) => warned(api, /^etcd went back from revision \d+ to \d+ \(restored from a snapshot\?\); reloading the cache$/)
const newCluster = (api: TestApp) => warned(api, /^etcd's cluster id changed from \w+ to \w+ \(another cluster, or restored from a snapshot\?\); reloading the cache$/)
const path = (name: string) => `/namespaces/default/apikey/${name}`
const verify = (api: TestApp, key: { name: string, secret: string }) => api.call({ path: path(key.name), auth: keyAuth(key.secret) })
const revisionOf = async (api: TestApp) => Number((await api.etcd.kv.range({ key: Buffer.from('\0') })).header.revision)

/** The first answer other than 503 (the app's etcd client waits out its circuit breaker, which half-opens after 1 s, after etcd's stop). */
async function firstAnswer<A extends { statusCode: number }> (ask: () => Promise<A>) {
  let unavailable = 0
  const answer = await waitFor(async () => {
    const answer = await ask()
    if (answer.statusCode === 503) unavailable++
    return answer.statusCode !== 503 && answer
  }, { timeout: 30_000, what: () => `an answer other than 503 (${unavailable} so far)` })
  return { answer, unavailable }
}

// These tests stop and restore their own etcd process on fixed ports (a container would come back
// on other ports): without the binaries restorableEtcd() fails them, saying how to get them.

t.test('a key deleted after a restore is refused at once by a server whose cache holds the later history', async t => {
  const etcd = await restorableEtcd()
  t.teardown(() => etcd.close())
  const root = uniqueRoot()
  const first = await buildApp(t, etcd, { root, requestTimeout: 1500 })

  const a = await first.createKey('default', { metadata: { labels: { round: 'snapshot' } } })
  const b = await first.createKey('default')
  const snapshot = await etcd.saveSnapshot()

  // After the snapshot: a key created, A patched, so that the cache's revision moves well past the snapshot's.
  const c = await first.createKey('default')
  for (let i = 0; i < 5; i++) {
    const res = await first.call({ method: 'PATCH', path: path(a.name), body: { metadata: { labels: { round: String(i) } } }, headers: { 'content-type': 'application/merge-patch+json' } })
    t.equal(res.statusCode, 200, `patch ${i} of A`)
  }
  await cacheLive(first)
  const held = first.app.apiKeys.cacheStatus()?.revision ?? 0
  const before = reads(first)
  t.equal((await verify(first, b)).statusCode, 200, 'B\'s secret is accepted before the restore')
  t.ok(reads(first).cache > before.cache, 'from the cache')

  await etcd.restore(snapshot)
  const restoredRevision = await revisionOf(first)
  t.ok(restoredRevision < held, `etcd went back: revision ${restoredRevision} after the restore, the cache held ${held}`)

  // B deleted through a fresh server, then asked of the first one at once.
  const second = await buildApp(t, etcd, { root, requestTimeout: 1500 })
  t.equal((await second.call({ method: 'DELETE', path: path(b.name) })).statusCode, 204, 'B deleted through a fresh server')
  const { answer, unavailable } = await firstAnswer(() => verify(first, b))
  t.equal(answer.statusCode, 401, `the first answer of the first server (after ${unavailable} × 503) refuses B's secret`)
  t.equal((await first.call({ path: path(b.name) })).statusCode, 404, 'B is not found')
  t.equal((await first.call({ path: path(c.name) })).statusCode, 404, 'C, created after the snapshot, is gone')
  const readA = await first.call({ path: path(a.name) })
  t.equal(readA.statusCode, 200)
  t.strictSame(readA.json(), a.resource, 'A reads as the snapshot had it, before its patches')

  // The cache reloaded from the restored etcd, and serves again.
  await cacheLive(first)
  const after = reads(first)
  t.equal((await verify(first, b)).statusCode, 401, 'B is still refused once the cache is live again')
  t.equal((await verify(first, a)).statusCode, 200, 'A\'s secret is accepted')
  t.strictSame((await first.call({ path: path(a.name) })).json(), a.resource, 'A as the snapshot had it')
  t.equal((await first.call({ path: path(c.name) })).statusCode, 404, 'C is still gone')
  t.ok(reads(first).cache - after.cache >= 4, 'those reads came from the reloaded cache', { after, now: reads(first) })
  const status = first.app.apiKeys.cacheStatus()
  t.equal(status?.reloads, 1, 'cacheStatus() counts one reload', { status })
  t.ok(first.logs().length > 10, `the first server's logs were captured (${first.logs().length} lines)`)
  t.equal(wentBack(first).length, 1, 'one warning says etcd went back and the cache reloads', { warnings: wentBack(first) })
  t.match(wentBack(first)[0], { level: 40, from: held, to: Number })
})

t.test('etcd restored with a new cluster token from a snapshot ahead of the cache: the cluster id tells, not the revision', async t => {
  const [etcd, elsewhere] = [await restorableEtcd(), await restorableEtcd()]
  t.teardown(() => Promise.all([etcd.close(), elsewhere.close()]))
  const root = uniqueRoot()
  const first = await buildApp(t, etcd, { root, requestTimeout: 1500 })
  const b = await first.createKey('default')
  await cacheLive(first)
  t.equal((await verify(first, b)).statusCode, 200, 'B\'s secret is accepted before the restore')

  // The snapshot comes from another etcd with the same root and more writes: its revision is
  // above the cache's, so only the cluster id can tell that the history changed.
  const other = await buildApp(t, elsewhere, { root })
  const kept = []
  for (let i = 0; i < 6; i++) kept.push(await other.createKey('default'))
  const snapshot = await elsewhere.saveSnapshot()
  const held = first.app.apiKeys.cacheStatus()?.revision ?? 0
  await etcd.restore(snapshot, ['--initial-cluster-token=restored-1'])
  const restoredRevision = await revisionOf(first)
  t.ok(restoredRevision > held, `the restored etcd is at revision ${restoredRevision}, above the cache's ${held}`)

  const { answer, unavailable } = await firstAnswer(() => verify(first, b))
  t.equal(answer.statusCode, 401, `the first answer of the server (after ${unavailable} × 503) refuses B's secret, absent from the snapshot`)
  t.equal((await first.call({ path: path(b.name) })).statusCode, 404, 'B is not found')
  t.strictSame((await first.call({ path: path(kept[0].name) })).json(), kept[0].resource, 'a key of the snapshot reads as it was made')
  await cacheLive(first)
  const before = reads(first)
  t.equal((await verify(first, b)).statusCode, 401, 'B is still refused once the cache is live again')
  for (const key of kept) t.equal((await verify(first, key)).statusCode, 200, `${key.name}'s secret is accepted`)
  t.ok(reads(first).cache - before.cache >= kept.length + 1, 'from the reloaded cache', { before, now: reads(first) })
  t.equal(first.app.apiKeys.cacheStatus()?.reloads, 1, 'cacheStatus() counts one reload')
  t.ok(first.logs().length > 5, `the server's logs were captured (${first.logs().length} lines)`)
  t.equal(newCluster(first).length, 1, 'one warning says the cluster id changed and the cache reloads', { warnings: newCluster(first) })
  t.equal(wentBack(first).length, 0, 'none says the revision went back')
})

/** An etcd of the test's own, an etcd grpc-proxy in front of it, and a server (`first`) behind the proxy that made key B. */
async function behindProxy (t: Test) {
  const etcd = await restorableEtcd()
  t.teardown(() => etcd.close())
  const proxy = await grpcProxy(etcd)
  t.teardown(() => proxy.close())
  const root = uniqueRoot()
  const first = await buildApp(t, proxy, { root, requestTimeout: 1500 })
  const b = await first.createKey('default')
  return { etcd, proxy, root, first, b }
}

t.test('behind an etcd grpc-proxy the watch outlives the restore: the revision read before each read catches it', async t => {
  const { etcd, root, first, b } = await behindProxy(t)
  const snapshot = await etcd.saveSnapshot()
  const later = []
  for (let i = 0; i < 4; i++) later.push(await first.createKey('default'))
  await cacheLive(first)
  const held = first.app.apiKeys.cacheStatus()?.revision ?? 0

  await etcd.restore(snapshot)
  const second = await buildApp(t, etcd, { root, requestTimeout: 1500 })
  t.equal((await second.call({ method: 'DELETE', path: path(b.name) })).statusCode, 204, 'B deleted through a fresh server, on etcd itself')
  const { answer, unavailable } = await firstAnswer(() => verify(first, b))
  t.equal(answer.statusCode, 401, `the first answer of the server behind the proxy (after ${unavailable} × 503) refuses B's secret`)
  t.equal(first.logs().filter(line => /watch down|watch stopped/.test(line.msg)).length, 0, 'its watch never went down: only the revision check could tell')
  for (const key of later) t.equal((await verify(first, key)).statusCode, 401, `${key.name}, created after the snapshot, is refused`)
  await cacheLive(first)
  const before = reads(first)
  t.equal((await verify(first, b)).statusCode, 401, 'B is still refused once the cache is live again')
  t.ok(reads(first).cache > before.cache, 'from the reloaded cache', { before, now: reads(first) })
  t.equal(first.app.apiKeys.cacheStatus()?.reloads, 1, 'cacheStatus() counts one reload')
  t.ok(first.logs().length > 5, `the server's logs were captured (${first.logs().length} lines)`)
  t.equal(wentBack(first).length, 1, 'one warning says etcd went back', { warnings: wentBack(first) })
  t.match(wentBack(first)[0], { level: 40, from: held, to: Number })
})

t.test('etcd compacted past the cache\'s revision while the server was cut off (as a restore with --bump-revision --mark-compacted leaves it): the watch is canceled, the cache reloads', async t => {
  const { etcd, proxy, root, first, b } = await behindProxy(t)
  await cacheLive(first)
  t.equal((await verify(first, b)).statusCode, 200, 'B\'s secret is accepted')

  // The server cut off from etcd; meanwhile B is deleted, other writes made, and etcd compacted.
  await proxy.stop()
  const second = await buildApp(t, etcd, { root, requestTimeout: 1500 })
  t.equal((await second.call({ method: 'DELETE', path: path(b.name) })).statusCode, 204, 'B deleted through a fresh server')
  const c = await second.createKey('default')
  const compactedAt = await revisionOf(second)
  await second.etcd.kv.compact({ revision: String(compactedAt), physical: true })
  await proxy.start()

  const { answer, unavailable } = await firstAnswer(() => verify(first, b))
  t.equal(answer.statusCode, 401, `the first answer (after ${unavailable} × 503) refuses B's secret`)
  await cacheLive(first)
  const before = reads(first)
  t.equal((await verify(first, b)).statusCode, 401, 'B is still refused once the cache is live again')
  t.equal((await verify(first, c)).statusCode, 200, 'a key made while it was cut off is accepted')
  t.ok(reads(first).cache > before.cache, 'from the reloaded cache', { before, now: reads(first) })
  t.equal(first.app.apiKeys.cacheStatus()?.reloads, 1, 'cacheStatus() counts one reload')
  t.ok(first.logs().length > 5, `the server's logs were captured (${first.logs().length} lines)`)
  t.ok(first.logs().some(line => line.level === 40 && /watch canceled: .*compacted/.test(String(line.err?.message))), 'a warning says the watch was canceled: compacted')
  t.equal(wentBack(first).length + newCluster(first).length, 0, 'and none that etcd went back or changed cluster')
})
