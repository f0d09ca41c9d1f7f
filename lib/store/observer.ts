// What the store tells whoever watches it (the plugin's metrics, lib/metrics.ts): its etcd calls
// and the keys it made and revoked. An interface, so that the store knows nothing of prom-client.

/** The etcd calls the store makes, by the name of etcd's RPC (KV.Range, KV.Txn, KV.Put, Lease.LeaseGrant, Lease.LeaseRevoke). */
export type EtcdOperation = 'range' | 'txn' | 'put' | 'lease_grant' | 'lease_revoke'

export interface StoreObserver {
  /** One attempt of an etcd call: how long it took, in seconds, and whether it failed (a retry is another attempt). */
  etcdCall(operation: EtcdOperation, seconds: number, failed: boolean): void
  /** Keys written by a create. */
  keysCreated(count: number): void
  /** Keys deleted by a delete (1) or a revoke-all (however many it deleted). */
  keysRevoked(count: number): void
}

/** The observer of a store nobody watches. */
export const unobserved: StoreObserver = {
  etcdCall () {},
  keysCreated () {},
  keysRevoked () {}
}
