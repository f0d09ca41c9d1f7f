import type { Etcd3 } from 'etcd3'

/**
 * The alarms etcd has raised, cluster-wide, as etcdctl names them (NOSPACE: out of space, writes
 * refused; CORRUPT: a member's data differs). Any member answers for the whole cluster.
 */
export async function raisedAlarms (client: Etcd3, deadline: number): Promise<string[]> {
  const { alarms } = await client.maintenance.alarm({ action: 'Get' }, { deadline: new Date(deadline) })
  return [...new Set(alarms.map(raised => String(raised.alarm).toUpperCase()))]
}
