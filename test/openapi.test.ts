// The OpenAPI document: valid for swagger-parser and redocly's recommended rules, every route in
// it, and every answer of a scripted sequence valid against what it says of that status.
import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Writable } from 'node:stream'
import swagger from '@fastify/swagger'
import SwaggerParser from '@apidevtools/swagger-parser'
import { Ajv } from 'ajv'
import { buildServer } from '../lib/server/server.js'
import { loadConfig } from '../lib/server/config.js'
import { OCCASIONAL_HEADERS } from '../lib/http/openapi.js'
import { sharedEtcd } from './helpers/etcd.js'
import { ADMIN_TOKEN, BASE, buildApp, uniqueRoot, type Answer, type TestApp } from './helpers/app.js'
import { referenceExamples } from './fixtures/reference-examples.js'

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

const REPO = new URL('..', import.meta.url).pathname
type Doc = Record<string, any>

interface RegisteredRoute { method: string, url: string, hidden: boolean }

/** A host as a user writes one: @fastify/swagger first, then the plugin; every route it registers recorded. */
async function host (t: Test): Promise<{ api: TestApp, routes: RegisteredRoute[] }> {
  const routes: RegisteredRoute[] = []
  const api = await buildApp(t, etcd, { authFailureLimit: false }, async app => {
    app.addHook('onRoute', route => {
      for (const method of [route.method].flat()) routes.push({ method, url: route.url, hidden: (route.schema as { hide?: boolean } | undefined)?.hide === true })
    })
    await app.register(swagger, { openapi: { info: { title: 'a host', version: '1.0.0' } } })
  })
  return { api, routes }
}

/** The standalone server's own document, GET /openapi.json. */
async function standaloneDocument (t: Test): Promise<Doc> {
  let lines = 0
  const server = await buildServer(loadConfig({ ETCD_ENDPOINTS: etcd.endpoints.join(','), ETCD_ROOT: uniqueRoot(), APIKEY_ADMIN_TOKEN: ADMIN_TOKEN }),
    etcd.endpoints, { logStream: new Writable({ write (chunk, encoding, done) { lines++; done() } }) })
  t.teardown(() => server.close())
  const res = await server.inject({ url: '/openapi.json' })
  t.equal(res.statusCode, 200, 'the standalone server serves /openapi.json, without credentials')
  t.ok(lines > 0, 'the server logged (so its logs were captured)')
  return res.json()
}

const toPath = (url: string) => url.replace(/:([A-Za-z]+)/g, '{$1}')
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace']

function operations (doc: Doc): Array<{ path: string, method: string, op: Doc }> {
  return Object.entries(doc.paths as Doc).flatMap(([path, item]) =>
    Object.entries(item as Doc).filter(([method]) => METHODS.includes(method)).map(([method, op]) => ({ path, method, op })))
}

/** Runs redocly's CLI on the saved document; its JSON report. */
async function redoclyLint (t: Test, doc: Doc): Promise<{ problems: Array<{ ruleId: string, severity: string, message: string }> }> {
  const dir = await mkdtemp(join(tmpdir(), 'openapi-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const file = join(dir, 'openapi.json')
  await writeFile(file, JSON.stringify(doc, null, 2))
  const cli = join(REPO, 'node_modules', '@redocly', 'cli', 'bin', 'cli.js')
  const env = { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true', NO_COLOR: '1' }
  // Exit code 1 when there are errors: the report is read either way.
  const { stdout } = await promisify(execFile)(process.execPath, [cli, 'lint', '--extends=recommended', '--format=json', file], { env, cwd: dir, maxBuffer: 16 << 20 })
    .catch((err: { stdout?: string, stderr?: string }) => ({ stdout: err.stdout ?? '', stderr: err.stderr }))
  const start = stdout.indexOf('{')
  t.ok(start >= 0, 'redocly printed its JSON report', { stdout })
  return JSON.parse(stdout.slice(start))
}

async function checkValidDocument (t: Test, doc: Doc, what: string) {
  // swagger-parser dereferences in place: hand it a copy.
  const parsed = await SwaggerParser.validate(structuredClone(doc) as any) as Doc
  t.ok(parsed.openapi, `${what}: swagger-parser validates the document (OpenAPI ${doc.openapi})`)
  const report = await redoclyLint(t, doc)
  const errors = report.problems.filter(problem => problem.severity === 'error')
  t.same(errors, [], `${what}: redocly lint (recommended) reports no error`)
  t.comment(`${what}: redocly: ${errors.length} errors, ${report.problems.length - errors.length} warnings ${JSON.stringify(report.problems.map(p => p.ruleId))}`)
}

/** What every documented operation carries. */
function checkOperations (t: Test, doc: Doc) {
  t.same(Object.keys(doc.components.securitySchemes).sort(), ['apiKey', 'bearerToken'], 'both security schemes')
  t.match(doc.components.securitySchemes.bearerToken, { type: 'http', scheme: 'bearer' })
  t.match(doc.components.securitySchemes.apiKey, { type: 'apiKey', in: 'header', name: 'Authorization' })
  t.ok(doc.servers?.length > 0, 'servers')
  const ids = new Set<string>()
  // Every operation but the standalone server's unauthenticated probes: a route added without its answers fails here.
  for (const { path, method, op } of operations(doc).filter(({ op }) => !op.tags?.includes('probes'))) {
    const name = `${method.toUpperCase()} ${path}`
    t.match(op.operationId, /^[a-zA-Z]+$/, `${name}: an operationId`)
    t.notOk(ids.has(op.operationId), `${name}: its operationId is unique`)
    ids.add(op.operationId)
    t.match(op.summary, /\S/, `${name}: a summary`)
    t.same(op.security, [{ bearerToken: [] }, { apiKey: [] }], `${name}: either security scheme`)
    const statuses = Object.keys(op.responses)
    t.same(statuses.filter(status => !/^[1-5][0-9][0-9]$/.test(status)), [], `${name}: explicit statuses only`)
    for (const status of ['400', '401', '429', '500', '503']) t.ok(op.responses[status], `${name}: documents ${status}`)
    for (const status of statuses.filter(status => Number(status) >= 400)) {
      t.same(Object.keys(op.responses[status].content), ['application/json'], `${name} ${status}: JSON`)
      t.match(op.responses[status].content['application/json'].schema, { required: ['message', 'code'], properties: { message: { type: 'string' }, code: { type: 'integer' } } }, `${name} ${status}: the error body`)
    }
    for (const [status, headers] of [['401', 'WWW-Authenticate'], ['429', 'Retry-After'], ['503', 'Retry-After']]) {
      t.ok(op.responses[status].headers?.[headers], `${name} ${status}: documents ${headers}`)
    }
  }
  t.ok(ids.size >= 6, `${ids.size} operations of the plugin`)
}

t.test('the standalone server\'s document: valid for swagger-parser and redocly, every operation complete', async t => {
  const doc = await standaloneDocument(t)
  await checkValidDocument(t, doc, 'standalone')
  checkOperations(t, doc)
  t.same(doc.servers, [{ url: '/', description: 'this server' }])
})

t.test('a host that registers @fastify/swagger first gets all of it in its own document, every route in it', async t => {
  const { api, routes } = await host(t)
  const doc = api.app.swagger() as Doc
  await checkValidDocument(t, doc, 'host')
  checkOperations(t, doc)

  const documented = new Set(operations(doc).map(({ path, method }) => `${method.toUpperCase()} ${path}`))
  const shown = routes.filter(route => !route.hidden && route.method !== 'HEAD')
  const hidden = routes.filter(route => route.hidden)
  t.ok(shown.length >= 6 && hidden.length > 0, `${shown.length} routes shown, ${hidden.length} hidden (aliases, 405s, catch-alls)`)
  for (const route of shown) t.ok(documented.has(`${route.method} ${toPath(route.url)}`), `${route.method} ${route.url} is in the document`)
  for (const route of hidden) t.notOk(documented.has(`${route.method} ${toPath(route.url)}`), `${route.method} ${route.url} (hidden) is not`)
  t.equal(documented.size, new Set(shown.map(route => `${route.method} ${toPath(route.url)}`)).size, 'and nothing else')

  const examplesOf = (media: Doc) => Object.values(media.examples ?? {}).map((example: any) => example.value)
  const post = doc.paths[`${BASE}/namespaces/{namespace}/apikey`].post
  t.same(examplesOf(post.requestBody.content['application/json']), [referenceExamples['POST /apikey payload']], 'the reference\'s POST payload is the request example')
  // Every example validates against the schema beside it.
  const ajv = new Ajv({ strict: false, allErrors: true })
  let checked = 0
  for (const { path, method, op } of operations(doc)) {
    const media = [op.requestBody?.content, ...Object.values(op.responses).map((response: any) => response.content)].filter(Boolean).flatMap(content => Object.values(content))
    for (const one of media as Doc[]) {
      for (const value of examplesOf(one)) {
        checked++
        t.ok(ajv.validate(one.schema, value), `${method.toUpperCase()} ${path}: an example valid against its schema`, { errors: ajv.errors })
      }
    }
  }
  t.ok(checked >= 5, `${checked} examples checked`)
})

/** Checks one answer against what the document says of its route and status: body schema (ajv) and headers. */
function checkAnswer (t: Test, doc: Doc, ajv: Ajv, method: string, url: string, res: Answer, expected: number, occasional: string[] = []) {
  const name = `${method} ${url} → ${res.statusCode}`
  t.equal(res.statusCode, expected, `${name}: status ${expected}`, { body: res.body })
  const template = Object.keys(doc.paths).find(path => new RegExp(`^${path.replace(/\{[^}]+\}/g, '[^/]+')}$`).test(url.split('?')[0]))
  const response = template && doc.paths[template][method.toLowerCase()]?.responses[String(res.statusCode)]
  t.ok(response, `${name}: the document lists this status for this route`)
  if (!response) return
  const mediaType = String(res.headers['content-type'] ?? '').split(';')[0]
  if (response.content === undefined) {
    t.equal(res.body, '', `${name}: no body, as documented`)
  } else {
    t.ok(response.content[mediaType], `${name}: documented for ${mediaType}`)
    const valid = ajv.validate(response.content[mediaType]?.schema ?? false, res.json())
    t.ok(valid, `${name}: the body is valid against the document's schema (ajv)`, { errors: ajv.errors })
  }
  for (const [header, description] of Object.entries(response.headers ?? {}) as Array<[string, Doc]>) {
    const value = res.headers[header.toLowerCase()]
    if (OCCASIONAL_HEADERS.includes(header as never) && !occasional.includes(header)) continue
    t.ok(value !== undefined, `${name}: sends the documented header ${header}`)
    if (value !== undefined) t.ok(ajv.validate(description.schema, value), `${name}: ${header} matches its schema`, { value })
  }
}

t.test('every answer of a scripted sequence is valid against the document', async t => {
  const { api } = await host(t)
  const doc = await SwaggerParser.dereference(structuredClone(api.app.swagger()) as any) as Doc
  const ajv = new Ajv({ strict: false, allErrors: true })
  const collection = '/namespaces/default/apikey'
  const step = async (method: string, path: string, expected: number, options: { body?: unknown, headers?: Record<string, string>, auth?: string | null } = {}, occasional: string[] = []) => {
    const res = await api.call({ method: method as 'GET', path, ...options })
    checkAnswer(t, doc, ajv, method, `${BASE}${path}`.split('?')[0], res, expected, occasional)
    return res
  }

  const created = await step('POST', collection, 201, { body: { metadata: { labels: { team: 'ops' } } } })
  const name = created.json().metadata.name
  const once = { body: {}, headers: { 'idempotency-key': 'openapi-test-retry' } }
  await step('POST', collection, 201, once)
  const replayed = await step('POST', collection, 201, once, ['Idempotent-Replayed'])
  t.equal(replayed.headers['idempotent-replayed'], 'true', 'a retry with the same Idempotency-Key is a replay')
  await step('GET', collection, 200)
  const page = await step('GET', `${collection}?limit=1`, 200, {}, ['Sensu-Continue'])
  t.ok(page.headers['sensu-continue'], 'the first page of two says more follow')
  const item = `${collection}/${name}`
  const got = await step('GET', item, 200)
  await step('PATCH', item, 200, { body: JSON.stringify({ metadata: { labels: { team: 'dev' } } }), headers: { 'content-type': 'application/merge-patch+json', 'if-match': String(got.headers.etag) } })
  await step('PATCH', item, 412, { body: { metadata: { labels: { team: 'sre' } } }, headers: { 'if-match': String(got.headers.etag) } })
  const rotated = await step('POST', `${item}/rotate`, 200, { body: { grace_seconds: 60 }, headers: { 'idempotency-key': 'openapi-test-rotation' } })
  await step('POST', `${item}/rotate`, 200, { body: { grace_seconds: 60 }, headers: { 'idempotency-key': 'openapi-test-rotation' } }, ['Idempotent-Replayed'])
  await step('POST', `${item}/rotate`, 200)
  await step('POST', `${item}/rotate`, 409, { body: { grace_seconds: 60 }, headers: { 'idempotency-key': 'openapi-test-rotation' } })
  await step('POST', `${item}/rotate`, 412, { headers: { 'if-match': String(rotated.headers.etag) } })
  await step('POST', `${item}/rotate`, 400, { body: { grace_seconds: -1 } })
  await step('POST', `${collection}/no-such-key/rotate`, 404)
  await step('POST', collection, 400, { body: { colour: 'blue' } })
  await step('POST', collection, 415, { body: 'username=bob', headers: { 'content-type': 'application/x-www-form-urlencoded' } })
  await step('GET', collection, 401, { auth: null })
  await step('GET', collection, 401, { auth: 'Key sak_nothing' })
  await step('DELETE', item, 204)
  await step('GET', item, 404)
  await step('DELETE', item, 404)
  await step('DELETE', '/apikeys?username=nobody', 200)
  t.equal(api.logs().length > 0, true, 'the host logged (the leak watch saw its lines)')
})
