// `apikeys rotate`, `disable` and `enable` (issue 14) against the lifecycle routes (SPEC.md,
// "Lifecycle"): POST .../rotate answers the key with a new secret, PATCH {"disabled": ...}.
// These pass once the lifecycle routes are in the server.
import t, { type Test } from 'tap'
import { sharedEtcd } from './helpers/etcd.js'
import { ONE_ERROR_LINE, runCli, startCliServer, tableRows, type Run } from './helpers/cli.js'
import { waitFor } from './helpers/wait.js'

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())
const srv = await startCliServer(t, etcd)

const SECRET = /^sak_[A-Za-z0-9_-]{49}$/
const cli = async (args: string[], env: Record<string, string> = {}) => await runCli(args, { env: { ...srv.env, ...env } })
/** Whether `secret` authenticates: a list as that key. */
const works = async (secret: string) => (await runCli(['list', '--format', 'json'], { env: { APIKEYS_URL: srv.url, APIKEYS_KEY: secret } })).code === 0

async function grant (t: Test): Promise<{ name: string, secret: string }> {
  const run = await cli(['grant'])
  t.equal(run.code, 0, 'granted', { stderr: run.stderr })
  const [name, secret] = [/^Name: (\S+)$/m.exec(run.stdout)?.[1] ?? '', /^Key: {2}(\S+)$/m.exec(run.stdout)?.[1] ?? '']
  t.match(secret, SECRET)
  return { name, secret }
}

function assertOk (t: Test, run: Run, what: string) {
  t.equal(run.code, 0, `${what}: exit 0`, { stderr: run.stderr })
  t.equal(run.stderr, '', `${what}: nothing on stderr`)
}

t.test('rotate: a new secret that works at once; the old one stops (no grace)', async t => {
  const { name, secret } = await grant(t)
  const run = await cli(['rotate', name])
  assertOk(t, run, 'rotate')
  t.match(run.stdout, /^Rotated API key .*\nThe old secret no longer works\.\nKey: {2}sak_/, 'says the old secret is done, prints the new one')
  const fresh = /^Key: {2}(\S+)$/m.exec(run.stdout)?.[1] ?? ''
  t.match(fresh, SECRET)
  t.not(fresh, secret)
  t.ok(await works(fresh), 'the new secret authenticates')
  t.notOk(await works(secret), 'the old one does not')
  t.match((await srv.api('GET', `/namespaces/default/apikey/${name}`)).body, { rotated_at: Number }, 'the key has rotated_at')
})

t.test('rotate --grace 1h --quiet: only the new secret; both work during the grace', async t => {
  const { name, secret } = await grant(t)
  const run = await cli(['rotate', name, '--grace', '1h', '--quiet'])
  assertOk(t, run, 'rotate --quiet')
  t.match(run.stdout, /^sak_[A-Za-z0-9_-]{49}\n$/, 'only the secret')
  t.ok(await works(run.stdout.trim()), 'the new secret authenticates')
  t.ok(await works(secret), 'the old one too, for the grace')
  const again = await cli(['rotate', name, '--grace', '8d'])
  t.equal(again.code, 1, 'a grace over 7 days: the server refuses')
  t.match(again.stderr, ONE_ERROR_LINE)
  const bad = await cli(['rotate', name, '--grace', 'soon'])
  t.equal(bad.code, 2, 'a grace that is no duration: usage')
  t.match(bad.stderr, /--grace/)
  const missing = await cli(['rotate', '0badc0de-0000-4000-8000-000000000000'])
  t.equal(missing.code, 1, 'a missing key')
  t.match(missing.stderr, /^Error: .*not found\n$/)
})

t.test('disable stops a key authenticating, enable lets it again; info and list show it', async t => {
  const { name, secret } = await grant(t)
  const off = await cli(['disable', name])
  assertOk(t, off, 'disable')
  t.match(off.stdout, `Disabled API key ${name}`)
  t.equal((await srv.api('GET', `/namespaces/default/apikey/${name}`)).body.disabled, true, 'disabled: true')
  t.notOk(await works(secret), 'a disabled key does not authenticate')
  const info = await cli(['info', name])
  t.match(info.stdout, /^Disabled: +yes$/m, 'info says so')
  const listed = JSON.parse((await cli(['list', '--format', 'json'])).stdout)
  t.ok(listed.some((k: any) => k.metadata.name === name && k.disabled === true), 'still listed')

  const on = await cli(['enable', name])
  assertOk(t, on, 'enable')
  t.notOk((await srv.api('GET', `/namespaces/default/apikey/${name}`)).body.disabled === true, 'no longer disabled')
  t.ok(await works(secret), 'it authenticates again')
  // last_used_at is written off the request path: wait for it, then see it in the table.
  const lastUsed = await waitFor(async () => JSON.parse((await cli(['info', name, '--format', 'json'])).stdout).last_used_at, { what: 'last_used_at after the key was used', timeout: 15_000, interval: 250 })
  const row = tableRows((await cli(['list'])).stdout).rows.find(r => r[0] === name)
  t.equal(row?.[5], new Date(lastUsed * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z'), 'the Last used column shows it')
  const missing = await cli(['disable', 'no-such-key'])
  t.equal(missing.code, 1, 'a missing key')
  t.match(missing.stderr, ONE_ERROR_LINE)
})
