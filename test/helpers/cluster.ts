// A three-member etcd cluster for the fault tests: three containers on one user-defined network
// through testcontainers, or else three etcd processes on loopback ports (see startWithFallback).
// Each member can be stopped, started, frozen and thawed; leader() says which one leads.
import { mkdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import {
  createNetwork,
  dockerHost,
  etcdFlags,
  freePorts,
  ownTempDir,
  runContainerMember,
  runEtcdProcess,
  startWithFallback,
  waitForHealth,
  type ControllableEtcd
} from './etcd.js'

export interface ClusterMember extends ControllableEtcd {
  /** Its etcd name. */
  name: string
  /** Its client URL, as this process reaches it; the same after stop() and start(). */
  endpoint: string
}

export interface EtcdCluster {
  source: ControllableEtcd['source']
  /** Every member's client URL, in the order of `members`. */
  endpoints: string[]
  members: ClusterMember[]
  /** The member that a majority of the members name as leader, once they do (an election may be under way). */
  leader(timeoutMs?: number): Promise<ClusterMember>
  /** Resolves once every member says it is healthy. */
  healthy(timeoutMs?: number): Promise<void>
  /** Removes the members and what they were started with. */
  close(): Promise<void>
}

const NAMES = ['etcd-0', 'etcd-1', 'etcd-2']
const CLIENT_PORT = 2379
const PEER_PORT = 2380
/** Two and a half times etcd's defaults (100 ms, 1 s), so that load on two shared cores does not cause elections. */
const TIMING_FLAGS = ['--heartbeat-interval=250', '--election-timeout=2500']
const STATUS_TIMEOUT_MS = 1000

export async function etcdCluster (): Promise<EtcdCluster> {
  return await startWithFallback({ what: 'a three-member cluster', container: containerCluster, binary: processCluster })
}

async function containerCluster (image: string): Promise<EtcdCluster> {
  const docker = await dockerHost()
  const network = await createNetwork(docker)
  // Fixed host ports: a member stopped and started again comes back on the same address.
  const hostPorts = await freePorts(NAMES.length)
  // Members reach each other by their names on the network.
  const initialCluster = NAMES.map((name) => `${name}=http://${name}:${PEER_PORT}`).join(',')
  const members = await startMembers(NAMES.map((name, i) => async () => await runContainerMember(docker, {
    image,
    command: [...etcdFlags({
      name,
      dataDir: '/etcd-data',
      clientUrl: `http://0.0.0.0:${CLIENT_PORT}`,
      peerUrl: `http://${name}:${PEER_PORT}`,
      listenPeerUrl: `http://0.0.0.0:${PEER_PORT}`,
      initialCluster
    }), ...TIMING_FLAGS],
    hostPort: hostPorts[i],
    network: { name: network.name, alias: name }
  })), network.remove)
  return await clusterOf('testcontainers', members, network.remove)
}

async function processCluster (etcdPath: string): Promise<EtcdCluster> {
  const dir = await ownTempDir()
  const removeDir = async (): Promise<void> => { await rm(dir, { recursive: true, force: true }) }
  const ports = await freePorts(2 * NAMES.length)
  const url = (port: number | undefined): string => `http://127.0.0.1:${port}`
  const peerUrl = (i: number): string => url(ports[2 * i + 1])
  const initialCluster = NAMES.map((name, i) => `${name}=${peerUrl(i)}`).join(',')
  const members = await startMembers(NAMES.map((name, i) => async () => {
    const memberDir = join(dir, name)
    await mkdir(memberDir)
    const endpoint = url(ports[2 * i])
    const flags = etcdFlags({ name, dataDir: join(memberDir, 'data'), clientUrl: endpoint, peerUrl: peerUrl(i), initialCluster })
    return await runEtcdProcess({ etcdPath, dir: memberDir, args: [...flags, ...TIMING_FLAGS], endpoint })
  }), removeDir)
  return await clusterOf('binary', members, removeDir)
}

/**
 * Starts the members together (none is healthy before a majority runs); if one fails, removes
 * the others and what `cleanup` removes.
 */
async function startMembers (starts: Array<() => Promise<ControllableEtcd>>, cleanup: () => Promise<void>): Promise<ControllableEtcd[]> {
  const results = await Promise.allSettled(starts.map(async (start) => await start()))
  const failed = results.find((r) => r.status === 'rejected')
  if (failed === undefined) return results.map((r) => (r as PromiseFulfilledResult<ControllableEtcd>).value)
  await Promise.all(results.map(async (r) => { if (r.status === 'fulfilled') await r.value.close() }))
  await cleanup()
  throw failed.reason
}

async function clusterOf (source: EtcdCluster['source'], handles: ControllableEtcd[], cleanup: () => Promise<void>): Promise<EtcdCluster> {
  const members: ClusterMember[] = handles.map((handle, i) => Object.assign(handle, {
    name: NAMES[i] as string,
    endpoint: handle.endpoints[0] as string
  }))
  /** etcd's member id (in the status answers) to the member. */
  const byId = new Map<string, ClusterMember>()

  /** What a member says of itself and of the leader, through etcd's JSON gateway; undefined if it does not answer. */
  const status = async (member: ClusterMember): Promise<{ leader: string } | undefined> => {
    try {
      const res = await fetch(`${member.endpoint}/v3/maintenance/status`, { method: 'POST', body: '{}', signal: AbortSignal.timeout(STATUS_TIMEOUT_MS) })
      if (!res.ok) return undefined
      const answer = await res.json() as { header: { member_id: string }, leader: string }
      byId.set(answer.header.member_id, member)
      return { leader: answer.leader }
    } catch {
      return undefined
    }
  }

  /**
   * One round of questions: the leader as soon as a majority has named it (not waiting for a
   * frozen member's timeout), or undefined; `named` gets every answer.
   */
  const askAll = async (named: string[]): Promise<ClusterMember | undefined> => await Promise.any(members.map(async (member) => {
    const answer = await status(member)
    if (answer === undefined) throw new Error('no answer')
    named.push(answer.leader)
    // A leader of 0 is none: an election is under way. A leader is known once it has answered once.
    const leader = byId.get(answer.leader)
    if (leader === undefined || named.filter((id) => id === answer.leader).length <= members.length / 2) throw new Error('no majority yet')
    return leader
  })).catch(() => undefined)

  const cluster: EtcdCluster = {
    source,
    endpoints: members.map((m) => m.endpoint),
    members,
    async leader (timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs
      for (;;) {
        const named: string[] = []
        const leader = await askAll(named)
        if (leader !== undefined) return leader
        if (Date.now() > deadline) throw new Error(`no leader that a majority names after ${timeoutMs} ms (they name: ${named.join(', ') || 'nothing'})`)
        await sleep(100)
      }
    },
    async healthy (timeoutMs = 30_000) {
      await Promise.all(members.map(async (m) => await waitForHealth(m.endpoint, timeoutMs, () => {})))
    },
    async close () {
      await Promise.all(members.map(async (m) => await m.close()))
      await cleanup()
    }
  }
  // Each member says its id now, so that leader() knows it even once the member is frozen.
  for (const member of members) {
    if (await status(member) === undefined) throw new Error(`${member.name} does not answer ${member.endpoint}/v3/maintenance/status`)
  }
  return cluster
}
