// A cluster member that stops answering (a dead machine, a frozen process) must not take every
// request sent its way to the deadline: each attempt has a fifth of the request's budget, the
// next one goes to another member, and the client's circuit breaker stops sending to the silent
// one after three failures in a row, so a fourth attempt always reaches a live member.
import t from 'tap'
import { createServer, type Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import { sharedEtcd } from './helpers/etcd.js'
import { buildApp } from './helpers/app.js'

const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

const REQUEST_TIMEOUT = 3000

/** A "member" that accepts connections and never says a word. */
async function silentMember (t: { teardown(fn: () => unknown): void }): Promise<string> {
  const sockets = new Set<Socket>()
  const server = createServer(socket => { sockets.add(socket); socket.on('close', () => sockets.delete(socket)) })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const socket of sockets) socket.destroy()
    server.close()
  })
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`
}

t.test('every request succeeds while one of two members never answers', async t => {
  const silent = await silentMember(t)
  // The boot's own check of etcd goes through the same attempts.
  const api = await buildApp(t, etcd, { etcd: { hosts: [silent, ...etcd.endpoints] }, requestTimeout: REQUEST_TIMEOUT })
  const { name } = await api.createKey('default')

  const statuses: number[] = []
  for (let i = 0; i < 24; i++) {
    const started = performance.now()
    const res = i % 3 === 0
      ? await api.call({ method: 'POST', path: '/namespaces/default/apikey', body: {} })
      : await api.call({ path: `/namespaces/default/apikey/${name}` })
    const elapsed = performance.now() - started
    statuses.push(res.statusCode)
    t.ok(elapsed <= REQUEST_TIMEOUT + 1000, `request ${i + 1} answered within requestTimeout + 1 s`)
    t.equal(res.statusCode, i % 3 === 0 ? 201 : 200, `request ${i + 1} succeeded`)
  }
  const created = statuses.filter(s => s === 201).length
  const keys = await api.call({ path: '/namespaces/default/apikey' })
  t.equal(keys.json().length, 1 + created, 'every acknowledged create is in etcd')
})
