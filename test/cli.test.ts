// The `apikeys` command line (issue 14), run as a child process against a standalone server on real
// etcd: every command and format parsed back, paging, --quiet, the revoke confirmation on a
// terminal and without one, the connection's precedence, and each failure's exit code and one line.
import t, { type Test } from 'tap'
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { spawnSync } from 'node:child_process'
import { parseAllDocuments } from 'yaml'
import { sharedEtcd } from './helpers/etcd.js'
import { ADMIN_TOKEN } from './helpers/app.js'
import { freePorts, logLines, tempDir } from './helpers/standalone.js'
import { APIKEYS_BIN, ONE_ERROR_LINE, runCli, runCliOnTerminal, startCliServer, tableRows, type Run } from './helpers/cli.js'

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())
const srv = await startCliServer(t, etcd)

const SECRET = /^sak_[A-Za-z0-9_-]{49}$/
const cli = async (args: string[], env: Record<string, string> = {}) => await runCli(args, { env: { ...srv.env, ...env } })

/** Grants a key with --quiet in `namespace` and answers its name and secret, through the API's list. */
async function grantKey (namespace: string, ...args: string[]): Promise<{ name: string, secret: string }> {
  const before = new Set((await srv.api('GET', `/namespaces/${namespace}/apikey`)).body.map((k: any) => k.metadata.name))
  const run = await cli(['grant', '--quiet', '--namespace', namespace, ...args])
  if (run.code !== 0) throw new Error(`grant failed: ${run.stderr}`)
  const after = (await srv.api('GET', `/namespaces/${namespace}/apikey`)).body.map((k: any) => k.metadata.name)
  const name = after.find((n: string) => !before.has(n))
  return { name, secret: run.stdout.trim() }
}

function assertOk (t: Test, run: Run, what: string) {
  t.equal(run.code, 0, `${what}: exit 0`, { stderr: run.stderr })
  t.equal(run.stderr, '', `${what}: nothing on stderr`)
}

function assertFails (t: Test, run: Run, code: number, message: RegExp, what: string) {
  t.equal(run.code, code, `${what}: exit ${code}`, { stdout: run.stdout, stderr: run.stderr })
  t.match(run.stderr, ONE_ERROR_LINE, `${what}: one line on stderr, no stack trace`)
  t.match(run.stderr, message, `${what}: says what failed`)
  t.equal(run.stdout, '', `${what}: nothing on stdout`)
}

/** The wrapped form back to the key. */
const unwrapped = (w: any) => ({ metadata: w.metadata, ...w.spec })
const iso = (seconds: number) => new Date(seconds * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z')

t.test('grant prints the key\'s path and its secret, once; the secret works', async t => {
  const run = await cli(['grant', '--namespace', 'grants', 'alice', '--label', 'team=ops', '--label', 'tier=1'])
  assertOk(t, run, 'grant')
  const lines = run.stdout.split('\n')
  t.match(lines[0], /Save its secret now/, 'says to keep the secret')
  const name = /^Name: (\S+)$/.exec(lines[1])?.[1] ?? ''
  const path = /^Path: (\S+)$/.exec(lines[2])?.[1]
  const secret = /^Key: {2}(\S+)$/.exec(lines[3])?.[1] ?? ''
  t.equal(path, `/api/core/v2/namespaces/grants/apikey/${name}`, 'the path is the key\'s Location')
  t.match(secret, SECRET, 'the secret')
  const stored = await srv.api('GET', `/namespaces/grants/apikey/${name}`)
  t.equal(stored.status, 200, 'the key exists')
  t.match(stored.body, { username: 'alice', metadata: { labels: { team: 'ops', tier: '1' } } }, 'for the username, with both labels')
  t.notOk('expires_at' in stored.body, 'no expiry unless asked')
  const asAlice = await runCli(['list', '--namespace', 'grants', '--format', 'json'], { env: { APIKEYS_URL: srv.url, APIKEYS_KEY: secret } })
  assertOk(t, asAlice, 'the secret authenticates')
  t.same(JSON.parse(asAlice.stdout).map((k: any) => k.metadata.name), [name], 'as alice, who sees her key')
})

t.test('grant --quiet prints only a working secret', async t => {
  const run = await cli(['grant', '--quiet'])
  assertOk(t, run, 'grant --quiet')
  t.match(run.stdout, /^sak_[A-Za-z0-9_-]{49}\n$/, 'the secret and a newline, nothing else')
  const used = await runCli(['grant', '--quiet'], { env: { APIKEYS_URL: srv.url, APIKEYS_KEY: run.stdout.trim() } })
  assertOk(t, used, 'an admin key from --quiet grants a key in turn')
  t.match(used.stdout.trim(), SECRET)
  const wrong = await runCli(['list'], { env: { APIKEYS_URL: srv.url, APIKEYS_KEY: `${run.stdout.trim().slice(0, -6)}AAAAAA` } })
  assertFails(t, wrong, 1, /APIKEYS_KEY/, 'a forged secret is refused (so the check above can fail)')
})

t.test('grant --expires-in, --expires-at (ISO 8601 and Unix seconds), --idempotency-key', async t => {
  const now = Math.floor(Date.now() / 1000)
  const in30d = await grantKey('expiry', '--expires-in', '30d')
  const body = (await srv.api('GET', `/namespaces/expiry/apikey/${in30d.name}`)).body
  t.ok(Math.abs(body.expires_at - (now + 30 * 86_400)) < 120, '30d from now', { expires_at: body.expires_at, now })
  const iso8601 = await grantKey('expiry', '--expires-at', '2099-01-31T12:00:00Z')
  t.equal((await srv.api('GET', `/namespaces/expiry/apikey/${iso8601.name}`)).body.expires_at, Date.UTC(2099, 0, 31, 12) / 1000, 'ISO 8601')
  const unix = await grantKey('expiry', '--expires-at', '4102444800')
  t.equal((await srv.api('GET', `/namespaces/expiry/apikey/${unix.name}`)).body.expires_at, 4102444800, 'Unix seconds')

  assertFails(t, await cli(['grant', '--expires-in', '30x']), 2, /--expires-in.*90m, 12h or 30d/, 'a bad duration')
  assertFails(t, await cli(['grant', '--expires-at', 'next tuesday']), 2, /--expires-at.*ISO 8601/, 'a bad date')
  assertFails(t, await cli(['grant', '--expires-in', '1d', '--expires-at', '2099-01-01']), 2, /cannot be used with/, 'both')
  assertFails(t, await cli(['grant', '--expires-at', '2001-01-01']), 1, /expires_at/, 'a date in the past: the server\'s message')

  const first = await cli(['grant', '--quiet', '--namespace', 'idem', '--idempotency-key', 'retry-0123456789-a'])
  const second = await cli(['grant', '--quiet', '--namespace', 'idem', '--idempotency-key', 'retry-0123456789-a'])
  assertOk(t, second, 'a retry')
  t.equal(second.stdout, first.stdout, 'a retry with the same idempotency key answers the same secret')
  t.equal((await srv.api('GET', '/namespaces/idem/apikey')).body.length, 1, 'and made one key')
})

t.test('list and info in every format, parsed back', async t => {
  const ns = 'formats'
  await grantKey(ns, 'alice', '--label', 'team=ops')
  await grantKey(ns, 'bob', '--expires-in', '12h')
  await grantKey(ns)
  const keys = (await srv.api('GET', `/namespaces/${ns}/apikey`)).body
  t.equal(keys.length, 3)

  const json = await cli(['list', '--namespace', ns, '--format', 'json'])
  assertOk(t, json, 'json')
  t.same(JSON.parse(json.stdout), keys, 'json: one array, the keys as the API lists them')

  const wrapped = await cli(['list', '--namespace', ns, '--format', 'wrapped-json'])
  assertOk(t, wrapped, 'wrapped-json')
  const lines = wrapped.stdout.trimEnd().split('\n').map(line => JSON.parse(line))
  t.equal(lines.length, 3, 'wrapped-json: one object a line')
  for (const line of lines) t.match(line, { type: 'APIKey', api_version: 'core/v2' }, 'Sensu\'s wrapped form')
  t.same(lines.map(unwrapped), keys, 'metadata and spec are the key')

  const yaml = await cli(['list', '--namespace', ns, '--format', 'yaml'])
  assertOk(t, yaml, 'yaml')
  const docs = parseAllDocuments(yaml.stdout) as any[]
  t.equal(docs.length, 3, 'yaml: one document a key')
  t.same(docs.map(doc => unwrapped(doc.toJS())), keys, 'each a wrapped key')

  const tabular = await cli(['list', '--namespace', ns])
  assertOk(t, tabular, 'tabular (the default)')
  const { header, rows } = tableRows(tabular.stdout)
  t.same(header, ['Name', 'Namespace', 'Username', 'Created', 'Expires', 'Last used', 'Labels'], 'the columns')
  t.same(rows, keys.map((k: any) => [
    k.metadata.name, ns, k.username, iso(k.created_at), k.expires_at === undefined ? 'never' : iso(k.expires_at), 'never',
    ...Object.entries(k.metadata.labels ?? {}).map(([l, v]) => `${l}=${v}`)
  ]), 'a row a key, in the API\'s order')
  t.notMatch(tabular.stdout, '\x1b[', 'no colour when stdout is no terminal')

  const one = keys.find((k: any) => k.username === 'alice')
  const infoJson = await cli(['info', one.metadata.name, '--namespace', ns, '--format', 'json'])
  assertOk(t, infoJson, 'info json')
  t.same(JSON.parse(infoJson.stdout), one, 'info json: the key')
  t.same(unwrapped(JSON.parse((await cli(['info', one.metadata.name, '--namespace', ns, '--format', 'wrapped-json'])).stdout)), one, 'info wrapped-json')
  const infoYaml = parseAllDocuments((await cli(['info', one.metadata.name, '--namespace', ns, '--format', 'yaml'])).stdout) as any[]
  t.same(infoYaml.map(doc => unwrapped(doc.toJS())), [one], 'info yaml: one document')
  const infoTable = await cli(['info', one.metadata.name, '--namespace', ns])
  assertOk(t, infoTable, 'info tabular')
  const fields = Object.fromEntries(infoTable.stdout.split('\n').slice(1).filter(Boolean).map(line => {
    const [, name, value] = /^([^:]+): *(.*)$/.exec(line) ?? []
    return [name, value]
  }))
  t.match(fields, { Name: one.metadata.name, Namespace: ns, Username: 'alice', 'Created by': 'admin', Created: iso(one.created_at), Expires: 'never', 'Last used': 'never', Disabled: 'no', Labels: 'team=ops' }, 'info: a field a line')
  assertFails(t, await cli(['list', '--format', 'xml']), 2, /xml.*tabular, json, wrapped-json, yaml/, 'an unknown format')
})

t.test('--chunk-size 2 over 5 keys: three requests, all 5 keys; selectors and --all-namespaces', async t => {
  const ns = 'chunks'
  for (let i = 0; i < 5; i++) await grantKey(ns, i % 2 === 0 ? 'even' : 'odd', '--label', `n=${i}`)
  const keys = (await srv.api('GET', `/namespaces/${ns}/apikey`)).body
  const logged = () => logLines(srv.server.stdout()).filter(line => line.req?.url?.startsWith(`/api/core/v2/namespaces/${ns}/apikey?`) && /limit=2\b/.test(line.req.url)).length
  const before = logged()
  for (const format of ['json', 'tabular'] as const) {
    const run = await cli(['list', '--namespace', ns, '--chunk-size', '2', '--format', format])
    assertOk(t, run, `--chunk-size 2, ${format}`)
    const names = format === 'json' ? JSON.parse(run.stdout).map((k: any) => k.metadata.name) : tableRows(run.stdout).rows.map(row => row[0])
    t.same(names, keys.map((k: any) => k.metadata.name), `${format}: all 5, in order, the header once`)
  }
  t.equal(logged() - before, 6, 'each list took three pages of 2 (the server logged them)')
  assertFails(t, await cli(['list', '--chunk-size', '0']), 2, /--chunk-size.*1 to 1000/, 'a chunk size of 0')

  const selected = await cli(['list', '--namespace', ns, '--chunk-size', '2', '--format', 'json', '--label-selector', 'n in [1, 3, 4]', '--field-selector', 'api_key.username == odd'])
  assertOk(t, selected, 'both selectors')
  t.same(JSON.parse(selected.stdout).map((k: any) => k.metadata.labels.n).sort(), ['1', '3'], 'both apply, across pages')
  assertFails(t, await cli(['list', '--label-selector', 'n ==']), 1, /labelSelector/, 'a selector the server cannot parse: its message')

  const all = await cli(['list', '--all-namespaces', '--format', 'json', '--chunk-size', '3', '--field-selector', 'api_key.username in [even, alice]'])
  assertOk(t, all, '--all-namespaces')
  const everywhere = JSON.parse(all.stdout)
  t.ok(everywhere.some((k: any) => k.metadata.namespace === 'grants') && everywhere.some((k: any) => k.metadata.namespace === ns), 'keys of several namespaces')
  t.same(everywhere, (await srv.api('GET', '/apikeys?fieldSelector=' + encodeURIComponent('api_key.username in [even, alice]'))).body, 'as GET /apikeys lists them')
  assertFails(t, await cli(['list', '--all-namespaces', '--namespace', ns]), 2, /--all-namespaces and --namespace/, 'both')

  const empty = await cli(['list', '--namespace', 'nothing-here', '--format', 'json'])
  t.same(JSON.parse(empty.stdout), [], 'an empty list in json is []')
  t.equal((await cli(['list', '--namespace', 'nothing-here'])).stdout, 'No API keys.\n', 'and says so in a table')
})

t.test('label sets and removes labels with one merge patch', async t => {
  const { name } = await grantKey('labels', '--label', 'keep=1', '--label', 'drop=2')
  const run = await cli(['label', name, 'team=ops', 'drop-', '--namespace', 'labels'])
  assertOk(t, run, 'label')
  t.match(run.stdout, /: keep=1,team=ops\n$/, 'prints the labels it left')
  t.same((await srv.api('GET', `/namespaces/labels/apikey/${name}`)).body.metadata.labels, { keep: '1', team: 'ops' }, 'drop- removed drop, team=ops set team')
  assertFails(t, await cli(['label', name, 'oops', '--namespace', 'labels']), 2, /"oops" is neither key=value/, 'neither form')
  assertFails(t, await cli(['label', name, '--namespace', 'labels']), 2, /missing required argument/, 'no change')
  assertFails(t, await cli(['label', 'no-such-key', 'a=b', '--namespace', 'labels']), 1, /not found/, 'a missing key')
})

t.test('revoke asks on a terminal: y deletes, n does not; without a terminal it refuses', async t => {
  const { name } = await grantKey('revoke')
  const exists = async () => (await srv.api('GET', `/namespaces/revoke/apikey/${name}`)).status === 200

  const noTerminal = await cli(['revoke', name, '--namespace', 'revoke'])
  assertFails(t, noTerminal, 1, /no(ne| terminal).*--skip-confirm/, 'no terminal, no --skip-confirm')
  t.ok(await exists(), 'nothing deleted')

  const no = await runCliOnTerminal(['revoke', name, '--namespace', 'revoke'], { env: srv.env, input: 'n\n' })
  t.equal(no.code, 1, 'n: exit 1', { output: no.stdout })
  t.match(no.stdout, `Revoke API key '${name}' in namespace 'revoke'?`, 'the question, on the terminal')
  t.match(no.stdout, /canceled: nothing was changed/)
  t.ok(await exists(), 'n: nothing deleted')

  const yes = await runCliOnTerminal(['revoke', name, '--namespace', 'revoke'], { env: srv.env, input: 'y\n' })
  t.equal(yes.code, 0, 'y: exit 0', { output: yes.stdout })
  t.match(yes.stdout, `Revoked API key ${name} in namespace revoke.`)
  t.notOk(await exists(), 'y: deleted')

  const other = await grantKey('revoke')
  const skip = await cli(['revoke', other.name, '--namespace', 'revoke', '--skip-confirm'])
  assertOk(t, skip, '--skip-confirm')
  t.equal((await srv.api('GET', `/namespaces/revoke/apikey/${other.name}`)).status, 404, '--skip-confirm deletes without asking')
  assertFails(t, await cli(['revoke', other.name, '--namespace', 'revoke', '--skip-confirm']), 1, /not found/, 'a missing key')
})

t.test('revoke-all revokes a user\'s keys in every namespace; it asks too', async t => {
  const a = await grantKey('ra-one', 'mallory')
  const b = await grantKey('ra-two', 'mallory')
  const kept = await grantKey('ra-one', 'trent')
  assertFails(t, await cli(['revoke-all', 'mallory']), 1, /--skip-confirm/, 'no terminal')
  t.equal((await srv.api('GET', `/namespaces/ra-one/apikey/${a.name}`)).status, 200, 'nothing revoked')
  const no = await runCliOnTerminal(['revoke-all', 'mallory'], { env: srv.env, input: 'n\n' })
  t.equal(no.code, 1, 'n: exit 1')
  t.equal((await srv.api('GET', `/namespaces/ra-two/apikey/${b.name}`)).status, 200, 'n: nothing revoked')
  const run = await cli(['revoke-all', 'mallory', '--skip-confirm'])
  assertOk(t, run, 'revoke-all --skip-confirm')
  t.equal(run.stdout, 'Revoked 2 API keys of user mallory.\n')
  t.equal((await srv.api('GET', `/namespaces/ra-one/apikey/${a.name}`)).status, 404, 'gone in one namespace')
  t.equal((await srv.api('GET', `/namespaces/ra-two/apikey/${b.name}`)).status, 404, 'and in the other')
  t.equal((await srv.api('GET', `/namespaces/ra-one/apikey/${kept.name}`)).status, 200, 'another user\'s key stays')
})

t.test('failures: exit code and one line', async t => {
  assertFails(t, await cli(['list'], { APIKEYS_TOKEN: 'not-the-token-0123456789' }), 1, /^Error: .*\(the credentials came from APIKEYS_TOKEN\)/, 'a bad token')
  assertFails(t, await cli(['info', '0badc0de-0000-4000-8000-000000000000']), 1, /^Error: .*not found/, 'a missing key')
  assertFails(t, await cli(['info', 'bad/name']), 1, /^Error: /, 'a name the server refuses')
  const [closed] = await freePorts(1)
  assertFails(t, await cli(['list'], { APIKEYS_URL: `http://127.0.0.1:${closed}` }), 3, new RegExp(`^Error: cannot connect to http://127\\.0\\.0\\.1:${closed}: .*ECONNREFUSED`), 'a server that is down')
  assertFails(t, await cli(['lsit']), 2, /^Error: unknown command 'lsit' \(Did you mean list\?\)/, 'an unknown command')
  assertFails(t, await cli(['list', '--bogus']), 2, /unknown option '--bogus'/, 'an unknown flag')
  assertFails(t, await cli(['info']), 2, /missing required argument 'NAME'/, 'a missing argument')
  assertFails(t, await cli(['list'], { APIKEYS_URL: 'ftp://example' }), 2, /APIKEYS_URL must be an http/, 'a bad URL')
  const help = await cli(['--help'])
  assertOk(t, help, '--help')
  t.match(help.stdout, /Usage: apikeys/)
})

t.test('connection: flags win over the environment, the environment over ./data/admin-token', async t => {
  const cwd = await tempDir(t, 'apikeys-cwd-')
  mkdirSync(join(cwd, 'data'))
  writeFileSync(join(cwd, 'data', 'admin-token'), `${ADMIN_TOKEN}\nsecond-token-0123456789\n`, { mode: 0o600 })
  const env = { APIKEYS_URL: srv.url }
  const wrong = 'wrong-token-0123456789'
  const run = async (args: string[], extra: Record<string, string> = {}) => await runCli(args, { cwd, env: { ...env, ...extra } })

  assertOk(t, await run(['list']), 'the file alone')
  assertFails(t, await run(['list'], { APIKEYS_TOKEN: wrong }), 1, /APIKEYS_TOKEN/, 'APIKEYS_TOKEN wins over the file')
  assertOk(t, await run(['list', '--token', ADMIN_TOKEN], { APIKEYS_TOKEN: wrong }), '--token wins over APIKEYS_TOKEN')
  assertFails(t, await run(['list', '--token', wrong]), 1, /--token/, '--token wins over the file')
  const file = join(cwd, 'other-token')
  writeFileSync(file, `${ADMIN_TOKEN}\n`)
  chmodSync(file, 0o600)
  assertOk(t, await run(['list', '--token-file', file], { APIKEYS_TOKEN: wrong }), '--token-file wins over APIKEYS_TOKEN')
  assertFails(t, await run(['list', '--token-file', join(cwd, 'missing')]), 2, /cannot read the token file .*missing: ENOENT/, 'a missing --token-file')
  assertFails(t, await run(['list', '--token', ADMIN_TOKEN, '--api-key', 'x']), 2, /only one of/, 'two credentials flags')
  const { secret } = await grantKey('default')
  assertOk(t, await run(['list', '--api-key', secret], { APIKEYS_TOKEN: wrong }), '--api-key wins over APIKEYS_TOKEN')
  assertFails(t, await run(['list'], { APIKEYS_TOKEN: ADMIN_TOKEN, APIKEYS_KEY: secret }), 2, /both set/, 'both variables')
  assertFails(t, await runCli(['list'], { cwd: await tempDir(t), env }), 2, /no credentials: set APIKEYS_TOKEN/, 'no credentials anywhere')

  const [closed] = await freePorts(1)
  assertOk(t, await run(['list', '--url', srv.url], { APIKEYS_URL: `http://127.0.0.1:${closed}` }), '--url wins over APIKEYS_URL')
  assertFails(t, await run(['list'], { APIKEYS_URL: `http://127.0.0.1:${closed}` }), 3, /cannot connect/, 'APIKEYS_URL is used')

  const { name } = await grantKey('ns-env')
  const names = (r: Run) => JSON.parse(r.stdout).map((k: any) => k.metadata.name)
  t.same(names(await run(['list', '--format', 'json'], { APIKEYS_NAMESPACE: 'ns-env' })), [name], 'APIKEYS_NAMESPACE is used')
  t.same(names(await run(['list', '--format', 'json', '--namespace', 'ns-none'], { APIKEYS_NAMESPACE: 'ns-env' })), [], '--namespace wins over it')
})

t.test('colour on a terminal only, and never with NO_COLOR', async t => {
  await grantKey('colour')
  const args = ['list', '--namespace', 'colour']
  const tty = await runCliOnTerminal(args, { env: srv.env })
  t.equal(tty.code, 0)
  t.match(tty.stdout, '\x1b[1mName\x1b[22m', 'a terminal: the header in bold')
  const noColor = await runCliOnTerminal(args, { env: { ...srv.env, NO_COLOR: '1' } })
  t.equal(noColor.code, 0)
  t.match(noColor.stdout, /Name +Namespace/, 'NO_COLOR: the table')
  t.notMatch(noColor.stdout, '\x1b[', 'NO_COLOR: no escape sequence')
  const error = await runCliOnTerminal(['info', 'missing-key'], { env: srv.env })
  t.match(error.stdout, '\x1b[31mError:\x1b[39m', 'an error on a terminal: Error: in red')
})

t.test('completion: bash completes commands, flags and formats; zsh gets a script', async t => {
  const bash = await runCli(['completion', 'bash'])
  assertOk(t, bash, 'completion bash')
  const scriptFile = join(await tempDir(t), 'apikeys.bash')
  writeFileSync(scriptFile, bash.stdout)
  const complete = (line: string) => {
    const words = line.split(' ')
    const script = `source ${scriptFile}; COMP_WORDS=(${words.map(w => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _apikeys; echo "\${COMPREPLY[*]}"`
    const result = spawnSync('bash', ['-c', script], { encoding: 'utf8' })
    t.equal(result.stderr, '', `bash: ${line}`)
    return result.stdout.trim().split(' ').filter(Boolean)
  }
  t.same(complete('apikeys gr'), ['grant'], 'a command')
  t.same(complete('apikeys revoke'), ['revoke', 'revoke-all'], 'both commands that start so')
  t.same(complete('apikeys list --format '), ['tabular', 'json', 'wrapped-json', 'yaml'], 'a flag\'s values')
  t.ok(complete('apikeys --url http://x list --').includes('--chunk-size'), 'a command\'s flags, after a global flag and its value')
  t.same(complete('apikeys completion ').slice(0, 2), ['bash', 'zsh'], 'the shells, then the flags')
  const zsh = await runCli(['completion', 'zsh'])
  assertOk(t, zsh, 'completion zsh')
  t.match(zsh.stdout, /^#compdef apikeys\n/, 'a zsh completion function')
  for (const command of ['grant', 'list', 'info', 'revoke', 'revoke-all', 'label', 'rotate', 'disable', 'enable', 'completion']) {
    t.match(zsh.stdout, new RegExp(`\n {8}${command}\\) _arguments `), `zsh: ${command}`)
  }
  assertFails(t, await runCli(['completion', 'fish']), 2, /fish.*bash, zsh/, 'an unknown shell')
})

t.test('the bin: package.json names it and it starts with a node shebang', async t => {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'))
  t.equal(pkg.bin.apikeys, './dist/cli/apikeys.js')
  t.match(readFileSync(APIKEYS_BIN, 'utf8'), /^#!\/usr\/bin\/env node\n/)
})
