#!/usr/bin/env node
// `npm run check-consistency [-- --repair] [--json]`: checks, and with --repair repairs, the key
// layout in etcd (lib/consistency.ts). It reads the server's environment (README) to find etcd.
// Exit code: 0 consistent or every orphan repaired, 1 orphans left, 2 no check could be made.
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { Etcd3 } from 'etcd3'
import { ConfigError, loadConfig, type ServerConfig } from '../server/config.js'
import { EtcdNotFoundError, startEmbeddedEtcd, type EmbeddedEtcd } from '../server/embedded-etcd.js'
import { etcdClientOptions } from '../server/etcd-client.js'
import { describeError, silenceTlsIpWarning } from '../server/command-line.js'
import { abbreviateDigest, checkConsistency, repairOrphans, type ConsistencyReport, type Orphan, type Repair } from './consistency.js'

const USAGE = 'usage: check-consistency [--repair] [--json]'

class CannotCheck extends Error {}

/** A name from etcd as it may be printed: as it is when plain, else quoted with its escapes. */
function show (name: string | undefined): string {
  return name !== undefined && /^[\x21-\x7e]+$/.test(name) ? name : JSON.stringify(name ?? '')
}

function describeOrphan (orphan: Orphan): string {
  const digest = abbreviateDigest(orphan.digest)
  switch (orphan.kind) {
    case 'record-without-digest': return `record ${show(orphan.record)}: its digest entry ${digest} is missing`
    case 'digest-points-elsewhere': return `record ${show(orphan.record)}: its digest entry ${digest} points at ${show(orphan.target)}, which does not carry it`
    case 'digest-without-record': return `digest entry ${digest}: points at ${show(orphan.target)}, which does not exist`
    case 'digest-of-other-record': return `digest entry ${digest}: points at ${show(orphan.target)}, which carries another digest`
    case 'digest-past-grace': return `digest entry ${digest}: the old secret of ${show(orphan.target)}, whose rotation's grace is over, still indexed`
    case 'shared-digest': return `digest ${digest}: carried by ${(orphan.records ?? []).map(show).join(', ')}; delete all but one through the API, then repair again`
    case 'unreadable-record': return `record ${show(orphan.record)}: not a key's JSON with its key_sha256; correct or delete it with etcdctl`
    case 'usage-without-record': return `usage entry of ${show(orphan.record)}: that key does not exist (deleted, or made again since); --repair deletes the entry`
  }
}

function describeRepair ({ orphan, outcome }: Repair): string {
  if (outcome === 'not-repairable') return 'not repaired'
  if (outcome === 'changed') return 'not repaired: changed since the scan, run again'
  return orphan.fix !== undefined && 'delete' in orphan.fix ? 'repaired, entry deleted' : 'repaired, entry written'
}

function humanOutput (report: ConsistencyReport, repairs: Repair[] | undefined): string {
  const { root, revision, records, digests, orphans } = report
  const lines = [`${root} at etcd revision ${revision}: ${records} records, ${digests} digest entries, ` +
    (orphans.length === 0 ? 'consistent' : `${orphans.length} orphan${orphans.length === 1 ? '' : 's'}`)]
  for (const [i, orphan] of orphans.entries()) {
    lines.push(`  ${describeOrphan(orphan)}${repairs ? `: ${describeRepair(repairs[i])}` : ''}`)
  }
  if (orphans.length > 0) {
    lines.push(repairs
      ? `repaired ${repairs.filter(r => r.outcome === 'repaired').length} of ${orphans.length}`
      : 'run again with --repair to repair them')
  }
  return lines.join('\n') + '\n'
}

function jsonOutput (report: ConsistencyReport, repairs: Repair[] | undefined): string {
  const { root, revision, records, digests, usage, orphans } = report
  return JSON.stringify({
    root,
    revision,
    records,
    digests,
    usage,
    consistent: orphans.length === 0,
    orphans: orphans.map((orphan, i) => ({
      kind: orphan.kind,
      digest: orphan.digest === '' ? undefined : abbreviateDigest(orphan.digest),
      record: orphan.record,
      target: orphan.target,
      records: orphan.records,
      repair: repairs?.[i].outcome
    }))
  }) + '\n'
}

/**
 * Without ETCD_ENDPOINTS, the server runs an embedded etcd on DATA_DIR: this opens the same data
 * with the same binary, ports and checks (a running server holds the port, so that two etcds
 * never share the data; the message then names the endpoint to use). Missing data is refused
 * rather than started empty, which would report a wrong DATA_DIR as consistent.
 */
async function openEmbedded (config: ServerConfig): Promise<EmbeddedEtcd> {
  const { dataDir } = config.embeddedEtcd
  if (!existsSync(join(dataDir, 'member'))) {
    throw new CannotCheck(`ETCD_ENDPOINTS is not set and there is no embedded etcd data in ${dataDir}: set ETCD_ENDPOINTS to the server's etcd, or DATA_DIR to the server's`)
  }
  try {
    return await startEmbeddedEtcd({ ...config.embeddedEtcd, logFile: join(config.dataDir, 'etcd.log') })
  } catch (err) {
    if (err instanceof EtcdNotFoundError) throw new CannotCheck(`ETCD_ENDPOINTS is not set and there is no etcd binary on PATH to open ${dataDir}: set ETCD_ENDPOINTS to a running etcd`)
    throw new CannotCheck((err as Error).message)
  }
}

async function main (): Promise<number> {
  const { values: flags } = parseArgs({ options: { repair: { type: 'boolean' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } })
  if (flags.help === true) {
    process.stdout.write(`${USAGE}\n`)
    return 0
  }
  const config = loadConfig(process.env)
  const embedded = config.etcdEndpoints === undefined ? await openEmbedded(config) : undefined
  const client = new Etcd3(embedded === undefined
    ? etcdClientOptions(config, config.etcdEndpoints ?? [])
    : etcdClientOptions({ ...config, etcdAuth: embedded.auth }, embedded.endpoints))
  try {
    const options = { callTimeout: config.requestTimeout }
    const report = await checkConsistency(client, config.root, options)
    const repairs = flags.repair === true && report.orphans.length > 0 ? await repairOrphans(client, report, options) : undefined
    process.stdout.write((flags.json === true ? jsonOutput : humanOutput)(report, repairs))
    if (report.orphans.length === 0) return 0
    return repairs?.every(r => r.outcome === 'repaired') === true ? 0 : 1
  } finally {
    client.close()
    await embedded?.stop()
  }
}

silenceTlsIpWarning()

let code: number
try {
  code = await main()
} catch (err) {
  const usage = err instanceof TypeError && (err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS') === true ? `; ${USAGE}` : ''
  const known = err instanceof ConfigError || err instanceof CannotCheck || usage !== ''
  process.stderr.write(`check-consistency: ${known ? '' : 'cannot check: '}${describeError(err)}${usage}\n`)
  code = 2
}
// The work is done: exit now rather than when some timer of the etcd client lapses. stdout and
// stderr are synchronous for files and pipes.
process.exit(code)
