// The operations of the API done with the etcd3 client alone, each of the same shape as
// lib/store.ts does it: what the fastest possible API would cost.
import type { Etcd3 } from 'etcd3'
import { EtcdKeys, rangeEnd } from '../lib/store/key-builder.js'
import { newBenchKey, recordValue, type BenchKey } from './fixtures.js'

export class RawOperations {
  constructor (private readonly client: Etcd3, private readonly keys: EtcdKeys) {}

  /** ApiKeyStore.create: one transaction guarded by "neither the record nor the digest exists". */
  async create (namespace: string): Promise<void> {
    const key = newBenchKey(namespace)
    const recordKey = this.keys.record(namespace, key.name)
    const digestKey = this.keys.digest(key.digest)
    const res = await this.client
      .if(recordKey, 'Create', '==', 0)
      .and(digestKey, 'Create', '==', 0)
      .then(
        this.client.put(recordKey).value(recordValue(key)),
        this.client.put(digestKey).value(EtcdKeys.digestTarget(namespace, key.name))
      )
      .else(this.client.get(recordKey))
      .commit()
    if (!res.succeeded) throw new Error('create: the key exists')
  }

  /** ApiKeyStore.get: a range of one key. */
  async get (key: BenchKey): Promise<void> {
    const res = await this.client.kv.range({ key: Buffer.from(this.keys.record(key.namespace, key.name)) })
    if (res.kvs.length !== 1) throw new Error('get: no such key')
  }

  /** A page of a namespace: a range of the namespace prefix with a limit, optionally pinned. */
  async page (namespace: string, limit: number, from?: { start: string, revision: number }): Promise<{ last: string, revision: number }> {
    const prefix = this.keys.namespace(namespace)
    const res = await this.client.kv.range({
      key: Buffer.from(from?.start ?? prefix),
      range_end: rangeEnd(prefix),
      limit,
      revision: from?.revision
    })
    if (res.kvs.length !== limit) throw new Error('page: short page')
    return { last: res.kvs[res.kvs.length - 1].key.toString('utf8'), revision: Number(res.header.revision) }
  }

  /** ApiKeyStore.update: read the record, then a put guarded by the revision read. */
  async patch (key: BenchKey, labels: Record<string, string>): Promise<void> {
    const recordKey = this.keys.record(key.namespace, key.name)
    const current = (await this.client.kv.range({ key: Buffer.from(recordKey) })).kvs[0]
    if (current === undefined) throw new Error('patch: no such key')
    const record = JSON.parse(current.value.toString('utf8'))
    record.metadata.labels = { ...record.metadata.labels, ...labels }
    const res = await this.client
      .if(recordKey, 'Mod', '==', current.mod_revision)
      .then(this.client.put(recordKey).value(JSON.stringify(record)).ignoreLease())
      .commit()
    if (!res.succeeded) throw new Error('patch: conflict')
  }

  /** ApiKeyStore.delete: read the record, then delete it and its digest, guarded by the revision read. */
  async delete (key: BenchKey): Promise<void> {
    const recordKey = this.keys.record(key.namespace, key.name)
    const current = (await this.client.kv.range({ key: Buffer.from(recordKey) })).kvs[0]
    if (current === undefined) throw new Error('delete: no such key')
    const digest = JSON.parse(current.value.toString('utf8')).key_sha256 as string
    const res = await this.client
      .if(recordKey, 'Mod', '==', current.mod_revision)
      .then(this.client.delete().key(recordKey), this.client.delete().key(this.keys.digest(digest)))
      .commit()
    if (!res.succeeded) throw new Error('delete: conflict')
  }

  /** ApiKeyStore.findByDigest: the digest entry, then the record it points at. */
  async verify (key: BenchKey): Promise<void> {
    const entry = (await this.client.kv.range({ key: Buffer.from(this.keys.digest(key.digest)) })).kvs[0]
    if (entry === undefined) throw new Error('verify: no such digest')
    const target = entry.value.toString('utf8')
    const slash = target.indexOf('/')
    const record = await this.client.kv.range({ key: Buffer.from(this.keys.record(target.slice(0, slash), target.slice(slash + 1))) })
    if (record.kvs.length !== 1) throw new Error('verify: no record')
  }
}
