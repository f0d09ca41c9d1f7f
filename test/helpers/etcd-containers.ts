// etcd in containers, through testcontainers (each one removed at close or at this process's exit).
import { spawnSync } from 'node:child_process'
import { hostname } from 'node:os'
import {
  GenericContainer,
  getContainerRuntimeClient,
  type BoundPorts,
  type ContainerRuntimeClient,
  type WaitStrategy
} from 'testcontainers'
import { freePorts, waitForHealth } from '../../lib/server/etcd-process.js'
import { etcdFlags } from './etcd-flags.js'
import {
  CONTAINER_LABEL, OWNER, STARTUP_TIMEOUT_MS, STOP_TIMEOUT_S, atExit, lastLines, pidAlive, type ControllableEtcd
} from './etcd-harness.js'

const CLIENT_PORT = 2379

/** dockerode's Container, named without importing dockerode (not a dependency of ours). */
type DockerContainer = Parameters<WaitStrategy['waitUntilReady']>[0]

/** testcontainers' wait strategy, done by waitForHealth. */
class EtcdHealthWait implements WaitStrategy {
  private timeoutMs = STARTUP_TIMEOUT_MS
  constructor (private readonly host: string) {}

  async waitUntilReady (container: DockerContainer, boundPorts: BoundPorts): Promise<void> {
    const endpoint = `http://${this.host}:${boundPorts.getBinding(CLIENT_PORT)}`
    await waitForHealth(endpoint, this.timeoutMs, async () => await assertRunning(container))
  }

  withStartupTimeout (ms: number): this { this.timeoutMs = ms; return this }
  isStartupTimeoutSet (): boolean { return true }
  getStartupTimeout (): number { return this.timeoutMs }
}

async function assertRunning (container: DockerContainer): Promise<void> {
  const { State } = await container.inspect()
  if (State.Running) return
  const logs = await container.logs({ stdout: true, stderr: true, tail: 5 })
  throw new Error(`container exited with code ${State.ExitCode}: ${lastLines(demuxDockerLogs(logs))}`)
}

export async function startContainerEtcd (image: string, fixedPort: boolean): Promise<ControllableEtcd> {
  const docker = await dockerHost()
  return await runContainerMember(docker, {
    image,
    command: etcdFlags({ name: 'etcd', dataDir: '/etcd-data', clientUrl: `http://0.0.0.0:${CLIENT_PORT}`, peerUrl: 'http://127.0.0.1:2380' }),
    hostPort: fixedPort ? (await freePorts(1) as [number])[0] : undefined
  })
}

/** The container runtime, and the address of the host its published ports are on. */
export interface DockerHost { runtime: ContainerRuntimeClient, host: string }

/** Connects to the container runtime, and removes what dead test processes of this host left there. */
export async function dockerHost (): Promise<DockerHost> {
  const runtime = await getContainerRuntimeClient()
  await removeOrphans(runtime)
  // The runtime reports 'localhost' for a local socket; Node may resolve that to ::1.
  const host = runtime.info.containerRuntime.host === 'localhost' ? '127.0.0.1' : runtime.info.containerRuntime.host
  return { runtime, host }
}

export interface ContainerMemberOptions {
  image: string
  /** etcd's flags. */
  command: string[]
  /** The host port for the client port; default a random one, which changes over a docker stop/start. */
  hostPort?: number
  /** A user-defined network, and the name the member has on it. */
  network?: { name: string, alias: string }
}

/** One etcd container, removed by close() or at the latest when this process exits; resolves once /health is ok. */
export async function runContainerMember ({ runtime, host }: DockerHost, options: ContainerMemberOptions): Promise<ControllableEtcd> {
  const { image, command, hostPort, network } = options
  const definition = new GenericContainer(image)
    // Upstream images have CMD etcd and no entrypoint, the local one (build.sh)
    // has ENTRYPOINT etcd: setting both makes them behave the same.
    .withEntrypoint(['/usr/local/bin/etcd'])
    .withCommand(command)
    .withExposedPorts(hostPort === undefined ? CLIENT_PORT : { container: CLIENT_PORT, host: hostPort })
    .withLabels({ [CONTAINER_LABEL]: OWNER })
    .withWaitStrategy(new EtcdHealthWait(host))
  if (network !== undefined) definition.withNetworkMode(network.name).withNetworkAliases(network.alias)
  const started = await definition.start()

  const container = runtime.container.getById(started.getId())
  const endpoint = `http://${host}:${started.getMappedPort(CLIENT_PORT)}`
  const removeAtExit = (): void => { dockerSync(runtime, ['rm', '--force', '--volumes', container.id]) }
  atExit.add(removeAtExit)
  let frozen = false

  const etcd: ControllableEtcd = {
    endpoints: [endpoint],
    source: 'testcontainers',
    // docker refuses to pause a paused container or unpause a running one.
    async freeze () { if (!frozen) await container.pause(); frozen = true },
    async thaw () { if (frozen) await container.unpause(); frozen = false },
    async stop () {
      if (frozen) await etcd.thaw()
      await container.stop({ t: STOP_TIMEOUT_S })
    },
    async start () {
      await container.start()
      await waitForHealth(endpoint, STARTUP_TIMEOUT_MS, async () => await assertRunning(container))
    },
    async close () {
      if (!atExit.delete(removeAtExit)) return
      if (frozen) await etcd.thaw()
      await container.remove({ force: true, v: true })
    }
  }
  return etcd
}

/** A user-defined bridge network carrying this process's label, removed by remove() or at exit. */
export async function createNetwork ({ runtime }: DockerHost): Promise<{ name: string, remove(): Promise<void> }> {
  const name = `etcd-test-${process.pid}-${Math.random().toString(36).slice(2, 8)}`
  const network = await runtime.network.create({ Name: name, Driver: 'bridge', Labels: { [CONTAINER_LABEL]: OWNER } })
  const removeAtExit = (): void => { dockerSync(runtime, ['network', 'rm', network.id]) }
  atExit.add(removeAtExit)
  return {
    name,
    async remove () {
      if (atExit.delete(removeAtExit)) await runtime.network.remove(network)
    }
  }
}

/** Removes containers, then networks, left by test processes of this host that died without cleaning up. */
async function removeOrphans (runtime: ContainerRuntimeClient): Promise<void> {
  const { dockerode } = runtime.container
  const filters = { label: [CONTAINER_LABEL] }
  const orphaned = (labels: Record<string, string> | undefined): boolean => {
    const [owner, pid] = (labels?.[CONTAINER_LABEL] ?? '').split(':')
    return owner === hostname() && !pidAlive(Number(pid))
  }
  const containers = await dockerode.listContainers({ all: true, filters })
  await Promise.all(containers.filter((info) => orphaned(info.Labels)).map(async (info) =>
    await runtime.container.getById(info.Id).remove({ force: true, v: true }).catch(() => {})))
  const networks = await dockerode.listNetworks({ filters })
  await Promise.all(networks.filter((info) => orphaned(info.Labels)).map(async (info) =>
    await dockerode.getNetwork(info.Id).remove().catch(() => {})))
}

/** Synchronous, for process exit: the docker CLI, pointed at the socket dockerode uses. */
function dockerSync (runtime: ContainerRuntimeClient, args: string[]): void {
  const { socketPath } = runtime.container.dockerode.modem as { socketPath?: unknown }
  const hostArgs = typeof socketPath === 'string' ? ['--host', `unix://${socketPath}`] : []
  spawnSync('docker', [...hostArgs, ...args], { stdio: 'ignore', timeout: 10_000 })
}

/** The output of `docker logs` for a container without a TTY comes in frames with an 8-byte header. */
function demuxDockerLogs (raw: Buffer): string {
  let text = ''
  for (let i = 0; i + 8 <= raw.length;) {
    const size = raw.readUInt32BE(i + 4)
    text += raw.subarray(i + 8, i + 8 + size).toString()
    i += 8 + size
  }
  return text
}
