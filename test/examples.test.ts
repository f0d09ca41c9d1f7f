// Every example runs, as a user would run it, against real etcd. The plain JavaScript examples
// import the package by its name, so they prove the built package (dist/) from ESM and CommonJS.
import t from 'tap'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { sharedEtcd } from './helpers/etcd.js'
import { uniqueRoot } from './helpers/app.js'

const run = promisify(execFile)
const etcd = await sharedEtcd()
t.teardown(() => etcd.close())

async function runExample (file: string): Promise<any> {
  const { stdout } = await run(process.execPath, [file], {
    env: { ...process.env, ETCD_ENDPOINTS: etcd.endpoints.join(','), ETCD_ROOT: uniqueRoot() },
    timeout: 60_000
  })
  return JSON.parse(stdout.trim().split('\n').at(-1) ?? '')
}

t.test('plain JavaScript, ESM', async t => {
  t.same(await runExample('examples/plain-javascript.mjs'), { created: 201, listedAsAlice: ['alice'], verified: true })
})

t.test('CommonJS require', async t => {
  t.same(await runExample('examples/commonjs.cjs'), { created: 201, verified: true })
})
