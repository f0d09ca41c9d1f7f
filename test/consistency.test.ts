// `npm run check-consistency`: orphans of the key layout planted by hand (a record without its
// digest entry, digest entries without their record or pointing at another record's), reported
// exactly, repaired under guard, and a consistent store reported clean.
import t from 'tap'
import { execFile } from 'node:child_process'
import { randomBytes, randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { Etcd3 } from 'etcd3'
import { sharedEtcd } from './helpers/etcd.js'
import { waitFor } from './helpers/wait.js'
import { buildApp, keyAuth, type TestApp } from './helpers/app.js'
import {
  ensureBuilt, findOnPath, freePorts, request, runCheckConsistency, startServer, tempDir, waitForReady
} from './helpers/standalone.js'
import { EtcdKeys } from '../lib/store/key-builder.js'
import { abbreviateDigest, checkConsistency, repairOrphans } from '../lib/tools/consistency.js'
import { digestSecret } from '../lib/keys/secrets.js'

await ensureBuilt()
const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

const check = (root: string, args: string[] = []) => runCheckConsistency({ ETCD_ENDPOINTS: etcd.endpoints.join(','), ETCD_ROOT: root }, args)
const randomDigest = () => randomBytes(32).toString('hex')
const inAnHour = () => Math.floor(Date.now() / 1000) + 3600

/** Writes to etcd as an operator does by hand: with etcdctl when it is on PATH, else with a raw client. */
function byHand (client: Etcd3): { put(key: string, value: string): Promise<void>, del(key: string): Promise<void> } {
  const etcdctl = findOnPath('etcdctl')
  if (etcdctl === undefined) {
    return { put: async (key, value) => { await client.put(key).value(value) }, del: async key => { await client.delete().key(key) } }
  }
  const run = async (...args: string[]) => { await promisify(execFile)(etcdctl, [`--endpoints=${etcd.endpoints.join(',')}`, ...args]) }
  return { put: (key, value) => run('put', key, value), del: key => run('del', key) }
}

/** The digest a record carries, read from etcd. */
async function digestOf (api: TestApp, keys: EtcdKeys, namespace: string, name: string): Promise<string> {
  return JSON.parse(await api.etcd.get(keys.record(namespace, name)).string() ?? '{}').key_sha256
}

const leaseOf = async (api: TestApp, key: string) => String((await api.etcd.get(key).exec()).kvs[0]?.lease)
const authenticates = async (api: TestApp, location: string, secret: string) =>
  (await api.call({ path: `/${location}`, auth: keyAuth(secret) })).statusCode

t.test('a consistent store is reported clean, exit 0', async t => {
  const api = await buildApp(t, etcd)
  for (const namespace of ['default', 'default', 'dev']) await api.createKey(namespace)
  await api.createKey('dev', { expires_at: inAnHour() })
  const human = await check(api.root)
  t.equal(human.code, 0, 'exit 0')
  t.match(human.stdout, new RegExp(`^${api.root} at etcd revision \\d+: 4 records, 4 digest entries, consistent\\n$`), 'one line')
  t.equal(human.stderr, '')
  const json = await check(api.root, ['--json'])
  t.equal(json.code, 0)
  t.match(JSON.parse(json.stdout), { root: api.root, records: 4, digests: 4, consistent: true, orphans: [] }, '--json')
})

t.test('planted orphans: reported exactly, repaired, then clean, and the key authenticates again', async t => {
  const api = await buildApp(t, etcd)
  const keys = new EtcdKeys(api.root)
  const hand = byHand(api.etcd)
  // The victim expires, so that it has a lease: its restored digest entry must carry it too.
  const victim = await api.createKey('default', { expires_at: inAnHour() })
  const holder = await api.createKey('default')
  const bystander = await api.createKey('dev')
  const victimDigest = await digestOf(api, keys, 'default', victim.name)
  t.equal(victimDigest, digestSecret(victim.secret))
  const ghost = `default/${randomUUID()}`
  const [stray, foreign] = [randomDigest(), randomDigest()]
  await hand.del(keys.digest(victimDigest))
  await hand.put(keys.digest(stray), ghost)
  await hand.put(keys.digest(foreign), `default/${holder.name}`)
  t.equal(await authenticates(api, victim.location, victim.secret), 401, 'the record without its digest entry does not authenticate')

  const expected = [
    { kind: 'record-without-digest', digest: abbreviateDigest(victimDigest), record: `default/${victim.name}` },
    { kind: 'digest-without-record', digest: abbreviateDigest(stray), target: ghost },
    { kind: 'digest-of-other-record', digest: abbreviateDigest(foreign), target: `default/${holder.name}` }
  ]
  const byDigest = (a: { digest: string }, b: { digest: string }) => a.digest.localeCompare(b.digest)
  const found = await check(api.root, ['--json'])
  t.equal(found.code, 1, 'orphans found, not repaired: exit 1')
  const report = JSON.parse(found.stdout)
  t.match(report, { records: 3, digests: 4, consistent: false })
  t.same(report.orphans.sort(byDigest), expected.sort(byDigest), 'exactly the three planted orphans')

  const human = await check(api.root)
  t.equal(human.code, 1)
  const lines = human.stdout.trimEnd().split('\n')
  t.match(lines[0], /: 3 records, 4 digest entries, 3 orphans$/, 'a summary')
  t.equal(lines.filter(line => line.startsWith('  ')).length, 3, 'one line per orphan')
  t.match(human.stdout, `record default/${victim.name}: its digest entry ${abbreviateDigest(victimDigest)} is missing`)
  t.match(human.stdout, `digest entry ${abbreviateDigest(stray)}: points at ${ghost}, which does not exist`)
  t.match(human.stdout, `digest entry ${abbreviateDigest(foreign)}: points at default/${holder.name}, which carries another digest`)
  t.equal(lines.at(-1), 'run again with --repair to repair them')
  for (const [what, needle] of [['a secret', victim.secret], ['a whole digest', victimDigest.slice(0, 13)], ['a whole digest', stray.slice(0, 13)]]) {
    t.notOk(human.stdout.includes(needle) || found.stdout.includes(needle), `no output shows ${what}`)
  }

  const repaired = await check(api.root, ['--repair'])
  t.equal(repaired.code, 0, `--repair: exit 0 (${repaired.stdout.trim()})`)
  const outcomes = repaired.stdout.split('\n').filter(line => line.startsWith('  ')).map(line => line.replace(/^.*: /, ''))
  t.same(outcomes.sort(), ['repaired, entry deleted', 'repaired, entry deleted', 'repaired, entry written'], 'each orphan\'s line says what was done')
  t.match(repaired.stdout, /\nrepaired 3 of 3\n$/)
  const again = await check(api.root)
  t.equal(again.code, 0, 'a second run: exit 0')
  t.match(again.stdout, /: 3 records, 3 digest entries, consistent\n$/, 'and clean')

  t.equal(await authenticates(api, victim.location, victim.secret), 200, 'the repaired key authenticates again')
  const victimLease = await leaseOf(api, keys.record('default', victim.name))
  t.not(victimLease, '0', 'the victim has a lease')
  t.equal(await leaseOf(api, keys.digest(victimDigest)), victimLease, 'and its restored digest entry carries it')
  for (const key of [holder, bystander]) t.equal(await authenticates(api, key.location, key.secret), 200, 'the other keys still authenticate')
})

t.test('usage entries (last_used_at): one whose key is gone, or was made again since, is an orphan, repaired by deleting it; a live key\'s is not', async t => {
  const api = await buildApp(t, etcd, { lastUseInterval: 100 })
  const keys = new EtcdKeys(api.root)
  const hand = byHand(api.etcd)
  const live = await api.createKey('default')
  const remade = await api.createKey('default')
  t.equal(await authenticates(api, live.location, live.secret), 200, 'a use of the live key')
  await waitFor(async () => await api.etcd.get(keys.usage('default', live.name)).string(), { what: 'the live key\'s usage entry' })
  const ghost = randomUUID()
  await hand.put(keys.usage('dev', ghost), '1718000000')
  // A usage entry older than its record: a former key of the same name's, as a restore may leave.
  const remadeKey = keys.record('default', remade.name)
  const record = await api.etcd.get(remadeKey).string() ?? ''
  await hand.put(keys.usage('default', remade.name), '1718000000')
  await hand.del(remadeKey)
  await hand.put(remadeKey, record)
  await hand.put(keys.digest(digestSecret(remade.secret)), `default/${remade.name}`)

  const found = await check(api.root, ['--json'])
  t.equal(found.code, 1, 'exit 1')
  const report = JSON.parse(found.stdout)
  t.match(report, { records: 2, digests: 2, usage: 3, consistent: false })
  t.same(report.orphans.map((o: { kind: string, record: string }) => `${o.kind} ${o.record}`).sort(),
    [`usage-without-record default/${remade.name}`, `usage-without-record dev/${ghost}`].sort(), 'exactly the two planted usage entries')
  const human = await check(api.root)
  t.match(human.stdout, `usage entry of dev/${ghost}: that key does not exist (deleted, or made again since); --repair deletes the entry`)
  const repaired = await check(api.root, ['--repair'])
  t.equal(repaired.code, 0, `--repair: exit 0 (${repaired.stdout.trim()})`)
  t.match(repaired.stdout, /\nrepaired 2 of 2\n$/)
  t.equal(await api.etcd.get(keys.usage('dev', ghost)).string(), null, 'the ghost\'s entry is deleted')
  t.equal(await api.etcd.get(keys.usage('default', remade.name)).string(), null, 'so is the former key\'s')
  t.ok(await api.etcd.get(keys.usage('default', live.name)).string(), 'the live key\'s is kept')
  t.equal((await check(api.root)).code, 0, 'then clean')
})

t.test('a repair is guarded: what changed since the scan is left for the next one', async t => {
  const api = await buildApp(t, etcd)
  const keys = new EtcdKeys(api.root)
  const hand = byHand(api.etcd)
  const victim = await api.createKey('default')
  const victimDigest = await digestOf(api, keys, 'default', victim.name)
  const stray = randomDigest()
  await hand.del(keys.digest(victimDigest))
  await hand.put(keys.digest(stray), `default/${randomUUID()}`)
  const report = await checkConsistency(api.etcd, api.root)
  t.same(report.orphans.map(o => o.kind).sort(), ['digest-without-record', 'record-without-digest'])

  // Meanwhile a live server updates the record, and someone points the stray entry elsewhere.
  const patched = await api.call({ method: 'PATCH', path: `/namespaces/default/apikey/${victim.name}`, body: { metadata: { labels: { team: 'ops' } } } })
  t.equal(patched.statusCode, 200)
  await hand.put(keys.digest(stray), `default/${victim.name}`)
  const repairs = await repairOrphans(api.etcd, report)
  t.same(repairs.map(r => r.outcome), ['changed', 'changed'], 'neither fix applied')
  t.equal(await api.etcd.get(keys.digest(stray)).string(), `default/${victim.name}`, 'the newer entry is not deleted')
  t.equal(await api.etcd.get(keys.digest(victimDigest)).string(), null, 'nothing was written on the strength of a stale read')

  const rescan = await checkConsistency(api.etcd, api.root)
  // The stray entry now points at the victim, which carries another digest.
  t.same(rescan.orphans.map(o => o.kind).sort(), ['digest-of-other-record', 'record-without-digest'], 'the next scan sees the state as it is now')
  t.same((await repairOrphans(api.etcd, rescan)).map(r => r.outcome), ['repaired', 'repaired'], 'and repairs it')
  t.same((await checkConsistency(api.etcd, api.root)).orphans, [])
  t.equal(await authenticates(api, victim.location, victim.secret), 200)
})

t.test('a shared digest and an unreadable record are reported, never repaired: exit 1', async t => {
  const api = await buildApp(t, etcd)
  const keys = new EtcdKeys(api.root)
  const hand = byHand(api.etcd)
  const original = await api.createKey('default')
  const copy = `default/copy-${randomUUID()}`
  await hand.put(keys.records + copy, await api.etcd.get(keys.record('default', original.name)).string() ?? '')
  await hand.put(keys.record('default', 'junk'), 'not json')
  const before = await api.snapshot()
  const { code, stdout } = await check(api.root, ['--repair', '--json'])
  t.equal(code, 1, 'orphans left: exit 1')
  const digest = abbreviateDigest(digestSecret(original.secret))
  const byKind = (a: { kind: string }, b: { kind: string }) => a.kind.localeCompare(b.kind)
  t.same(JSON.parse(stdout).orphans.sort(byKind), [
    { kind: 'shared-digest', digest, records: [copy, `default/${original.name}`].sort(), target: `default/${original.name}`, repair: 'not-repairable' },
    { kind: 'unreadable-record', record: 'default/junk', repair: 'not-repairable' }
  ])
  t.same(await api.snapshot(), before, 'etcd is unchanged')
})

t.test('no etcd to check: one line, exit 2', async t => {
  const dataDir = await tempDir(t)
  const noData = await runCheckConsistency({ DATA_DIR: dataDir })
  t.equal(noData.code, 2)
  t.match(noData.stderr, /^check-consistency: ETCD_ENDPOINTS is not set and there is no embedded etcd data in \S+: set ETCD_ENDPOINTS to the server's etcd, or DATA_DIR to the server's\n$/)
  const [port] = await freePorts(1)
  const down = await runCheckConsistency({ ETCD_ENDPOINTS: `http://127.0.0.1:${port}`, REQUEST_TIMEOUT_MS: '1000' })
  t.equal(down.code, 2)
  t.match(down.stderr, /^check-consistency: cannot check: [^\n]+\n$/, 'etcd unreachable: one line')
  const usage = await runCheckConsistency({}, ['--fix'])
  t.equal(usage.code, 2)
  t.match(usage.stderr, /^check-consistency: Unknown option '--fix'[^\n]*; usage: check-consistency \[--repair\] \[--json\]\n$/)
  const badConfig = await runCheckConsistency({ ETCD_ENDPOINTS: '127.0.0.1:2379' })
  t.equal(badConfig.code, 2)
  t.match(badConfig.stderr, /^check-consistency: ETCD_ENDPOINTS must be /, 'the server\'s configuration errors')
})

t.test('without ETCD_ENDPOINTS: the embedded etcd\'s data in DATA_DIR', { skip: findOnPath('etcd') === undefined && 'no etcd binary on PATH' }, async t => {
  const dataDir = await tempDir(t)
  const [port, clientPort, peerPort] = await freePorts(3)
  const env = { DATA_DIR: dataDir, PORT: String(port), ETCD_CLIENT_PORT: String(clientPort), ETCD_PEER_PORT: String(peerPort) }
  const server = startServer(env)
  t.teardown(() => server.stop())
  await waitForReady(server, `http://127.0.0.1:${port}/ready`)
  const token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim()
  const created = await request(`http://127.0.0.1:${port}/api/core/v2/namespaces/default/apikey`, { method: 'POST', headers: { authorization: `Bearer ${token}` } })
  t.equal(created.status, 201)

  const whileRunning = await runCheckConsistency(env)
  t.equal(whileRunning.code, 2, 'the server runs its etcd: not opened a second time')
  const passwordFile = join(dataDir, 'etcd', 'root-password')
  t.match(whileRunning.stderr, new RegExp(`^check-consistency: port ${clientPort} \\(ETCD_CLIENT_PORT\\) is in use.*ETCD_ENDPOINTS=http://127.0.0.1:${clientPort} ` +
    `.*ETCD_USERNAME=root and ETCD_PASSWORD from ${passwordFile}[^\\n]*\\n$`), 'one line that says what to use')
  const credentials = { ETCD_USERNAME: 'root', ETCD_PASSWORD: readFileSync(passwordFile, 'utf8').trim() }
  const throughIt = await runCheckConsistency({ ...env, ...credentials, ETCD_ENDPOINTS: `http://127.0.0.1:${clientPort}` })
  t.match(throughIt, { code: 0, stdout: /: 1 records, 1 digest entries, consistent\n$/ }, 'which then works')

  t.match(await server.stop(), { code: 0 })
  const stopped = await runCheckConsistency(env)
  t.match(stopped, { code: 0, stdout: /^\/sensu\.io at etcd revision \d+: 1 records, 1 digest entries, consistent\n$/ }, 'the server stopped: its data opened with the embedded etcd')
  t.equal((await runCheckConsistency(env)).code, 0, 'which the check stopped again, ports and data freed')
})
