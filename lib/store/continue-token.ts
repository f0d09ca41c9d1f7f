/**
 * The continue token of a paged list, after the Kubernetes API server's: a small versioned struct,
 * base64url without padding, whose start key is relative to `<root>/apikeys/`.
 */
export interface ContinueToken {
  /** The etcd revision of the walk's first page; every later page reads at it. */
  rev: number
  /** The next range start key, relative to `<root>/apikeys/`: `<namespace>/<last name>\u0000`. */
  start: string
}

const MAX_TOKEN_LENGTH = 1024
const BASE64URL = /^[A-Za-z0-9_-]+$/

export class InvalidContinueTokenError extends Error {}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true })

export function encodeContinueToken (token: ContinueToken): string {
  return Buffer.from(JSON.stringify({ v: 1, rev: token.rev, start: token.start }), 'utf8').toString('base64url')
}

/**
 * Decodes a token and checks that it stays inside `namespace`: its start key must be
 * `<namespace>/<rest>` where `rest` holds no `/`, so a token can never climb into another namespace
 * or out of the records prefix. For the list of every namespace (`namespace` undefined), the start
 * holds at most one `/`: `<namespace>/<rest>`, or the prefix of a namespace name where a page
 * ended between two namespaces. Whether `rev` is still readable is for etcd to say.
 */
export function decodeContinueToken (text: string, namespace: string | undefined): ContinueToken {
  if (text.length > MAX_TOKEN_LENGTH || !BASE64URL.test(text)) {
    throw new InvalidContinueTokenError('continue token is not valid base64url')
  }
  const bytes = Buffer.from(text, 'base64url')
  // Buffer decodes leniently (spare bits, a stray last character): a token must be canonical.
  if (bytes.toString('base64url') !== text) throw new InvalidContinueTokenError('continue token is not valid base64url')
  let parsed: unknown
  try {
    parsed = JSON.parse(strictUtf8.decode(bytes))
  } catch {
    throw new InvalidContinueTokenError('continue token is not a token of this server')
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new InvalidContinueTokenError('continue token is not a token of this server')
  }
  const { v, rev, start, ...rest } = parsed as Record<string, unknown>
  if (v !== 1 || Object.keys(rest).length > 0 || typeof start !== 'string') {
    throw new InvalidContinueTokenError('continue token is not a token of this server')
  }
  if (typeof rev !== 'number' || !Number.isSafeInteger(rev) || rev <= 0) {
    throw new InvalidContinueTokenError('continue token names an invalid revision')
  }
  if (namespace === undefined) {
    if (start.split('/').length > 2) throw new InvalidContinueTokenError('continue token is not a token of this server')
    return { rev, start }
  }
  const own = `${namespace}/`
  if (!start.startsWith(own) || start.includes('/', own.length)) {
    throw new InvalidContinueTokenError('continue token does not belong to this namespace')
  }
  return { rev, start }
}
