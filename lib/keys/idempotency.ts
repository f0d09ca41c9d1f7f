import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto'
import { InvalidRequestError } from './errors.js'
import { parseQualifiedName, qualifiedName } from './names.js'

/**
 * `Idempotency-Key` on a create (draft-ietf-httpapi-idempotency-key-header): a client that lost
 * an answer sends the same request again with the same key and gets the same API key back,
 * secret included, instead of a second one (on a rotation: the same new secret, instead of
 * another rotation). The entry that makes the replay possible is written
 * in the create's own etcd transaction and lives 24 hours on a lease. It holds the secret only
 * encrypted (AES-256-GCM) under a key derived (HKDF-SHA256) from the Idempotency-Key, which the
 * server never stores: only the client that holds it can recover the secret, and reading etcd
 * is not enough.
 */

/** How long a replay is possible. */
export const IDEMPOTENCY_TTL_SECONDS = 24 * 60 * 60

/**
 * Bounds of a header value. The lower one because the value is what protects the secret from
 * whoever can read etcd (a guessable value could be tried offline): a UUID is 36 characters.
 */
const MIN_LENGTH = 16
const MAX_LENGTH = 255
const VISIBLE_ASCII = /^[\x21-\x7e]+$/

const HKDF_INFO = 'fastify-etcd-apikeys idempotency v1'

/**
 * An Idempotency-Key as the client sent it (the header's value without its quotes): refused with
 * an InvalidRequestError unless long enough and printable.
 */
export function checkIdempotencyKey (idempotencyKey: string): string {
  if (idempotencyKey.length < MIN_LENGTH || idempotencyKey.length > MAX_LENGTH || !VISIBLE_ASCII.test(idempotencyKey) || idempotencyKey.includes('"')) {
    throw new InvalidRequestError(`Idempotency-Key must be ${MIN_LENGTH} to ${MAX_LENGTH} visible ASCII characters (a UUID will do)`)
  }
  return idempotencyKey
}

/** The entry's id: a digest of the caller and the Idempotency-Key, so that neither can be read from etcd. */
export function idempotencyEntryId (username: string, idempotencyKey: string): string {
  // Each part is length-prefixed: ("ab", "c…") and ("a", "bc…") must not meet.
  return createHash('sha256')
    .update(`${Buffer.byteLength(username)}:${username}\n${idempotencyKey}`, 'utf8')
    .digest('hex')
}

/** What the request asked for: a different request under the same Idempotency-Key is a 400. */
export function requestFingerprint (namespace: string, body: unknown): string {
  return createHash('sha256').update(canonicalJson({ namespace, body }), 'utf8').digest('hex')
}

/** What a rotation asked for: another shape than a create's, so that one Idempotency-Key cannot serve both. */
export function rotationFingerprint (namespace: string, name: string, body: unknown): string {
  return createHash('sha256').update(canonicalJson({ rotate: { namespace, name }, body }), 'utf8').digest('hex')
}

/** JSON with object keys sorted: the same body, however its fields were ordered, gives one text. */
function canonicalJson (value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
  if (typeof value === 'object' && value !== null) {
    const fields = Object.keys(value).sort().map(k => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`)
    return `{${fields.join(',')}}`
  }
  return JSON.stringify(value)
}

/** An entry as etcd holds it. */
interface StoredEntry {
  v: 1
  /** `<namespace>/<name>` of the key the request created. */
  target: string
  fingerprint: string
  /** HKDF salt, GCM nonce and tag, and the encrypted secret, in base64url. */
  salt: string
  iv: string
  tag: string
  secret: string
}

/** A replayable create, as read back with the Idempotency-Key. */
export interface IdempotencyEntry {
  namespace: string
  name: string
  fingerprint: string
  secret: string
}

function cipherKeyFor (idempotencyKey: string, salt: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', Buffer.from(idempotencyKey, 'utf8'), salt, HKDF_INFO, 32))
}

/** The entry to store for a create; `entryId` is bound to the ciphertext, so it cannot be moved. */
export function sealIdempotencyEntry (
  idempotencyKey: string, entryId: string,
  created: { namespace: string, name: string, fingerprint: string, secret: string }
): string {
  const salt = randomBytes(16)
  const iv = randomBytes(12)
  const cipher = createCipheriv('aes-256-gcm', cipherKeyFor(idempotencyKey, salt), iv)
  cipher.setAAD(Buffer.from(entryId, 'utf8'))
  const secret = Buffer.concat([cipher.update(created.secret, 'utf8'), cipher.final()])
  const entry: StoredEntry = {
    v: 1,
    target: qualifiedName(created.namespace, created.name),
    fingerprint: created.fingerprint,
    salt: salt.toString('base64url'),
    iv: iv.toString('base64url'),
    tag: cipher.getAuthTag().toString('base64url'),
    secret: secret.toString('base64url')
  }
  return JSON.stringify(entry)
}

/** An entry read back; throws when it does not open with this Idempotency-Key (it cannot, unless etcd was tampered with). */
export function openIdempotencyEntry (idempotencyKey: string, entryId: string, stored: string): IdempotencyEntry {
  const entry = JSON.parse(stored) as StoredEntry
  if (entry.v !== 1) throw new Error(`idempotency entry of unknown version ${String(entry.v)}`)
  const decipher = createDecipheriv('aes-256-gcm', cipherKeyFor(idempotencyKey, Buffer.from(entry.salt, 'base64url')), Buffer.from(entry.iv, 'base64url'))
  decipher.setAAD(Buffer.from(entryId, 'utf8'))
  decipher.setAuthTag(Buffer.from(entry.tag, 'base64url'))
  const secret = Buffer.concat([decipher.update(Buffer.from(entry.secret, 'base64url')), decipher.final()]).toString('utf8')
  return { ...parseQualifiedName(entry.target), fingerprint: entry.fingerprint, secret }
}
