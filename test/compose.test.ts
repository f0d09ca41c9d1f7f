// docker-compose.yml for real, with locally built images only (nothing is pulled): the etcd image
// of test/etcd-image (or ETCD_IMAGE), the Node image of docker/node-image, and the API image of the
// Dockerfile's `prebuilt` target (docker/build-prebuilt.sh). The stack comes up, a key is created
// over HTTP and read back, the etcd leader is stopped, the key is still read and another one is
// created, and `down -v` leaves no container, network or volume. Needs Docker and Docker Compose
// (`docker compose` or docker-compose 1.29): without them the test fails saying what to install.
import t, { type Test } from 'tap'
import { execFile, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http'
import { createServer } from 'node:net'
import { hostname } from 'node:os'
import { fileURLToPath } from 'node:url'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'

const REPO = fileURLToPath(new URL('..', import.meta.url))
const COMPOSE_FILE = `${REPO}docker-compose.yml`
const HOST = hostname().toLowerCase().replace(/[^a-z0-9]/g, '')
/** Names of what this test process makes: `<prefix><pid>`, so that leftovers of a killed run can be told apart. */
const PROJECT_PREFIX = `feakeys-test-${HOST}-`
const API_TAG_PREFIX = `fastify-etcd-apikeys:test-${HOST}-`
const PROJECT = `${PROJECT_PREFIX}${process.pid}`
const API_IMAGE = `${API_TAG_PREFIX}${process.pid}`
const NS_PATH = '/api/core/v2/namespaces/default/apikey'

const BUILD_TIMEOUT_MS = 180_000
const UP_TIMEOUT_MS = 180_000
const READY_TIMEOUT_MS = 60_000
const REQUEST_TIMEOUT_MS = 15_000
const DOWN_TIMEOUT_MS = 120_000
/** After the leader stops, how often a request answered 503 is asked again: once, so a 503 fails the test (a request first sent to the stopped member is retried on a live one within its deadline). */
const ATTEMPTS_AFTER_STOP = 1

// ---------------------------------------------------------------------------
// Commands

interface Output { stdout: string, stderr: string }

/** Runs a command without a shell; rejects with its last lines of output when it fails or outlives timeoutMs. */
async function run (file: string, args: string[], options: { timeoutMs: number, env?: NodeJS.ProcessEnv }): Promise<Output> {
  return await new Promise((resolve, reject) => {
    execFile(file, args, { cwd: REPO, env: options.env ?? process.env, timeout: options.timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err === null) return resolve({ stdout, stderr })
      const why = err.killed ? `killed after ${options.timeoutMs} ms` : `exit ${String(err.code)}`
      const tail = `${stderr}\n${stdout}`.trim().split('\n').slice(-15).join('\n')
      reject(new Error(`${[file, ...args].join(' ')}: ${why}\n${tail}`))
    })
  })
}

interface Compose { name: string, file: string, args: string[] }

/** `docker compose` (v2) if it works, else docker-compose (1.29); else what both said. */
async function findCompose (): Promise<Compose | string> {
  const candidates: Compose[] = [
    { name: 'docker compose', file: 'docker', args: ['compose'] },
    { name: 'docker-compose', file: 'docker-compose', args: [] }
  ]
  const said: string[] = []
  for (const candidate of candidates) {
    try {
      await run(candidate.file, [...candidate.args, 'version'], { timeoutMs: 20_000 })
      return candidate
    } catch (err) {
      const [head = '', ...tail] = (err as Error).message.split('\n')
      said.push(`${candidate.name}: ${head.endsWith('exit ENOENT') ? 'not found' : tail.find(line => line.trim() !== '') ?? head}`)
    }
  }
  return said.join('; ')
}

/** The variables docker-compose.yml reads, all set here, so that none comes from the caller's shell. */
function composeEnv (images: { etcd: string, node: string }, port: number): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ETCD_IMAGE: images.etcd,
    NODE_IMAGE: images.node,
    API_IMAGE,
    API_TARGET: 'prebuilt',
    API_PORT: String(port),
    // Unset: the server makes the token and keeps it in /data, which proves /data writable.
    APIKEY_ADMIN_TOKEN: ''
  }
  for (const name of ['APIKEY_ADMINS', 'ETCD_ROOT', 'REQUEST_TIMEOUT_MS', 'LOG_LEVEL', 'COMPOSE_FILE', 'COMPOSE_PROJECT_NAME']) delete env[name]
  return env
}

function composeArgs (compose: Compose, project: string, args: string[]): string[] {
  return [...compose.args, '--project-name', project, '--file', COMPOSE_FILE, ...args]
}

/** Removes the stacks and API images of test processes of this host that died without cleaning up. */
async function removeLeftovers (compose: Compose): Promise<void> {
  const listed = await Promise.all([
    run('docker', ['ps', '--all', '--filter', 'label=com.docker.compose.project', '--format', '{{.Label "com.docker.compose.project"}}'], { timeoutMs: 30_000 }),
    run('docker', ['volume', 'ls', '--filter', 'label=com.docker.compose.project', '--format', '{{.Label "com.docker.compose.project"}}'], { timeoutMs: 30_000 }),
    run('docker', ['images', '--format', '{{.Repository}}:{{.Tag}}', 'fastify-etcd-apikeys'], { timeoutMs: 30_000 })
  ])
  const dead = (name: string, prefix: string): boolean => {
    if (!name.startsWith(prefix)) return false
    const pid = Number(name.slice(prefix.length))
    if (!Number.isInteger(pid) || pid === process.pid) return false
    try { process.kill(pid, 0); return false } catch (err) { return (err as NodeJS.ErrnoException).code === 'ESRCH' }
  }
  const projects = new Set(`${listed[0].stdout}\n${listed[1].stdout}`.split('\n').filter(p => dead(p, PROJECT_PREFIX)))
  for (const project of projects) {
    await run(compose.file, composeArgs(compose, project, ['down', '--volumes', '--remove-orphans', '--timeout', '5']),
      { timeoutMs: DOWN_TIMEOUT_MS, env: composeEnv({ etcd: 'unused', node: 'unused' }, 0) }).catch(() => {})
  }
  for (const image of listed[2].stdout.split('\n').filter(i => dead(i, API_TAG_PREFIX))) {
    await run('docker', ['rmi', image], { timeoutMs: 60_000 }).catch(() => {})
  }
}

async function freePort (): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  await new Promise(resolve => server.close(resolve))
  if (address === null || typeof address === 'string') throw new Error('no free port')
  return address.port
}

// ---------------------------------------------------------------------------
// HTTP

interface Answer { status: number, headers: IncomingHttpHeaders, body: any, ms: number }

/**
 * One request, with node:http rather than fetch: while the API's container starts, Docker's port
 * proxy accepts connections and drops them, and Node 20's fetch then neither settles nor keeps the
 * process alive.
 */
async function call (port: number, method: 'GET' | 'POST', path: string, token?: string): Promise<Answer> {
  const started = performance.now()
  return await new Promise((resolve, reject) => {
    const req = httpRequest({
      host: '127.0.0.1',
      port,
      method,
      path,
      headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
      timeout: REQUEST_TIMEOUT_MS
    }, res => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('error', reject)
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString()
        let body: unknown = text
        try { body = JSON.parse(text) } catch {}
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, ms: performance.now() - started })
      })
    })
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within ${REQUEST_TIMEOUT_MS} ms`)))
    req.on('error', reject)
    req.end()
  })
}

const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`

// ---------------------------------------------------------------------------
// The test

async function prerequisites (): Promise<Compose | string> {
  try {
    await run('docker', ['info', '--format', '{{.ServerVersion}}'], { timeoutMs: 30_000 })
  } catch (err) {
    return 'Docker is needed to test docker-compose.yml: install it (apt-get install docker.io) and start ' +
      `dockerd, as .ci/run does. \`docker info\` failed: ${(err as Error).message}`
  }
  const compose = await findCompose()
  if (typeof compose === 'string') {
    return 'Docker Compose is needed to test docker-compose.yml: apt-get install docker-compose (1.29), or ' +
      `the Compose plugin for \`docker compose\`. Neither works here: ${compose}`
  }
  return compose
}

const found = await prerequisites()
if (typeof found === 'string') {
  t.fail(found)
} else {
  const compose = found
  t.test(`${compose.name} up: the API on a three-member etcd cluster`, async t => {
    const timed = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
      const started = performance.now()
      const result = await fn()
      t.comment(`${what}: ${seconds(performance.now() - started)}`)
      return result
    }
    await removeLeftovers(compose)

    // Cleanup, registered before anything is made: down with the volumes (below, or in teardown,
    // or at exit if the process ends first), then the API image. The exit hook runs down again
    // when an asynchronous one did not finish.
    const state: { env?: NodeJS.ProcessEnv, downDone: boolean } = { downDone: false }
    const downArgs = composeArgs(compose, PROJECT, ['down', '--volumes', '--remove-orphans', '--timeout', '5'])
    const cleanupAtExit = (): void => {
      if (state.env !== undefined && !state.downDone) spawnSync(compose.file, downArgs, { cwd: REPO, env: state.env, stdio: 'ignore', timeout: DOWN_TIMEOUT_MS })
      spawnSync('docker', ['rmi', API_IMAGE], { stdio: 'ignore', timeout: 60_000 })
    }
    process.once('exit', cleanupAtExit)
    t.teardown(async () => {
      if (state.env !== undefined && !state.downDone) await run(compose.file, downArgs, { timeoutMs: DOWN_TIMEOUT_MS, env: state.env }).catch(() => {})
      state.downDone = true
      await run('docker', ['rmi', API_IMAGE], { timeoutMs: 60_000 }).catch(() => {})
      process.removeListener('exit', cleanupAtExit)
    })

    // Images, all built here from what the machine has.
    const etcdImage = (process.env.ETCD_IMAGE ?? '') !== ''
      ? process.env.ETCD_IMAGE as string
      : await timed('etcd image (test/etcd-image/build.sh)', async () =>
        (await run('bash', ['test/etcd-image/build.sh'], { timeoutMs: BUILD_TIMEOUT_MS })).stdout.trim())
    const nodeImage = await timed('Node image (docker/node-image/build.sh)', async () =>
      (await run('bash', ['docker/node-image/build.sh'], { timeoutMs: BUILD_TIMEOUT_MS })).stdout.trim())
    await timed(`API image, target prebuilt (docker/build-prebuilt.sh ${API_IMAGE})`, async () =>
      await run('bash', ['docker/build-prebuilt.sh', API_IMAGE], { timeoutMs: BUILD_TIMEOUT_MS, env: { ...process.env, NODE_IMAGE: nodeImage } }))
    t.comment(`images: etcd ${etcdImage}, node ${nodeImage}, api ${API_IMAGE}`)

    const port = await freePort()
    const stackEnv = composeEnv({ etcd: etcdImage, node: nodeImage }, port)
    state.env = stackEnv
    const composeRun = async (args: string[], timeoutMs = 60_000): Promise<string> =>
      (await run(compose.file, composeArgs(compose, PROJECT, args), { timeoutMs, env: stackEnv })).stdout

    try {
      await stack(t, { port, composeRun, timed })
    } catch (err) {
      const logs = await composeRun(['logs', '--no-color', '--tail', '20']).catch((e: Error) => e.message)
      t.comment(`logs of the stack:\n${logs}`)
      throw err
    }

    await timed('down -v', async () => {
      await composeRun(['down', '--volumes', '--remove-orphans', '--timeout', '10'], DOWN_TIMEOUT_MS)
      state.downDone = true
    })
    const label = `label=com.docker.compose.project=${PROJECT}`
    for (const [kind, args] of [['container', ['ps', '--all']], ['network', ['network', 'ls']], ['volume', ['volume', 'ls']]] as const) {
      const left = await run('docker', [...args, '--quiet', '--filter', label], { timeoutMs: 30_000 })
      t.equal(left.stdout.trim(), '', `down -v leaves no ${kind} of the project`)
    }
  })
}

interface StackContext {
  port: number
  composeRun: (args: string[], timeoutMs?: number) => Promise<string>
  timed: <T>(what: string, fn: () => Promise<T>) => Promise<T>
}

async function stack (t: Test, { port, composeRun, timed }: StackContext): Promise<void> {
  // `up` returns once the API's container is started, which is after the etcd members are healthy.
  await timed('up -d (until the etcd members are healthy and the API started)', async () =>
    await composeRun(['up', '--detach', '--no-build'], UP_TIMEOUT_MS))
  await timed('API ready (GET /ready is 200)', async () => {
    const deadline = Date.now() + READY_TIMEOUT_MS
    let last = 'no answer'
    for (;;) {
      try {
        const answer = await call(port, 'GET', '/ready')
        if (answer.status === 200) return
        last = `${answer.status} ${JSON.stringify(answer.body)}`
      } catch (err) {
        last = (err as Error).message
      }
      if (Date.now() > deadline) throw new Error(`GET /ready not 200 within ${READY_TIMEOUT_MS} ms (last: ${last})`)
      await sleep(500)
    }
  })

  // Not root: as the image says, and as the kernel sees the process.
  const api = (await composeRun(['ps', '--quiet', 'api'])).trim()
  const user = (await run('docker', ['inspect', '--format', '{{.Config.User}}', api], { timeoutMs: 30_000 })).stdout.trim()
  t.equal(user, '10001:10001', 'the API container runs as 10001:10001')
  // docker top needs the pid column; the second one is the uid.
  const uids = (await run('docker', ['top', api, '-o', 'pid,uid'], { timeoutMs: 30_000 })).stdout.trim().split('\n').slice(1)
    .map(line => line.trim().split(/\s+/)[1])
  t.ok(uids.length > 0 && uids.every(uid => uid === '10001'), `its processes run as uid 10001 (docker top: ${uids.join(', ')})`)

  // The server made the token and kept it in the volume at /data.
  const token = (await composeRun(['exec', '-T', 'api', 'node', '-p', "require('fs').readFileSync('/data/admin-token', 'utf8').trim()"])).trim()
  t.ok(token.length >= 16, 'the server made an admin token in /data, writable by its user')

  const { created, location } = await timed('create a key and read it back', async () => {
    const created = await call(port, 'POST', NS_PATH, token)
    t.equal(created.status, 201, 'POST creates a key')
    const location = created.headers.location ?? ''
    t.match(location, `${NS_PATH}/`, 'with a Location')
    const read = await call(port, 'GET', location, token)
    t.equal(read.status, 200, 'GET of the Location is 200')
    const { key, ...withoutSecret } = created.body as Record<string, unknown>
    t.same(read.body, withoutSecret, 'and the key as created, without its secret')
    return { created: withoutSecret, location }
  })

  // etcd is reached on the stack's network only, and compacts its history every 5 minutes.
  for (const service of ['etcd1', 'etcd2', 'etcd3']) {
    const id = (await composeRun(['ps', '--quiet', service])).trim()
    const inspect = async (format: string) => JSON.parse((await run('docker', ['inspect', '--format', format, id], { timeoutMs: 30_000 })).stdout)
    const ports = await inspect('{{json .NetworkSettings.Ports}}') as Record<string, Array<{ HostPort: string }> | null> | null
    const published = Object.entries(ports ?? {}).flatMap(([port, bindings]) => (bindings ?? []).map(b => `${port} on ${b.HostPort}`))
    t.same(published, [], `${service} publishes no port on the host`)
    const env = await inspect('{{json .Config.Env}}') as string[]
    t.ok(env.includes('ETCD_AUTO_COMPACTION_MODE=periodic') && env.includes('ETCD_AUTO_COMPACTION_RETENTION=5m'), `${service} compacts every 5 minutes`)
  }

  const leader = await findLeader(t, composeRun)
  await timed(`stop ${leader} (the leader)`, async () => await composeRun(['stop', '--timeout', '10', leader]))

  await timed(`read and create with ${leader} stopped`, async () => {
    const read = await retrying503(t, 'GET the key', async () => await call(port, 'GET', location, token))
    t.equal(read.status, 200, `GET of the key is still 200 with ${leader} stopped`)
    t.same(read.body, created, 'the same key')
    const another = await retrying503(t, 'POST another key', async () => await call(port, 'POST', NS_PATH, token))
    t.equal(another.status, 201, `POST creates another key with ${leader} stopped`)
    const again = await call(port, 'GET', another.headers.location ?? '', token)
    t.equal(again.status, 200, 'which reads back')
  })
}

/** The compose service of the etcd leader, from etcdctl in etcd1 (member ids compared as strings: they exceed 2^53). */
async function findLeader (t: Test, composeRun: StackContext['composeRun']): Promise<string> {
  const json = await composeRun(['exec', '-T', 'etcd1', '/usr/local/bin/etcdctl', '--endpoints=http://127.0.0.1:2379',
    'endpoint', 'status', '--cluster', '--write-out=json'])
  for (const entry of json.split('{"Endpoint":').slice(1)) {
    const service = /^"http:\/\/(etcd\d):2379"/.exec(entry)?.[1]
    const member = /"member_id":(\d+)/.exec(entry)?.[1]
    const leader = /"leader":(\d+)/.exec(entry)?.[1]
    if (service !== undefined && member !== undefined && member === leader) return service
  }
  t.comment(`no leader found in etcdctl's answer; stopping etcd2: ${json.slice(0, 300)}`)
  return 'etcd2'
}

/**
 * A 503 with Retry-After says "ask again", and a client that follows it should not see the loss of
 * one member otherwise: the 503s are counted and reported, the last answer returned.
 */
async function retrying503 (t: Test, what: string, fn: () => Promise<Answer>): Promise<Answer> {
  const refused: string[] = []
  for (let attempt = 1; ; attempt++) {
    const answer = await fn()
    if (answer.status !== 503 || attempt === ATTEMPTS_AFTER_STOP) {
      if (refused.length > 0) t.comment(`${what}: answered 503 ${refused.length} time(s) first (after ${refused.join(', ')}), then ${answer.status}`)
      return answer
    }
    refused.push(seconds(answer.ms))
    await sleep(Number(answer.headers['retry-after'] ?? '1') * 1000)
  }
}
