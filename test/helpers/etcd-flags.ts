import { etcdFlags as memberFlags, type MemberFlags } from '../../lib/server/etcd-process.js'

export type { MemberFlags }

/** The flags of a test member: those of every etcd here (lib/server/etcd-process.ts), logging warnings only. */
export function etcdFlags (member: MemberFlags): string[] {
  return memberFlags({ logLevel: 'warn', ...member })
}
