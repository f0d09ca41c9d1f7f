export interface WriteLimit {
  /** Writes a username regains per second. */
  perSecond: number
  /** Writes a username may make at once, after a quiet spell. */
  burst: number
}

/**
 * The most usernames remembered at once. Past it the least recently seen is forgotten; it has had
 * the longest time to refill, so forgetting it usually loses nothing, and otherwise it only starts
 * again with a full burst. Each one costs about 100 bytes.
 */
export const MAX_TRACKED_USERNAMES = 100_000

interface Bucket {
  tokens: number
  /** When `tokens` was counted, in ms. */
  at: number
}

/**
 * A token bucket per username: each write takes one token, tokens come back at `perSecond` up to
 * `burst`. The buckets live in a Map kept in least-recently-used order and capped at `maxUsernames`,
 * so a flood of usernames cannot grow memory without bound. In memory, per process.
 */
export class WriteLimiter {
  private readonly buckets = new Map<string, Bucket>()

  constructor (
    private readonly limit: WriteLimit,
    private readonly maxUsernames = MAX_TRACKED_USERNAMES,
    private readonly now: () => number = Date.now
  ) {}

  /** Counts one write of `username`: 0 when it may go ahead, else the whole seconds to wait (at least 1). */
  take (username: string): number {
    const { perSecond, burst } = this.limit
    const now = this.now()
    const bucket = this.buckets.get(username)
    const tokens = bucket === undefined ? burst : Math.min(burst, bucket.tokens + (now - bucket.at) / 1000 * perSecond)
    // Deleted and set again, the username moves to the end: the Map's first entry is the least recently seen.
    this.buckets.delete(username)
    if (this.buckets.size >= this.maxUsernames) this.buckets.delete(this.buckets.keys().next().value as string)
    if (tokens >= 1) {
      this.buckets.set(username, { tokens: tokens - 1, at: now })
      return 0
    }
    this.buckets.set(username, { tokens, at: now })
    return Math.max(1, Math.ceil((1 - tokens) / perSecond))
  }

  /** Usernames remembered now. */
  get size (): number {
    return this.buckets.size
  }
}

/**
 * Counts a non-admin caller's write (create, patch, rotate, delete) against its username's limit:
 * 0 when it may go ahead, else the seconds to wait. Admins, and a limit of false, always pass.
 */
export function writeCounter (limit: WriteLimit | false): (caller: { username: string, admin: boolean }) => number {
  const limiter = limit === false ? undefined : new WriteLimiter(limit)
  return ({ username, admin }) => admin ? 0 : limiter?.take(username) ?? 0
}
