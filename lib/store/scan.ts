// The one batched prefix scan: the store's full walks, the cache's load and the consistency check.
import type { IRangeResponse } from 'etcd3'
import { keyAfter } from './key-builder.js'

/** One range read of a scan: from `key` up to `end`, at most `limit` keys, at `revision` if given. */
export interface ScanRead {
  key: Buffer
  end: Buffer
  limit: number
  revision?: number
}

/**
 * The keys of [start, end) in batches of `limit`, each batch a range read made by `read`. With
 * `pin`, every batch after the first reads at the first one's revision (or at `revision` from
 * the start): one snapshot for the whole walk.
 */
export async function * scanBatches (
  read: (request: ScanRead) => Promise<IRangeResponse>,
  range: { start: Buffer | string, end: Buffer },
  options: { limit: number, revision?: number, pin?: boolean }
): AsyncGenerator<IRangeResponse> {
  let { revision } = options
  let key: Buffer = Buffer.from(range.start)
  for (;;) {
    const res = await read({ key, end: range.end, limit: options.limit, revision })
    if (options.pin === true) revision ??= Number(res.header.revision)
    yield res
    if (!res.more || res.kvs.length === 0) return
    key = keyAfter(res.kvs[res.kvs.length - 1].key)
  }
}
