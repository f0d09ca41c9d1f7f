// Brute force: failed authentications are counted per client address; past the limit in a
// window, that address's invalid credentials get 429 with Retry-After until the window ends.
// Valid credentials are always served (SPEC: Containment): a flood of bad ones from a shared
// address (a NAT, a proxy) never locks out a valid key or token.
import t from 'tap'
import { sharedEtcd } from './helpers/etcd.js'
import { ADMIN_TOKEN, BASE, buildApp, keyAuth, type TestApp } from './helpers/app.js'
import { checkError } from './helpers/assert.js'
import { waitFor } from './helpers/wait.js'

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

const MAX = 5
const WINDOW = 2000

/** A list request from `address` with this bearer token (or other Authorization header). */
const from = (api: TestApp, address: string, token: string, authorization = `Bearer ${token}`) => api.app.inject({
  url: `${BASE}/namespaces/default/apikey`,
  remoteAddress: address,
  headers: { authorization }
})
const asAnswer = (res: Awaited<ReturnType<typeof from>>) => ({ statusCode: res.statusCode, headers: res.headers, body: res.body, json: () => res.json() })

t.test('an address past its failed authentications waits out the window; others go on', async t => {
  const api = await buildApp(t, etcd, { authFailureLimit: { max: MAX, timeWindow: WINDOW } })
  const attacker = '192.0.2.10'
  const other = '192.0.2.20'

  for (let i = 1; i <= MAX; i++) t.equal((await from(api, attacker, `guess-${i}`)).statusCode, 401, `failure ${i} of ${MAX}: 401`)
  const refused = asAnswer(await from(api, attacker, 'guess-6'))
  checkError(t, refused, 429, 9, 'one failure more')
  const wait = Number(refused.headers['retry-after'])
  t.ok(wait >= 1 && wait <= WINDOW / 1000, `Retry-After: ${wait} s, within the window`)
  t.match(refused.json().message, /too many failed authentications/)

  t.equal((await from(api, attacker, ADMIN_TOKEN)).statusCode, 200, 'the right token from that address is still served')
  t.equal((await from(api, attacker, 'guess-7')).statusCode, 429, 'while the next wrong one is refused')
  t.equal((await from(api, other, ADMIN_TOKEN)).statusCode, 200, 'another address goes on')
  t.equal((await from(api, other, 'wrong')).statusCode, 401, 'and is counted on its own')

  // Until the window ends; then a wrong token is a plain 401 again.
  const blockedAt = Date.now()
  const status = await waitFor(async () => {
    const { statusCode } = await from(api, attacker, 'guess-8')
    return statusCode !== 429 && statusCode
  }, { timeout: WINDOW + 3000, interval: 200, what: 'the failure window to end (an answer other than 429)' })
  t.equal(status, 401, 'after the window, a wrong token is counted anew: 401')
  t.ok(Date.now() - blockedAt >= (wait - 1) * 1000, 'and not before Retry-After had nearly passed')
})

t.test('successful authentications are not counted', async t => {
  const api = await buildApp(t, etcd, { authFailureLimit: { max: MAX, timeWindow: WINDOW } })
  const statuses = []
  for (let i = 0; i < MAX * 4; i++) statuses.push((await from(api, '192.0.2.30', ADMIN_TOKEN)).statusCode)
  t.same(new Set(statuses), new Set([200]), `${MAX * 4} right tokens from one address: all 200`)
})

t.test('a flood of bad credentials from one address never locks out the admin or a valid key', async t => {
  const api = await buildApp(t, etcd, { authFailureLimit: { max: 30, timeWindow: 60_000 } })
  const key = await api.createKey('default', { username: 'kim' })
  const shared = '192.0.2.40'
  const statuses = new Map<number, number>()
  for (let i = 0; i < 100; i++) {
    const status = (await from(api, shared, `bad-${i}`)).statusCode
    statuses.set(status, (statuses.get(status) ?? 0) + 1)
  }
  t.same(Object.fromEntries(statuses), { 401: 30, 429: 70 }, '100 bad tokens: 30 are 401, the rest 429')
  t.equal((await from(api, shared, ADMIN_TOKEN)).statusCode, 200, 'then the admin bearer token from that address is 200')
  t.equal((await from(api, shared, '', keyAuth(key.secret))).statusCode, 200, 'and so is a valid key')
  const forged = `Key sak_${'A'.repeat(43)}AAAAAA`
  checkError(t, asAnswer(await from(api, shared, '', forged)), 429, 9, 'while a bad key is refused')
  t.equal((await from(api, shared, 'bad-again')).statusCode, 429, 'and a bad token too')
})
