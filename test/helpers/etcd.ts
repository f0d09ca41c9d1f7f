// etcd for the tests: from ETCD_ENDPOINTS, from an image run by testcontainers,
// or from an `etcd` binary on PATH, whichever is found first (see sharedEtcd). This file chooses
// the source; etcd-containers.ts and etcd-processes.ts start etcd each way, etcd-harness.ts holds
// what they share, and lib/server/etcd-process.ts the flags, spawn, health wait and ports.
import { findOnPath } from '../../lib/server/etcd-process.js'
import { startContainerEtcd } from './etcd-containers.js'
import { startBinaryEtcd } from './etcd-processes.js'
import { DEFAULT_IMAGE, LOCAL_IMAGE_HINT, oneLine, type ControllableEtcd, type EtcdHandle } from './etcd-harness.js'

export { freePorts, waitForHealth } from '../../lib/server/etcd-process.js'
export { etcdFlags, type MemberFlags } from './etcd-flags.js'
export { createNetwork, dockerHost, runContainerMember, type ContainerMemberOptions, type DockerHost } from './etcd-containers.js'
export { grpcProxy, restorableEtcd, runEtcdProcess, type RestorableEtcd } from './etcd-processes.js'
export { oneLine, ownTempDir, type ControllableEtcd, type EtcdHandle, type EtcdSource } from './etcd-harness.js'

// ---------------------------------------------------------------------------
// Public API

let shared: { etcd: Promise<ControllableEtcd>, users: number } | undefined

/**
 * An etcd for tests that only read and write keys. Within one test process,
 * calls share one etcd; it is stopped when the last handle is closed.
 */
export async function sharedEtcd (): Promise<EtcdHandle> {
  const fromEnv = process.env.ETCD_ENDPOINTS?.split(',').map((e) => e.trim()).filter(Boolean)
  if (fromEnv !== undefined && fromEnv.length > 0) {
    announce(`ETCD_ENDPOINTS at ${fromEnv.join(',')}`)
    return { endpoints: fromEnv, source: 'ETCD_ENDPOINTS', close: async () => {} }
  }
  if (shared === undefined) {
    const etcd = startOwnEtcd({ fixedPort: false })
    shared = { etcd, users: 0 }
    etcd.catch(() => { shared = undefined })
  }
  const entry = shared
  entry.users++
  const etcd = await entry.etcd
  let closed = false
  return {
    endpoints: etcd.endpoints,
    source: etcd.source,
    async close () {
      if (closed) return
      closed = true
      if (--entry.users === 0) {
        if (shared === entry) shared = undefined
        await etcd.close()
      }
    }
  }
}

/**
 * An etcd of the caller's own (never ETCD_ENDPOINTS), for tests that freeze,
 * stop, restart or compact it.
 */
export async function dedicatedEtcd (): Promise<ControllableEtcd> {
  return await startOwnEtcd({ fixedPort: true })
}

// ---------------------------------------------------------------------------
// Choosing a source

async function startOwnEtcd ({ fixedPort }: { fixedPort: boolean }): Promise<ControllableEtcd> {
  return await startWithFallback({
    container: async (image) => await startContainerEtcd(image, fixedPort),
    binary: startBinaryEtcd
  })
}

/** The two ways to start an etcd of the tests' own (cluster.ts starts three members each way). */
export interface EtcdStarters<T extends { endpoints: string[] }> {
  /** What is started, for the messages; default one etcd. */
  what?: string
  container (image: string): Promise<T>
  binary (etcdPath: string): Promise<T>
}

/** Starts through testcontainers, or else with the etcd binary on PATH; says on stderr which. */
export async function startWithFallback<T extends { endpoints: string[] }> ({ what, container, binary }: EtcdStarters<T>): Promise<T> {
  const image = process.env.ETCD_IMAGE ?? DEFAULT_IMAGE
  const suffix = what === undefined ? '' : `, ${what},`
  const failures: string[] = []

  try {
    const etcd = await container(image)
    announce(`testcontainers (image ${image})${suffix} at ${etcd.endpoints.join(',')}`)
    return etcd
  } catch (err) {
    const why = oneLine(err)
    failures.push(`testcontainers (image ${image}): ${why}`)
    announce(`testcontainers unavailable (image ${image}): ${why}; trying an etcd binary on PATH`)
  }

  try {
    const etcdPath = findOnPath('etcd')
    if (etcdPath === undefined) throw new Error('no etcd on PATH')
    const etcd = await binary(etcdPath)
    announce(`binary (${etcdPath})${suffix} at ${etcd.endpoints.join(',')}`)
    return etcd
  } catch (err) {
    failures.push(`etcd binary: ${oneLine(err)}`)
  }

  throw new Error([
    'No etcd for the tests. Tried:',
    ...failures.map((f) => `  - ${f}`),
    'Any one of these will do:',
    '  - put an etcd binary on PATH, e.g. `apt-get install etcd-server` (Debian/Ubuntu);',
    '  - start Docker, so that testcontainers can run an etcd image: ETCD_IMAGE (default',
    `    ${DEFAULT_IMAGE}); with no registry at hand, build one from the Debian`,
    `    binaries with \`test/etcd-image/build.sh\` and set ETCD_IMAGE=${LOCAL_IMAGE_HINT};`,
    '  - run etcd yourself and set ETCD_ENDPOINTS=http://127.0.0.1:2379 (comma-separated;',
    '    used by sharedEtcd() only: tests that need dedicatedEtcd() still need one of the above).'
  ].join('\n'))
}

function announce (what: string): void {
  process.stderr.write(`# etcd: ${what}\n`)
}
