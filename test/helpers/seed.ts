// Keys written straight into etcd, for tests that need more keys than the API makes quickly.
import { randomUUID } from 'node:crypto'
import type { IRequestOp } from 'etcd3'
import { digestSecret, generateSecret } from '../../lib/keys/secrets.js'
import type { TestApp } from './app.js'
import type { Key } from './list.js'

export interface Seeded { body: Key, secret: string }

/**
 * Writes keys straight into etcd, in the stored format of a record the API made (read back with
 * the raw client), each with a real secret and its digest index entry, in transactions of 50
 * keys (100 puts, under etcd's default of 128 operations per transaction).
 */
export async function seedRaw (app: TestApp, ns: string, count: number, { username = 'admin', name = () => randomUUID(), labels }: { username?: string, name?: () => string, labels?: Record<string, string> } = {}): Promise<Seeded[]> {
  const template = await app.createKey('template', { metadata: { labels: { seeded: 'yes' } } })
  const stored = JSON.parse(await app.etcd.get(`${app.root}/apikeys/template/${template.name}`).string() ?? 'null')
  const digestEntry = await app.etcd.get(`${app.root}/apikey-digests/${digestSecret(template.secret)}`).string()
  if (stored?.key_sha256 !== digestSecret(template.secret) || digestEntry !== `template/${template.name}`) {
    throw new Error(`the stored format is not what seedRaw copies: ${JSON.stringify(stored)} / ${digestEntry}`)
  }
  const seeded: Seeded[] = []
  for (let i = 0; i < count; i += 50) {
    const ops: IRequestOp[] = []
    for (let j = i; j < Math.min(i + 50, count); j++) {
      const secret = generateSecret('sak_')
      const digest = digestSecret(secret)
      const body = { ...stored, metadata: { ...stored.metadata, name: name(), namespace: ns, ...(labels !== undefined && { labels }) }, username }
      delete body.key_sha256
      const record = { ...body, key_sha256: digest }
      ops.push(
        { request_put: { key: Buffer.from(`${app.root}/apikeys/${ns}/${body.metadata.name}`), value: Buffer.from(JSON.stringify(record)) } },
        { request_put: { key: Buffer.from(`${app.root}/apikey-digests/${digest}`), value: Buffer.from(`${ns}/${body.metadata.name}`) } }
      )
      seeded.push({ body, secret })
    }
    await app.etcd.kv.txn({ compare: [], success: ops, failure: [] })
  }
  return seeded
}
