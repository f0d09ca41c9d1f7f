// Keys written straight into etcd, as lib/store.ts writes them, so that both sides of the
// benchmark find the same data and loading 100,000 keys takes seconds rather than minutes.
import { randomBytes, randomUUID } from 'node:crypto'
import type { Etcd3, IRequestOp } from 'etcd3'
import { EtcdKeys } from '../lib/store/key-builder.js'
import { digestSecret, generateSecret } from '../lib/keys/secrets.js'

export const KEY_PREFIX = 'sak_'
/** The username every benchmark key acts as: the admin, so that no policy filters a list. */
export const USERNAME = 'admin'

export interface BenchKey {
  namespace: string
  name: string
  /** Only for keys that are verified: the secret itself. */
  secret?: string
  digest: string
}

/** A key of `namespace` with a fresh name and secret digest; `withSecret` keeps the secret. */
export function newBenchKey (namespace: string, withSecret = false): BenchKey {
  const secret = withSecret ? generateSecret(KEY_PREFIX) : undefined
  const digest = digestSecret(secret ?? randomBytes(32).toString('base64url'))
  return { namespace, name: randomUUID(), digest, ...(secret !== undefined && { secret }) }
}

/** The JSON of a record as ApiKeyStore.create stores it: the resource and its digest. */
export function recordValue (key: BenchKey, labels?: Record<string, string>): string {
  return JSON.stringify({
    metadata: { name: key.name, namespace: key.namespace, ...(labels && { labels }), created_by: USERNAME },
    username: USERNAME,
    created_at: Math.floor(Date.now() / 1000),
    key_sha256: key.digest
  })
}

/** etcd's default --max-txn-ops is 128: a record and its digest entry make two. */
const KEYS_PER_TXN = 64
const LOAD_CONCURRENCY = 8

/**
 * Writes `count` keys into `namespace`, each record with its digest entry, in transactions of
 * 64 keys, several at once. Resolves with the keys.
 */
export async function loadKeys (client: Etcd3, etcdKeys: EtcdKeys, namespace: string, count: number, options: { withSecrets?: boolean } = {}): Promise<BenchKey[]> {
  const keys = Array.from({ length: count }, () => newBenchKey(namespace, options.withSecrets))
  let next = 0
  await Promise.all(Array.from({ length: LOAD_CONCURRENCY }, async () => {
    while (next < keys.length) {
      const batch = keys.slice(next, next + KEYS_PER_TXN)
      next += KEYS_PER_TXN
      const success: IRequestOp[] = batch.flatMap(key => [
        { request_put: { key: Buffer.from(etcdKeys.record(key.namespace, key.name)), value: Buffer.from(recordValue(key)) } },
        { request_put: { key: Buffer.from(etcdKeys.digest(key.digest)), value: Buffer.from(EtcdKeys.digestTarget(key.namespace, key.name)) } }
      ])
      await client.kv.txn({ success })
    }
  }))
  return keys
}

/** Hands out the items of a list one at a time, round and round, or once with `once`. */
export class Rotation<T> {
  private next = 0
  constructor (private readonly items: T[], private readonly once = false) {}

  /** The next item; undefined when a `once` rotation is used up. */
  take (): T | undefined {
    if (this.next >= this.items.length) {
      if (this.once || this.items.length === 0) return undefined
      this.next = 0
    }
    return this.items[this.next++]
  }

  get remaining (): number {
    return this.items.length - this.next
  }
}
