import { qualifiedName } from '../keys/names.js'

/**
 * The one place that builds etcd keys. Every prefix used for a range ends in `/`, so namespace
 * `dev` never sees `dev2`, and `apikeys/` never sees `apikey-digests/`.
 */
export class EtcdKeys {
  readonly root: string
  /** `<root>/apikeys/`: every record, all namespaces. */
  readonly records: string
  /** `<root>/apikey-digests/`: the digest index. */
  readonly digests: string
  /** `<root>/apikey-idempotency/`: replayable creates (see idempotency.ts). */
  readonly idempotencyEntries: string
  /** `<root>/apikey-fences/`: per-username revocation fences (see ApiKeyStore.revokeAllOf). */
  readonly fences: string
  /**
   * `<root>/apikey-usage/`: each key's last use (see usage.ts), apart from its record so that a
   * use changes neither the record's revision (its ETag) nor anything that watches records.
   */
  readonly usageEntries: string
  /**
   * `<root>/apikey`: every key above. The one prefix without a trailing `/`: it is watched whole,
   * never listed, and spares the watch the rest of a root shared with Sensu.
   */
  readonly plugin: string

  constructor (root: string) {
    this.root = root
    this.records = `${root}/apikeys/`
    this.digests = `${root}/apikey-digests/`
    this.idempotencyEntries = `${root}/apikey-idempotency/`
    this.fences = `${root}/apikey-fences/`
    this.usageEntries = `${root}/apikey-usage/`
    this.plugin = `${root}/apikey`
  }

  /** `<root>/apikeys/<namespace>/` */
  namespace (namespace: string): string {
    return `${this.records}${namespace}/`
  }

  record (namespace: string, name: string): string {
    return `${this.namespace(namespace)}${name}`
  }

  /** `<root>/apikey-usage/<namespace>/<name>`: in the same order as the records, so a page's usage entries are one range. */
  usage (namespace: string, name: string): string {
    return `${this.usageEntries}${namespace}/${name}`
  }

  /** The usage entry of the record at `etcdKey` (a key under `records`). */
  usageOfRecord (etcdKey: string): string {
    return `${this.usageEntries}${this.relativeToRecords(etcdKey)}`
  }

  /** The record a usage entry belongs to. */
  recordOfUsage (etcdKey: string): string {
    if (!etcdKey.startsWith(this.usageEntries)) throw new Error(`key outside ${this.usageEntries}`)
    return `${this.records}${etcdKey.slice(this.usageEntries.length)}`
  }

  digest (hexDigest: string): string {
    return `${this.digests}${hexDigest}`
  }

  idempotency (entryId: string): string {
    return `${this.idempotencyEntries}${entryId}`
  }

  /**
   * The revocation fence of a username: `bob` stays `bob`. A username may hold `/` and any
   * character (lone surrogates too, which JSON escapes), and the read cache serves ASCII keys
   * only: JSON's escapes, then URI encoding, one-to-one.
   */
  fence (username: string): string {
    return `${this.fences}${encodeURIComponent(JSON.stringify(username).slice(1, -1))}`
  }

  /** What a digest index entry holds: `<namespace>/<name>`. */
  static digestTarget (namespace: string, name: string): string {
    return qualifiedName(namespace, name)
  }

  /** The record a path relative to `records` names (a digest entry's target, or a token's start): it may be anything. */
  recordAt (path: string): string {
    return `${this.records}${path}`
  }

  /** The hex digest of a digest index entry's etcd key. */
  digestOf (etcdKey: string): string {
    return etcdKey.slice(this.digests.length)
  }

  /** A key relative to `records`, as continue tokens carry it. */
  relativeToRecords (etcdKey: string): string {
    if (!etcdKey.startsWith(this.records)) throw new Error(`key outside ${this.records}`)
    return etcdKey.slice(this.records.length)
  }
}

/** The first etcd key after `etcdKey`: where a range read goes on after it. */
export function keyAfter (etcdKey: Buffer): Buffer {
  return Buffer.concat([etcdKey, Buffer.from([0])])
}

/** The end of the etcd range that covers every key starting with `prefix`. */
export function rangeEnd (prefix: string): Buffer {
  const end = Buffer.from(prefix, 'utf8')
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] < 0xff) {
      end[i]++
      return end.subarray(0, i + 1)
    }
  }
  return Buffer.from([0])
}
