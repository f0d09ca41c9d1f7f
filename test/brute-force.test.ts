// Brute force: failed authentications are counted per client address; past the limit in a
// window, that address gets 429 with Retry-After until the window ends, while others go on.
import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { sharedEtcd } from './helpers/etcd.js'
import { ADMIN_TOKEN, BASE, buildApp, type TestApp } from './helpers/app.js'
import { checkError } from './helpers/assert.js'

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

const MAX = 5
const WINDOW = 2000

/** A list request from `address` with this bearer token. */
const from = (api: TestApp, address: string, token: string) => api.app.inject({
  url: `${BASE}/namespaces/default/apikey`,
  remoteAddress: address,
  headers: { authorization: `Bearer ${token}` }
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

  t.equal((await from(api, attacker, ADMIN_TOKEN)).statusCode, 429, 'now even the right token from that address is refused')
  t.equal((await from(api, other, ADMIN_TOKEN)).statusCode, 200, 'another address goes on')
  t.equal((await from(api, other, 'wrong')).statusCode, 401, 'and is counted on its own')

  // Until the window ends; then the address may authenticate again.
  const blockedAt = Date.now()
  let status = 429
  while (status === 429 && Date.now() - blockedAt < WINDOW + 3000) {
    await sleep(200)
    status = (await from(api, attacker, ADMIN_TOKEN)).statusCode
  }
  t.equal(status, 200, 'after the window, the right token works again')
  t.ok(Date.now() - blockedAt >= (wait - 1) * 1000, 'and not before Retry-After had nearly passed')
})

t.test('successful authentications are not counted', async t => {
  const api = await buildApp(t, etcd, { authFailureLimit: { max: MAX, timeWindow: WINDOW } })
  const statuses = []
  for (let i = 0; i < MAX * 4; i++) statuses.push((await from(api, '192.0.2.30', ADMIN_TOKEN)).statusCode)
  t.same(new Set(statuses), new Set([200]), `${MAX * 4} right tokens from one address: all 200`)
})
