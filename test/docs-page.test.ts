// /docs on the standalone server, opened in headless Chromium (Debian's `chromium`, driven by
// playwright-core): the operations on the page, no page error, no request leaving the machine.
import t, { type Test } from 'tap'
import { existsSync, statSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import type { AddressInfo } from 'node:net'
import { chromium } from 'playwright-core'
import { buildServer } from '../lib/server/server.js'
import { loadConfig } from '../lib/server/config.js'
import { sharedEtcd } from './helpers/etcd.js'
import { ADMIN_TOKEN, uniqueRoot } from './helpers/app.js'

const CHROMIUM = '/usr/bin/chromium'
// A temporary file, so that a test run leaves the tree as it was; the README's picture is
// refreshed with `DOCS_SCREENSHOT=docs/docs-page.png npx tap test/docs-page.test.ts`.
const SCREENSHOT = process.env.DOCS_SCREENSHOT ?? join(tmpdir(), `docs-page-${process.pid}.png`)
const LOCAL = new Set(['127.0.0.1', 'localhost', '[::1]'])

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

async function server (t: Test, env: Record<string, string> = {}) {
  let lines = 0
  const app = await buildServer(loadConfig({ ETCD_ENDPOINTS: etcd.endpoints.join(','), ETCD_ROOT: uniqueRoot(), APIKEY_ADMIN_TOKEN: ADMIN_TOKEN, ...env }),
    etcd.endpoints, { logStream: new Writable({ write (chunk, encoding, done) { lines++; done() } }) })
  t.teardown(() => app.close())
  return { app, lines: () => lines }
}

t.test('DOCS=false: no /docs', async t => {
  const { app } = await server(t, { DOCS: 'false' })
  for (const url of ['/docs', '/docs/', '/docs/static/index.html', '/docs/json']) {
    t.equal((await app.inject({ url })).statusCode, 404, `${url} is a 404`)
  }
  t.equal((await app.inject({ url: '/openapi.json' })).statusCode, 200, '/openapi.json is still served')
})

t.test('/docs: the operations, drawn in Chromium from local assets only', async t => {
  if (!existsSync(CHROMIUM)) {
    t.fail(`Chromium is not installed at ${CHROMIUM}: apt-get install chromium (Debian's package; .ci/run installs it)`)
    return
  }
  const { app, lines } = await server(t)
  await app.listen({ host: '127.0.0.1', port: 0 })
  const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  const doc = (await app.inject({ url: '/openapi.json' })).json()

  // The page's own HTML and start-up script name no other host.
  const html = await (await fetch(`${base}/docs/static/index.html`)).text()
  t.same([...html.matchAll(/(?:src|href)\s*=\s*["']([^"']+)["']/g)].map(m => m[1]).filter(url => /^(https?:)?\/\//.test(url)), [], 'the HTML loads nothing from another host')
  const initializer = await (await fetch(`${base}/docs/static/swagger-initializer.js`)).text()
  t.notMatch(initializer.replace(/\/\/ .*$/gm, ''), /https?:\/\//, 'the start-up script names no URL (swagger\'s online validator off)')
  t.match(initializer, /validatorUrl: null/, 'the validator badge is off')

  const userDataDir = await mkdtemp(join(tmpdir(), 'chromium-'))
  t.teardown(() => rm(userDataDir, { recursive: true, force: true }))
  // launchPersistentContext passes --user-data-dir itself (playwright refuses it among the args).
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1280, height: 900 }
  })
  t.teardown(() => context.close())
  const outside: string[] = []
  const requested: string[] = []
  await context.route('**/*', async route => {
    const url = new URL(route.request().url())
    requested.push(url.pathname)
    if (LOCAL.has(url.hostname)) return await route.continue()
    outside.push(url.href)
    await route.abort()
  })
  const page = context.pages()[0] ?? await context.newPage()
  const pageErrors: string[] = []
  const consoleErrors: string[] = []
  page.on('pageerror', err => pageErrors.push(err.message))
  page.on('console', message => { if (message.type() === 'error') consoleErrors.push(message.text()) })

  await page.goto(`${base}/docs`)
  const operations = Object.entries(doc.paths as Record<string, Record<string, { summary: string }>>)
    .flatMap(([path, item]) => Object.entries(item).map(([method, op]) => ({ path, method, summary: op.summary })))
  await page.locator('.opblock').nth(operations.length - 1).waitFor({ timeout: 30_000 })
  t.equal(await page.locator('.opblock').count(), operations.length, `the page shows the ${operations.length} operations of the document`)
  for (const { path, method, summary } of operations) {
    const block = page.locator(`.opblock-${method}`).filter({ has: page.locator(`[data-path="${path}"]`) })
    t.equal(await block.count(), 1, `${method.toUpperCase()} ${path} is on the page`)
    t.equal(await block.getByText(summary, { exact: true }).count(), 1, `with its summary: ${summary}`)
  }
  await page.screenshot({ path: SCREENSHOT, fullPage: true })
  t.ok(statSync(SCREENSHOT).size > 10_000, `a screenshot of the page: ${SCREENSHOT}`)

  t.same(outside, [], 'no request left the machine')
  t.ok(requested.some(path => path.endsWith('.js')) && requested.some(path => path === '/docs/json'), `the page loaded its scripts and the document from here (${requested.length} requests)`)
  t.same(pageErrors, [], 'no page error')
  t.same(consoleErrors, [], 'no console error')
  t.ok(lines() > 0, 'the server logged (its logs were captured)')
})
