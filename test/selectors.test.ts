// Selectors (SPEC "Selectors"): the grammar, unit-tested without etcd, then labelSelector and
// fieldSelector through both list routes over real etcd, and unknown query parameters.
import t, { type Test } from 'tap'
import { randomUUID } from 'node:crypto'
import { parseSelector, selectorsOf, type SelectorKind } from '../lib/keys/selectors.js'
import { InvalidRequestError } from '../lib/keys/errors.js'
import type { ApiKey } from '../lib/keys/schemas.js'
import { sharedEtcd } from './helpers/etcd.js'
import { buildApp, keyAuth, type TestApp } from './helpers/app.js'
import { checkError } from './helpers/assert.js'
import { seedRaw } from './helpers/seed.js'
import { ALL, byteOrder, listPage, walk, type Key, type Scope } from './helpers/list.js'

// ---------------------------------------------------------------------------
// The grammar, without etcd

const key = (name: string, labels: Record<string, string> | undefined, more: Partial<ApiKey> = {}): ApiKey => ({
  metadata: { name, namespace: 'dev', ...(labels !== undefined && { labels }), created_by: 'admin' },
  username: 'alice',
  created_at: 0,
  ...more
})
const KEYS = [
  key('a', { team: 'ops', region: 'eu' }),
  key('b', { team: 'dev', region: 'us' }, { disabled: true }),
  key('c', { team: 'ops-east' }, { disabled: false }),
  key('d', undefined, { username: 'bob' }),
  key('e', { 'my label': 'a value', 'k8s.io/app': 'web:1' }, { metadata: { name: 'e', namespace: 'prod', labels: { 'my label': 'a value', 'k8s.io/app': 'web:1' }, created_by: 'carol' } })
]
/** The names of KEYS a statement keeps. */
const select = (kind: SelectorKind, text: string) => KEYS.filter(parseSelector(kind, text)).map(k => k.metadata.name)
const labels = (text: string) => select('labelSelector', text)
const fields = (text: string) => select('fieldSelector', text)

t.test('each operator, on labels', async t => {
  t.strictSame(labels('team == ops'), ['a'], '== is equality')
  t.strictSame(labels('team != ops'), ['b', 'c', 'd', 'e'], '!= holds for another value and for an absent label')
  t.strictSame(labels('team in [ops, dev]'), ['a', 'b'], 'in: one of the values')
  t.strictSame(labels('team notin [ops, dev]'), ['c', 'd', 'e'], 'notin: none of them, absent included')
  t.strictSame(labels('team matches ops'), ['a', 'c'], 'matches: contains')
  t.strictSame(labels('team matches east && region != eu'), ['c'], '&& joins clauses')
  t.strictSame(labels('team == ops && region == us'), [], 'every clause must hold')
  t.strictSame(labels('nope == x'), [], 'a label no key has')
  t.strictSame(labels('constructor == x'), [], 'a name of Object.prototype is not a label')
  t.strictSame(labels('constructor != x'), ['a', 'b', 'c', 'd', 'e'], 'and is absent everywhere')
})

t.test('each field of fieldSelector', async t => {
  t.strictSame(fields('api_key.name == b'), ['b'])
  t.strictSame(fields('api_key.namespace == prod'), ['e'])
  t.strictSame(fields('api_key.username == bob'), ['d'])
  t.strictSame(fields('api_key.created_by != admin'), ['e'])
  t.strictSame(fields('api_key.labels.team in [dev, ops-east]'), ['b', 'c'])
  t.strictSame(fields('api_key.labels.k8s.io/app == web:1'), ['e'], 'a label name with . and / after api_key.labels.')
  t.strictSame(fields('api_key.username notin [alice] && api_key.name matches d'), ['d'])
  t.strictSame(fields('api_key.disabled == true'), ['b'], 'disabled: true')
  t.strictSame(fields('api_key.disabled == false'), ['a', 'c', 'd', 'e'], 'disabled false, or absent: an absent field is false')
  t.strictSame(fields('api_key.disabled != true'), ['a', 'c', 'd', 'e'], '!= true: the same keys')
  t.strictSame(fields('api_key.disabled != false'), ['b'], '!= false: the disabled ones')
  t.strictSame(fields('api_key.disabled == yes'), [], 'only true and false name a state')
})

t.test('whitespace, quoting and bare words', async t => {
  t.strictSame(labels('team==ops'), ['a'], 'no space around ==')
  t.strictSame(labels('  team   ==ops  '), ['a'], 'any space around ==, leading and trailing')
  t.strictSame(labels('team!=ops&&region==us'), ['b'], 'none around != and &&')
  t.strictSame(labels('team in [ops,dev]'), ['a', 'b'], 'no space between values')
  t.strictSame(labels('team in [  ops ,  dev  ]'), ['a', 'b'], 'spaces inside the brackets')
  t.strictSame(labels('team\tin\t[ops]'), ['a'], 'a tab is a space')
  t.strictSame(labels('"my label" == "a value"'), ['e'], 'double quotes: spaces inside')
  t.strictSame(labels("'my label' == 'a value'"), ['e'], 'single quotes')
  t.strictSame(labels('team == "ops && region == us"'), [], '&& inside quotes is text')
  t.strictSame(labels('k8s.io/app == web:1'), ['e'], 'a bare word holds . / : and -')
  t.strictSame(labels('"k8s.io/app" in [\'web:1\', "x"]'), ['e'], 'quoted values in a list')
  t.strictSame(labels('team == ""'), [], 'an empty quoted value')
  t.strictSame(labels('team == in'), [], '"in" as a value is a word')
})

/** Asserts the statement is refused with exactly this message. */
function refused (t: Test, kind: SelectorKind, text: string, message: string) {
  t.throws(() => parseSelector(kind, text), new InvalidRequestError(message), JSON.stringify(text))
}

t.test('statements that do not parse: what is wrong, and where', async t => {
  refused(t, 'labelSelector', 'team', 'labelSelector: expected "==", "!=", "in", "notin" or "matches" after "team", found the end of the statement at position 4')
  refused(t, 'labelSelector', 'team ops', 'labelSelector: expected "==", "!=", "in", "notin" or "matches" after "team", found "ops" at position 5')
  refused(t, 'labelSelector', 'team = ops', 'labelSelector: unexpected character "=" at position 5 (did you mean "=="?); a bare word holds only A-Z a-z 0-9 . _ / : -, quote other values')
  refused(t, 'labelSelector', 'team == ops & x', 'labelSelector: unexpected character "&" at position 12 (did you mean "&&"?); a bare word holds only A-Z a-z 0-9 . _ / : -, quote other values')
  refused(t, 'labelSelector', 'team == ops region == eu', 'labelSelector: expected "&&" or the end of the statement after "ops", found "region" at position 12')
  refused(t, 'labelSelector', 'team == ops ||x', 'labelSelector: unexpected character "|" at position 12; a bare word holds only A-Z a-z 0-9 . _ / : -, quote other values')
  refused(t, 'labelSelector', 'team ==', 'labelSelector: expected a value (a bare word or a quoted string) after "==", found the end of the statement at position 7')
  refused(t, 'labelSelector', '== ops', 'labelSelector: expected a label name, found "==" at position 0')
  refused(t, 'labelSelector', 'team == ops &&', 'labelSelector: expected a label name after "&&", found the end of the statement at position 14')
  refused(t, 'labelSelector', 'team in ops', 'labelSelector: expected "[" after "in", found "ops" at position 8')
  refused(t, 'labelSelector', 'team in [ops', 'labelSelector: expected "," or "]" after "ops", found the end of the statement at position 12')
  refused(t, 'labelSelector', 'team in [ops dev]', 'labelSelector: expected "," or "]" after "ops", found "dev" at position 13')
  refused(t, 'labelSelector', 'team in []', 'labelSelector: expected a value (a bare word or a quoted string) after "[", found "]" at position 9')
  refused(t, 'labelSelector', 'team in [a,]', 'labelSelector: expected a value (a bare word or a quoted string) after ",", found "]" at position 11')
  refused(t, 'labelSelector', 'team in[ops]', 'labelSelector: expected a space after "in", found "[" at position 7')
  refused(t, 'labelSelector', 'team matches"x"', 'labelSelector: expected a space after "matches", found the string "x" at position 12')
  refused(t, 'labelSelector', '"team"in [ops]', 'labelSelector: expected a space after the string "team", found "in" at position 6')
  refused(t, 'labelSelector', 'team == "ops', 'labelSelector: the string opened with " at position 8 is not closed')
  refused(t, 'labelSelector', "team == 'ops\"", "labelSelector: the string opened with ' at position 8 is not closed")
  refused(t, 'labelSelector', 'team == ops!', 'labelSelector: unexpected character "!" at position 11 (did you mean "!="?); a bare word holds only A-Z a-z 0-9 . _ / : -, quote other values')
  refused(t, 'labelSelector', 'tëam == ops', 'labelSelector: unexpected character "ë" at position 1; a bare word holds only A-Z a-z 0-9 . _ / : -, quote other values')
  refused(t, 'labelSelector', '"" == x', 'labelSelector: empty label name at position 0')
  refused(t, 'labelSelector', '', 'labelSelector is empty: give a statement such as team == ops, or leave the parameter out')
  refused(t, 'labelSelector', '   ', 'labelSelector is empty: give a statement such as team == ops, or leave the parameter out')
  refused(t, 'labelSelector', `team == ${'x'.repeat(4096)}`, 'labelSelector is longer than 4096 characters')
  refused(t, 'labelSelector', `team ${'y'.repeat(50)}`, `labelSelector: expected "==", "!=", "in", "notin" or "matches" after "team", found "${'y'.repeat(37)}..." at position 5`)
})

t.test('fieldSelector: an unknown field says which fields there are', async t => {
  const fieldsAre = 'the fields are api_key.name, api_key.namespace, api_key.username, api_key.created_by, api_key.disabled and api_key.labels.<label name>'
  refused(t, 'fieldSelector', 'api_key.user == bob', `fieldSelector: unknown field "api_key.user" at position 0; ${fieldsAre}`)
  refused(t, 'fieldSelector', 'api_key.name == a && username == bob', `fieldSelector: unknown field "username" at position 21; ${fieldsAre}`)
  refused(t, 'fieldSelector', 'api_key.labels. == x', `fieldSelector: unknown field "api_key.labels." at position 0; ${fieldsAre}`)
  refused(t, 'fieldSelector', 'api_key.key == x', `fieldSelector: unknown field "api_key.key" at position 0; ${fieldsAre}`)
  refused(t, 'fieldSelector', '', 'fieldSelector is empty: give a statement such as api_key.username == alice, or leave the parameter out')
})

t.test('selectorsOf: both apply; neither is no filter', async t => {
  t.equal(selectorsOf({}), undefined, 'no selector, no filter')
  const both = selectorsOf({ labelSelector: 'team matches ops', fieldSelector: 'api_key.name != a' })!
  t.strictSame(KEYS.filter(both).map(k => k.metadata.name), ['c'], 'labelSelector and fieldSelector both hold')
})

// ---------------------------------------------------------------------------
// Over HTTP and real etcd

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

interface Fixture { app: TestApp, names: Record<string, string> }

/** Keys in `dev` and `prod` with labels, two of them bob's. */
async function fixture (t: Test): Promise<Fixture> {
  const app = await buildApp(t, etcd)
  const names: Record<string, string> = {}
  const make = async (id: string, ns: string, labels: Record<string, string>, username?: string) => {
    names[id] = (await app.createKey(ns, { metadata: { labels: { id, ...labels } }, ...(username !== undefined && { username }) })).name
  }
  await make('dev-ops', 'dev', { team: 'ops', region: 'eu' })
  await make('dev-web', 'dev', { team: 'web', region: 'us' })
  await make('dev-bob', 'dev', { team: 'ops' }, 'bob')
  await make('prod-ops', 'prod', { team: 'ops', region: 'us' })
  await make('prod-none', 'prod', {})
  await make('prod-bob', 'prod', { team: 'ops-east' }, 'bob')
  return { app, names }
}

/** The `id` labels of what a list answered, in the answer's order. */
const idsOf = (items: Key[]) => items.map(k => k.metadata.labels?.id as string)
/** The ids in the order the list gives them: etcd key order of `<namespace>/<name>`. */
const inKeyOrder = (f: Fixture, ids: string[]) =>
  [...ids].sort((a, b) => byteOrder(`${a.split('-')[0]}/${f.names[a]}`, `${b.split('-')[0]}/${f.names[b]}`))

t.test('each operator through both routes and both selectors', async t => {
  const f = await fixture(t)
  const cases: Array<[string, string, string[]]> = [
    ['team == ops', 'api_key.labels.team == ops', ['dev-ops', 'dev-bob', 'prod-ops']],
    ['team != ops', 'api_key.labels.team != ops', ['dev-web', 'prod-none', 'prod-bob']],
    ['team in [web, ops-east]', 'api_key.labels.team in [web, ops-east]', ['dev-web', 'prod-bob']],
    ['team notin [ops, web]', 'api_key.labels.team notin [ops,web]', ['prod-none', 'prod-bob']],
    ['team matches ops', 'api_key.labels.team matches ops', ['dev-ops', 'dev-bob', 'prod-ops', 'prod-bob']],
    ['team == ops && region == us', 'api_key.labels.team==ops&&api_key.labels.region==us', ['prod-ops']]
  ]
  for (const [label, field, ids] of cases) {
    for (const [scope, expected] of [[ALL, ids], ['dev', ids.filter(id => id.startsWith('dev-'))]] as Array<[Scope, string[]]>) {
      const where = scope === ALL ? 'GET /apikeys' : `GET ${scope}`
      for (const options of [{ labelSelector: label }, { fieldSelector: field }]) {
        const { res } = await listPage(f.app, scope, options)
        t.equal(res.statusCode, 200, `${where} ${JSON.stringify(options)}`, { body: res.body })
        t.strictSame(idsOf(res.json()), inKeyOrder(f, expected), `${where} ${JSON.stringify(options)}: ${expected.join(', ') || 'none'}`)
      }
    }
  }
  const fieldsOnly: Array<[string, string[]]> = [
    ['api_key.username == bob', ['dev-bob', 'prod-bob']],
    ['api_key.namespace == prod && api_key.username != bob', ['prod-ops', 'prod-none']],
    [`api_key.name in [${f.names['dev-web']}, ${f.names['prod-none']}]`, ['dev-web', 'prod-none']],
    ['api_key.created_by matches adm', Object.keys(f.names)]
  ]
  for (const [field, expected] of fieldsOnly) {
    const { res } = await listPage(f.app, ALL, { fieldSelector: field })
    t.strictSame(idsOf(res.json()), inKeyOrder(f, expected), `GET /apikeys fieldSelector ${field}`)
  }
})

t.test('fieldSelector api_key.disabled through both routes: a key disabled by PATCH, one by POST, and one enabled again', async t => {
  const f = await fixture(t)
  const patch = async (id: string, body: unknown) => {
    const ns = id.split('-')[0]
    const res = await f.app.call({ method: 'PATCH', path: `/namespaces/${ns}/apikey/${f.names[id]}`, body, headers: { 'content-type': 'application/merge-patch+json' } })
    t.equal(res.statusCode, 200, `PATCH ${id} ${JSON.stringify(body)}`, { body: res.body })
  }
  await patch('dev-web', { disabled: true })
  await patch('prod-ops', { disabled: true })
  await patch('prod-ops', { disabled: false })
  await patch('dev-bob', { disabled: true })
  await patch('dev-bob', { disabled: null })
  const made = (await f.app.createKey('prod', { metadata: { labels: { id: 'prod-off' } }, disabled: true })).name
  f.names['prod-off'] = made
  const off = ['dev-web', 'prod-off']
  const on = Object.keys(f.names).filter(id => !off.includes(id))
  for (const [statement, expected] of [['api_key.disabled == true', off], ['api_key.disabled == false', on], ['api_key.disabled != true', on]] as Array<[string, string[]]>) {
    t.strictSame(idsOf((await listPage(f.app, ALL, { fieldSelector: statement })).res.json()), inKeyOrder(f, expected), `GET /apikeys ${statement}`)
    t.strictSame(idsOf((await listPage(f.app, 'prod', { fieldSelector: statement })).res.json()), inKeyOrder(f, expected.filter(id => id.startsWith('prod-'))), `GET prod ${statement}`)
  }
})

t.test('both selectors given: both apply; with a non-admin, authorization applies too', async t => {
  const f = await fixture(t)
  const both = { labelSelector: 'team matches ops', fieldSelector: 'api_key.namespace == prod' }
  t.strictSame(idsOf((await listPage(f.app, ALL, both)).res.json()), inKeyOrder(f, ['prod-ops', 'prod-bob']), 'admin: both selectors')
  t.strictSame(idsOf((await listPage(f.app, 'prod', both)).res.json()), inKeyOrder(f, ['prod-ops', 'prod-bob']), 'namespaced: both selectors')
  const bob = keyAuth((await f.app.createKey('home', { username: 'bob' })).secret)
  t.strictSame(idsOf((await listPage(f.app, ALL, { ...both, auth: bob })).res.json()), ['prod-bob'], 'bob: both selectors, and only his keys')
  t.strictSame(idsOf((await listPage(f.app, ALL, { fieldSelector: 'api_key.username != bob', auth: bob })).res.json()), [], 'a selector never widens what bob sees')
})

t.test('a filtered walk gives every match once, in key order; the token carries no selector', async t => {
  const f = await fixture(t)
  for (const scope of [ALL, 'dev'] as Scope[]) {
    const expected = inKeyOrder(f, ['dev-ops', 'dev-bob', 'prod-ops'].filter(id => scope === ALL || id.startsWith('dev-')))
    const w = await walk(f.app, scope, 1, { labelSelector: 'team == ops' })
    t.strictSame(idsOf(w.items), expected, `${scope ?? 'all'}: every match, once, in key order`)
    t.ok(w.pages.every(p => p.length <= 1), 'no page over the limit')
    const decoded = w.tokens.slice(0, -1).map(tok => Buffer.from(tok!, 'base64url').toString('utf8'))
    t.ok(decoded.length > 0 && decoded.every(text => Object.keys(JSON.parse(text)).join() === 'v,rev,start'), 'the token is {v, rev, start}: no selector')
  }
  const page = await listPage(f.app, ALL, { limit: 5, labelSelector: 'team in [ops, web]' })
  t.strictSame(idsOf(page.res.json()), inKeyOrder(f, ['dev-ops', 'dev-web', 'dev-bob', 'prod-ops']), 'a page of 5 holds the 4 matches')
  t.equal(page.next, undefined, 'and no token: nothing remains')
})

t.test('a filtered page reads at most 10,000 keys: short, even empty, and still a token', async t => {
  const app = await buildApp(t, etcd)
  // In `cap`, 10,005 keys without the label sort ahead of three with it.
  await seedRaw(app, 'cap', 10_005, { labels: { team: 'web' } })
  const ops = await seedRaw(app, 'cap', 3, { labels: { team: 'ops' }, name: () => `ffffffff-ffff-4fff-bfff-${randomUUID().slice(-12)}` })
  for (const scope of [ALL, 'cap'] as Scope[]) {
    const first = await listPage(app, scope, { limit: 5, labelSelector: 'team == ops' })
    t.equal(first.res.statusCode, 200)
    t.strictSame(first.res.json(), [], `${scope ?? 'all'}: page 1 scanned 10,000 keys and found no match`)
    t.ok(first.next, 'and still carries a token')
    const rest = await walk(app, scope, 5, { labelSelector: 'team == ops', from: first.next })
    t.strictSame(rest.items.map(k => k.metadata.name).sort(byteOrder), ops.map(s => s.body.metadata.name as string).sort(byteOrder), 'the walk goes on to the three matches')
    t.equal(rest.tokens.at(-1), undefined, 'and ends')
  }
})

t.test('bad statements: a 400 with the position, nothing listed', async t => {
  const f = await fixture(t)
  for (const scope of [ALL, 'dev'] as Scope[]) {
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{ labelSelector: 'team = ops' }, /^labelSelector: unexpected character "=" at position 5/],
      [{ labelSelector: 'team ops' }, /^labelSelector: expected "==", "!=", "in", "notin" or "matches" after "team", found "ops" at position 5$/],
      [{ fieldSelector: 'api_key.team == ops' }, /^fieldSelector: unknown field "api_key.team" at position 0/],
      [{ labelSelector: 'team == ops', fieldSelector: 'api_key.name ==' }, /^fieldSelector: expected a value .* at position 15$/],
      [{ labelSelector: '' }, /^labelSelector is empty/]
    ]
    for (const [options, message] of cases) {
      const { res } = await listPage(f.app, scope, { limit: 10, ...options })
      checkError(t, res, 400, 1, `${scope ?? 'all'} ${JSON.stringify(options)}`)
      t.match(res.json().message, message)
      t.equal(res.headers['sensu-continue'], undefined, 'no token')
      t.notOk(Object.values(f.names).some(name => res.body.includes(name)), 'no key named')
    }
  }
})

t.test('an unknown query parameter is a 400 that names it, on every route', async t => {
  const f = await fixture(t)
  const dev = f.names['dev-ops']
  const before = await f.app.snapshot()
  const routes: Array<[string, 'GET' | 'POST' | 'PATCH' | 'DELETE', unknown?]> = [
    ['/apikeys?labelSelecter=team%3D%3Dops', 'GET'],
    ['/namespaces/dev/apikey?labelSelecter=team%3D%3Dops', 'GET'],
    ['/namespaces/dev/apikeys?limit=1&selector=x', 'GET'],
    ['/namespaces/dev/apikey?labelSelecter=x', 'POST', {}],
    [`/namespaces/dev/apikey/${dev}?labelSelecter=x`, 'GET'],
    [`/namespaces/dev/apikey/${dev}?labelSelecter=x`, 'PATCH', { metadata: { labels: { x: 'y' } } }],
    [`/namespaces/dev/apikey/${dev}?labelSelecter=x`, 'DELETE'],
    ['/apikeys?username=bob&labelSelecter=x', 'DELETE']
  ]
  for (const [path, method, body] of routes) {
    const res = await f.app.call({ path, method, ...(body !== undefined && { body }) })
    checkError(t, res, 400, 1, `${method} ${path}`)
    t.match(res.json().message, /^unknown query parameter "(labelSelecter|selector)": this route takes /, 'names the parameter')
  }
  const item = await f.app.call({ path: `/namespaces/dev/apikey/${dev}?x=1` })
  t.equal(item.json().message, 'unknown query parameter "x": this route takes no query parameters', 'says the route takes none')
  const list = await f.app.call({ path: '/apikeys?labelselector=x' })
  t.equal(list.json().message, 'unknown query parameter "labelselector": this route takes limit, continue, labelSelector, fieldSelector', 'names are case-sensitive, and the message lists the right ones')
  t.strictSame(await f.app.snapshot(), before, 'nothing changed in etcd')
  t.equal((await f.app.call({ path: `/namespaces/dev/apikey/${dev}` })).statusCode, 200, 'the key is still there')
  const twice = await f.app.call({ path: '/apikeys?labelSelector=a%3D%3Db&labelSelector=c%3D%3Dd' })
  checkError(t, twice, 400, 1, 'a selector given twice')
})
