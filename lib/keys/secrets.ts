import { hash, randomBytes, timingSafeEqual } from 'node:crypto'
import { crc32 } from 'node:zlib'

/** 32 random bytes in base64url without padding. */
const RANDOM_LENGTH = 43
/** CRC-32 as 4 big-endian bytes in base64url without padding. */
const CHECKSUM_LENGTH = 6
const BASE64URL = /^[A-Za-z0-9_-]+$/

function checksumOf (text: string): string {
  const sum = Buffer.alloc(4)
  sum.writeUInt32BE(crc32(Buffer.from(text, 'utf8')))
  return sum.toString('base64url')
}

/**
 * A new secret: `<prefix><random><checksum>`. The prefix lets secret scanners spot a leaked key;
 * the checksum lets a mistyped or forged key be refused without reading etcd.
 */
export function generateSecret (prefix: string): string {
  const body = prefix + randomBytes(32).toString('base64url')
  return body + checksumOf(body)
}

/** True when `secret` has the form of a key made with `prefix` and its checksum holds. */
export function isWellFormedSecret (secret: string, prefix: string): boolean {
  if (secret.length !== prefix.length + RANDOM_LENGTH + CHECKSUM_LENGTH) return false
  if (!secret.startsWith(prefix)) return false
  const body = secret.slice(0, -CHECKSUM_LENGTH)
  const tail = secret.slice(prefix.length)
  if (!BASE64URL.test(tail)) return false
  return safeEqual(secret.slice(-CHECKSUM_LENGTH), checksumOf(body))
}

/** The only form of a secret that is ever stored: its SHA-256 digest, in hex. */
export function digestSecret (secret: string): string {
  // crypto.hash, one call: several times cheaper than a Hash object for a few bytes.
  return hash('sha256', secret, 'hex')
}

/** Constant-time comparison of two strings of any length. */
export function safeEqual (a: string, b: string): boolean {
  return safeEqualDigest(sha256(a), sha256(b))
}

/**
 * A string's SHA-256, for constant-time comparison: hashing first gives equal-length buffers, so
 * the length of a secret is not leaked either. A fixed secret's digest is made once (bearerTokens).
 */
export function sha256 (text: string): Buffer {
  // As a binary (latin1) string, then as bytes: cheaper than crypto.hash's own Buffer output (both are the 32 bytes).
  return Buffer.from(hash('sha256', text, 'binary'), 'binary')
}

/** Constant-time comparison of two digests made by sha256. */
export function safeEqualDigest (a: Buffer, b: Buffer): boolean {
  return timingSafeEqual(a, b)
}
