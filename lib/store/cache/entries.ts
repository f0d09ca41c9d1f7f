// The cache's keys and values, packed: a million keys must fit in a few hundred MiB. Each key is
// held by a run of bytes in a few strings and a few numbers in typed arrays, not by objects of its
// own; the IKeyValue a read returns is built when it is read.
import type { IKeyValue } from 'etcd3'

/** Entries a chunk is built with when loaded in order, and the most it holds before it splits in two. */
const CHUNK_FILL = 32
const CHUNK_MAX = 2 * CHUNK_FILL
/** A chunk this small after a removal is merged into its neighbour, when they fit in one. */
const CHUNK_MIN = CHUNK_FILL / 4
/** Per entry in `revisions`: create revision, mod revision, version. */
const REVISION_FIELDS = 3
/** An entry without a lease (etcd's own `0`). */
const NO_LEASE = '0'

/** One key as etcd gave it: its name relative to the cache's prefix, its bytes as latin1 text. */
export interface Entry {
  key: string
  value: string
  create: number
  mod: number
  version: number
  lease: string
}

/**
 * Up to CHUNK_MAX consecutive entries, immutable: a change builds a new chunk. Keys and values
 * are each one string (latin1: one character per byte, so a JavaScript string's order is etcd's
 * byte order), cut by `ends`.
 */
class Chunk {
  /** Its first key: what the chunks are searched by. */
  readonly first: string

  constructor (
    readonly keys: string,
    readonly values: string,
    /** Per entry: where its key ends in `keys`, where its value ends in `values`. */
    readonly ends: Uint32Array,
    readonly revisions: Float64Array,
    /** Per entry, when any of them has a lease (etcd lease ids are 64-bit: kept as text). */
    readonly leases: string[] | undefined
  ) {
    this.first = keys.slice(0, ends[0])
  }

  get count (): number {
    return this.ends.length / 2
  }

  keyStart (i: number): number {
    return i === 0 ? 0 : this.ends[2 * i - 2]
  }

  valueStart (i: number): number {
    return i === 0 ? 0 : this.ends[2 * i - 1]
  }

  key (i: number): string {
    return this.keys.slice(this.keyStart(i), this.ends[2 * i])
  }

  /** The first position whose key is not below `key` (count when none). */
  lowerBound (key: string): number {
    let low = 0
    let high = this.count
    while (low < high) {
      const middle = (low + high) >>> 1
      if (this.compareKey(middle, key) < 0) low = middle + 1
      else high = middle
    }
    return low
  }

  /** Whether entry i's key is `key`. */
  hasKey (i: number, key: string): boolean {
    return i < this.count && this.compareKey(i, key) === 0
  }

  /** Entry i's key against `key` (negative: below), read in place: a lookup allocates nothing. */
  compareKey (i: number, key: string): number {
    const start = this.keyStart(i)
    const length = this.ends[2 * i] - start
    const common = Math.min(length, key.length)
    for (let j = 0; j < common; j++) {
      const difference = this.keys.charCodeAt(start + j) - key.charCodeAt(j)
      if (difference !== 0) return difference
    }
    return length - key.length
  }

  keyValue (i: number, prefix: string): IKeyValue {
    const at = REVISION_FIELDS * i
    return {
      key: Buffer.from(prefix + this.key(i), 'latin1'),
      value: Buffer.from(this.values.slice(this.valueStart(i), this.ends[2 * i + 1]), 'latin1'),
      create_revision: String(this.revisions[at]),
      mod_revision: String(this.revisions[at + 1]),
      version: String(this.revisions[at + 2]),
      lease: this.leases?.[i] ?? NO_LEASE
    }
  }
}

/** Builds a chunk from runs of other chunks and single entries, in order. */
class ChunkBuilder {
  private readonly keyParts: string[] = []
  private readonly valueParts: string[] = []
  /** What goes in, in order: whole runs of a chunk (copied a typed array at a time) and single entries. */
  private readonly pieces: Array<{ chunk: Chunk, from: number, to: number } | Entry> = []
  count = 0

  add (entry: Entry): void {
    this.keyParts.push(entry.key)
    this.valueParts.push(entry.value)
    this.pieces.push(entry)
    this.count++
  }

  /** Entries [from, to) of `chunk`. */
  addRun (chunk: Chunk, from: number, to: number): void {
    if (from >= to) return
    const whole = from === 0 && to === chunk.count
    this.keyParts.push(whole ? chunk.keys : chunk.keys.slice(chunk.keyStart(from), chunk.ends[2 * to - 2]))
    this.valueParts.push(whole ? chunk.values : chunk.values.slice(chunk.valueStart(from), chunk.ends[2 * to - 1]))
    this.pieces.push({ chunk, from, to })
    this.count += to - from
  }

  build (): Chunk {
    const ends = new Uint32Array(2 * this.count)
    const revisions = new Float64Array(REVISION_FIELDS * this.count)
    let leases: string[] | undefined
    let at = 0
    let keyEnd = 0
    let valueEnd = 0
    for (const piece of this.pieces) {
      if ('chunk' in piece) {
        const { chunk, from, to } = piece
        const keyShift = keyEnd - chunk.keyStart(from)
        const valueShift = valueEnd - chunk.valueStart(from)
        for (let i = from; i < to; i++, at++) {
          ends[2 * at] = keyEnd = chunk.ends[2 * i] + keyShift
          ends[2 * at + 1] = valueEnd = chunk.ends[2 * i + 1] + valueShift
        }
        revisions.set(chunk.revisions.subarray(REVISION_FIELDS * from, REVISION_FIELDS * to), REVISION_FIELDS * (at - to + from))
        if (chunk.leases !== undefined) {
          leases ??= new Array<string>(this.count).fill(NO_LEASE)
          for (let i = from; i < to; i++) leases[at - to + i] = chunk.leases[i]
        }
      } else {
        ends[2 * at] = keyEnd += piece.key.length
        ends[2 * at + 1] = valueEnd += piece.value.length
        revisions.set([piece.create, piece.mod, piece.version], REVISION_FIELDS * at)
        if (piece.lease !== NO_LEASE) {
          leases ??= new Array<string>(this.count).fill(NO_LEASE)
          leases[at] = piece.lease
        }
        at++
      }
    }
    // A chunk whose leased entries all went keeps its `leases` until rebuilt without them: harmless.
    return new Chunk(flatten(this.keyParts), flatten(this.valueParts), ends, revisions, leases)
  }
}

/**
 * The parts as one new flat string. join() copies two parts or more; one part, it returns as it
 * is, and a slice of an old chunk's string would keep all of that string alive: it is copied.
 */
function flatten (parts: string[]): string {
  if (parts.length !== 1) return parts.join('')
  return Buffer.from(parts[0], 'latin1').toString('latin1')
}

/** The entry of an etcd key-value, its key relative to `prefix`. */
export function entryOf (kv: IKeyValue, prefix: string): Entry {
  const key = kv.key.toString('latin1')
  if (!key.startsWith(prefix)) throw new Error(`the cache was given ${key}, outside ${prefix}`)
  return {
    key: key.slice(prefix.length),
    value: kv.value.toString('latin1'),
    create: Number(kv.create_revision),
    mod: Number(kv.mod_revision),
    version: Number(kv.version),
    lease: String(kv.lease)
  }
}

/**
 * Every key under `prefix`, in etcd's order: a sorted array of chunks. A lookup is a binary search
 * over the chunks' first keys, then within one chunk; a put or a removal rebuilds one chunk (a few
 * KiB), so that keys arriving one by one through the watch cost no more than when loaded in order.
 */
export class PackedEntries {
  private chunks: Chunk[] = []
  private total = 0

  constructor (readonly prefix: string) {}

  get size (): number {
    return this.total
  }

  clear (): void {
    this.chunks = []
    this.total = 0
  }

  /**
   * Adds keys that come after every key held, in order (a load's batches): packed CHUNK_FILL to a
   * chunk, the last chunk topped up first.
   */
  append (entries: Entry[]): void {
    if (entries.length === 0) return
    const last = this.chunks[this.chunks.length - 1]
    if (last !== undefined && entries[0].key <= last.key(last.count - 1)) throw new Error('PackedEntries.append: keys out of order')
    let builder = new ChunkBuilder()
    if (last !== undefined && last.count < CHUNK_FILL) {
      this.chunks.pop()
      builder.addRun(last, 0, last.count)
    }
    let previous: string | undefined
    for (const entry of entries) {
      if (previous !== undefined && entry.key <= previous) throw new Error('PackedEntries.append: keys out of order')
      previous = entry.key
      builder.add(entry)
      if (builder.count === CHUNK_FILL) {
        this.chunks.push(builder.build())
        builder = new ChunkBuilder()
      }
    }
    if (builder.count > 0) this.chunks.push(builder.build())
    this.total += entries.length
  }

  /** Adds or replaces one key. */
  put (entry: Entry): void {
    const c = this.chunkFor(entry.key)
    const chunk = this.chunks[c]
    if (chunk === undefined) {
      this.chunks.push(this.single(entry))
      this.total++
      return
    }
    const i = chunk.lowerBound(entry.key)
    const replaces = chunk.hasKey(i, entry.key)
    const builder = new ChunkBuilder()
    builder.addRun(chunk, 0, i)
    builder.add(entry)
    builder.addRun(chunk, replaces ? i + 1 : i, chunk.count)
    if (!replaces) this.total++
    if (builder.count <= CHUNK_MAX) {
      this.chunks[c] = builder.build()
      return
    }
    // Full: split in two halves.
    const whole = builder.build()
    const half = whole.count >>> 1
    const [low, high] = [new ChunkBuilder(), new ChunkBuilder()]
    low.addRun(whole, 0, half)
    high.addRun(whole, half, whole.count)
    this.chunks.splice(c, 1, low.build(), high.build())
  }

  /** Removes one key; false when it was not held. */
  remove (key: string): boolean {
    const c = this.chunkFor(key)
    const chunk = this.chunks[c]
    if (chunk === undefined) return false
    const i = chunk.lowerBound(key)
    if (!chunk.hasKey(i, key)) return false
    this.total--
    const next = this.chunks[c + 1]
    const merge = chunk.count - 1 < CHUNK_MIN && next !== undefined && chunk.count - 1 + next.count <= CHUNK_FILL
    const builder = new ChunkBuilder()
    builder.addRun(chunk, 0, i)
    builder.addRun(chunk, i + 1, chunk.count)
    if (merge) builder.addRun(next, 0, next.count)
    if (builder.count === 0) this.chunks.splice(c, 1)
    else this.chunks.splice(c, merge ? 2 : 1, builder.build())
    return true
  }

  /** The key-value of `key`, if held. */
  get (key: string): IKeyValue | undefined {
    const chunk = this.chunks[this.chunkFor(key)]
    if (chunk === undefined) return undefined
    const i = chunk.lowerBound(key)
    return chunk.hasKey(i, key) ? chunk.keyValue(i, this.prefix) : undefined
  }

  /**
   * The keys of [start, end) in order (end undefined: to the last), up to `limit` (0: all), and
   * whether more were left.
   */
  range (start: string, end: string | undefined, limit: number): { kvs: IKeyValue[], more: boolean } {
    const kvs: IKeyValue[] = []
    let c = this.chunkFor(start)
    let i = this.chunks[c]?.lowerBound(start) ?? 0
    for (; c < this.chunks.length; c++, i = 0) {
      const chunk = this.chunks[c]
      for (; i < chunk.count; i++) {
        if (end !== undefined && chunk.compareKey(i, end) >= 0) return { kvs, more: false }
        if (limit > 0 && kvs.length === limit) return { kvs, more: true }
        kvs.push(chunk.keyValue(i, this.prefix))
      }
    }
    return { kvs, more: false }
  }

  /** The chunk a key belongs in: the last whose first key is not above it (the first chunk if none). */
  private chunkFor (key: string): number {
    let low = 0
    let high = this.chunks.length
    while (low < high) {
      const middle = (low + high) >>> 1
      if (this.chunks[middle].first <= key) low = middle + 1
      else high = middle
    }
    return Math.max(0, low - 1)
  }

  private single (entry: Entry): Chunk {
    const builder = new ChunkBuilder()
    builder.add(entry)
    return builder.build()
  }
}
