// The key rules (lib/keys) and the pure parts of the store (lib/store), without etcd: milliseconds.
import t, { type Test } from 'tap'
import { checkExpiry, maxKeyBytes, mergePatch, prepareForCreate, prepareForUpdate, validateCreate, validateUpdate } from '../lib/keys/strategy.js'
import { ApiKeyTooLargeError, InvalidRequestError, PermissionDeniedError } from '../lib/keys/errors.js'
import { isWellFormedSecret } from '../lib/keys/secrets.js'
import { parseQualifiedName, qualifiedName } from '../lib/keys/names.js'
import { checkIdempotencyKey } from '../lib/keys/idempotency.js'
import type { ApiKey } from '../lib/keys/schemas.js'
import { EtcdKeys, keyAfter, rangeEnd } from '../lib/store/key-builder.js'
import { readBatchFor } from '../lib/store/records.js'
import { separator } from '../lib/store/list.js'
import { inParallel } from '../lib/store/concurrency.js'
import { GRPC_DEFAULT_RECEIVE_BYTES } from '../lib/store/client-policy.js'
import { KeyNotFoundError, RevisionCompactedError, VersionMismatchError } from '../lib/store/errors.js'
import { toHttpError } from '../lib/http/errors.js'

/** Asserts that `fn` throws an instance of `kind`. */
function throwsA (t: Test, fn: () => unknown, kind: abstract new (...args: any[]) => Error, message?: string) {
  try {
    fn()
  } catch (err) {
    t.ok(err instanceof kind, message ?? `throws a ${kind.name}`)
    return
  }
  t.fail(`${message ?? kind.name}: nothing was thrown`)
}

const NOW = Date.UTC(2030, 0, 1)
const NOW_S = NOW / 1000
const alice = { username: 'alice', admin: false }
const limits = { keyPrefix: 'sak_', maxKeyBytes: maxKeyBytes(64 * 1024), now: NOW }

t.test('prepareForCreate builds the key and its secret', async t => {
  const { apiKey, secret } = prepareForCreate({ metadata: { labels: { team: 'a' } }, url: 'https://x' }, { namespace: 'dev', caller: alice, ...limits })
  t.match(apiKey.metadata.name, /^[0-9a-f-]{36}$/, 'a new UUID name')
  t.same(apiKey, { metadata: { name: apiKey.metadata.name, namespace: 'dev', labels: { team: 'a' }, created_by: 'alice' }, username: 'alice', created_at: NOW_S, url: 'https://x' })
  t.ok(isWellFormedSecret(secret, 'sak_'), 'a well-formed secret with the prefix')
  const other = prepareForCreate({}, { namespace: 'dev', caller: alice, ...limits })
  t.not(other.apiKey.metadata.name, apiKey.metadata.name, 'names differ')
  t.not(other.secret, secret, 'secrets differ')
  t.equal(prepareForCreate({ username: 'bob' }, { namespace: 'dev', caller: alice, ...limits }).apiKey.username, 'bob', 'the body may name the user (authorization decides)')
})

t.test('prepareForCreate refuses a foreign namespace, an expiry not in the future or too far, a key too large', async t => {
  const create = (body: object) => () => prepareForCreate(body, { namespace: 'dev', caller: alice, ...limits })
  t.throws(create({ metadata: { namespace: 'prod' } }), new InvalidRequestError('field "metadata.namespace" does not match the namespace of the URL'))
  t.doesNotThrow(create({ metadata: { namespace: 'dev' } }), 'its own namespace is fine')
  t.throws(create({ expires_at: NOW_S }), new InvalidRequestError('field "expires_at" must be in the future (Unix seconds)'))
  t.throws(create({ expires_at: NOW_S + 9_000_000_001 }), new InvalidRequestError('field "expires_at" is further away than etcd can keep a lease'))
  t.equal(prepareForCreate({ expires_at: NOW_S + 60 }, { namespace: 'dev', caller: alice, ...limits }).apiKey.expires_at, NOW_S + 60)
  const big = { annotations: { a: 'x'.repeat(200) } }
  throwsA(t, () => prepareForCreate({ metadata: big }, { namespace: 'dev', caller: alice, ...limits, maxKeyBytes: 200 }), ApiKeyTooLargeError)
})

t.test('a caller whose key expires makes keys that expire no later (prepareForCreate, validateCreate)', async t => {
  const shortLived = { username: 'alice', admin: false, expiresAt: NOW_S + 100 }
  const { apiKey } = prepareForCreate({}, { namespace: 'dev', caller: shortLived, ...limits })
  t.equal(apiKey.expires_at, NOW_S + 100, 'inherits the caller\'s expiry')
  t.doesNotThrow(() => validateCreate(shortLived, apiKey))
  const later = prepareForCreate({ expires_at: NOW_S + 200 }, { namespace: 'dev', caller: shortLived, ...limits }).apiKey
  throwsA(t, () => validateCreate(shortLived, later), PermissionDeniedError, 'one that outlives it is refused')
  t.doesNotThrow(() => validateCreate(alice, later), 'a caller without expiry is not bound')
})

const stored: ApiKey = {
  metadata: { name: 'k1', namespace: 'dev', labels: { a: '1', b: '2' }, created_by: 'admin' },
  username: 'alice',
  created_at: NOW_S - 10,
  expires_at: NOW_S + 100
}

t.test('prepareForUpdate applies a JSON merge patch', async t => {
  const after = prepareForUpdate(stored, { metadata: { labels: { a: null, c: '3' } }, url: 'https://y' }, limits)
  t.same(after.metadata.labels, { b: '2', c: '3' }, 'null removes, new fields are added, others stay')
  t.equal(after.url, 'https://y')
  t.equal(stored.metadata.labels?.a, '1', 'the stored key is not changed')
  t.same(prepareForUpdate(stored, { expires_at: null }, limits).expires_at, undefined, 'null removes the expiry')
  t.same(mergePatch({ a: { b: 1 } }, { a: { c: 2 } }), { a: { b: 1, c: 2 } }, 'objects merge')
  t.same(mergePatch({ a: [1] }, { a: [2] }), { a: [2] }, 'arrays replace')
  t.same(Object.getPrototypeOf(mergePatch({}, JSON.parse('{"__proto__": {"x": 1}}'))), Object.prototype, '__proto__ is skipped')
})

t.test('prepareForUpdate keeps immutable fields and checks the result', async t => {
  for (const [patch, field] of [
    [{ metadata: { name: 'other' } }, 'metadata.name'],
    [{ metadata: { namespace: 'prod' } }, 'metadata.namespace'],
    [{ metadata: { created_by: 'mallory' } }, 'metadata.created_by'],
    [{ created_at: 1 }, 'created_at']
  ] as const) {
    t.throws(() => prepareForUpdate(stored, patch, limits), new InvalidRequestError(`field "${field}" is immutable`), field)
  }
  t.doesNotThrow(() => prepareForUpdate(stored, { metadata: { name: 'k1' } }, limits), 'repeating an immutable field is fine')
  throwsA(t, () => prepareForUpdate(stored, { username: '' }, limits), InvalidRequestError, 'the patched key must match the schema')
  t.throws(() => prepareForUpdate(stored, { expires_at: NOW_S - 1 }, limits), new InvalidRequestError('field "expires_at" must be in the future (Unix seconds)'))
  const past = { ...stored, expires_at: NOW_S - 5 }
  t.doesNotThrow(() => prepareForUpdate(past, { url: 'https://z' }, limits), 'an unchanged expiry is not checked again')
  t.throws(() => prepareForUpdate(stored, { headers: { h: 'x'.repeat(500) } }, { ...limits, maxKeyBytes: 400 }), new ApiKeyTooLargeError(400))
})

t.test('validateUpdate: a moved expiry stays within the caller\'s own', async t => {
  const caller = { username: 'alice', admin: false, expiresAt: NOW_S + 100 }
  t.doesNotThrow(() => validateUpdate(caller, stored, { ...stored, url: 'x' }), 'an unchanged expiry is fine')
  t.doesNotThrow(() => validateUpdate(caller, stored, { ...stored, expires_at: NOW_S + 50 }))
  throwsA(t, () => validateUpdate(caller, stored, { ...stored, expires_at: NOW_S + 101 }), PermissionDeniedError)
  const { expires_at: _gone, ...forever } = stored
  t.throws(() => validateUpdate(caller, stored, forever), /field "expires_at" may not be removed/)
  t.doesNotThrow(() => checkExpiry(undefined), 'no expiry is no problem')
})

t.test('Idempotency-Key values and <namespace>/<name>', async t => {
  t.equal(checkIdempotencyKey('8e03978e-40d5-43e8-bc93-6894a57f9324'), '8e03978e-40d5-43e8-bc93-6894a57f9324')
  throwsA(t, () => checkIdempotencyKey('short'), InvalidRequestError)
  throwsA(t, () => checkIdempotencyKey('a b c d e f g h i j'), InvalidRequestError, 'spaces')
  t.equal(qualifiedName('dev', 'k1'), 'dev/k1')
  t.same(parseQualifiedName('dev/k1'), { namespace: 'dev', name: 'k1' })
})

t.test('the key builder', async t => {
  const keys = new EtcdKeys('/sensu.io')
  t.equal(keys.namespace('dev'), '/sensu.io/apikeys/dev/', 'a namespace prefix ends in /: dev never lists dev2')
  t.equal(keys.record('dev', 'k1'), '/sensu.io/apikeys/dev/k1')
  t.equal(keys.digest('ab'), '/sensu.io/apikey-digests/ab')
  t.equal(keys.digestOf(keys.digest('ab')), 'ab')
  t.equal(keys.idempotency('e1'), '/sensu.io/apikey-idempotency/e1')
  t.equal(keys.recordAt('dev/k1'), keys.record('dev', 'k1'))
  t.equal(keys.relativeToRecords(keys.record('dev', 'k1')), 'dev/k1')
  t.throws(() => keys.relativeToRecords('/sensu.io/apikey-digests/ab'), /key outside/)
  t.equal(EtcdKeys.digestTarget('dev', 'k1'), 'dev/k1')
  t.equal(keys.fence('bob'), '/sensu.io/apikey-fences/bob', 'a plain username stays as it is')
  t.equal(keys.fence('a/b'), '/sensu.io/apikey-fences/a%2Fb', 'a / cannot climb')
  t.equal(keys.fence('é'), '/sensu.io/apikey-fences/%C3%A9', 'non-ASCII is URI-encoded: the cache serves ASCII keys')
  t.equal(keys.fence('\ud800'), '/sensu.io/apikey-fences/%5Cud800', 'a lone surrogate is JSON-escaped first')
  t.not(keys.fence('a\nb'), keys.fence('a\\nb'), 'distinct usernames, distinct fences')
  t.same(keyAfter(Buffer.from('ab')), Buffer.from('ab\0'))
  t.same(rangeEnd('/a/'), Buffer.from('/a0'))
  t.same(rangeEnd('a'), Buffer.from('b'), 'the last byte, one up')
})

t.test('reads per range and the separator of a page token', async t => {
  t.equal(readBatchFor(maxKeyBytes(64 * 1024)), Math.floor(GRPC_DEFAULT_RECEIVE_BYTES * 3 / 4 / (65 * 1024)), 'gRPC\'s 4 MiB: 47 of the largest keys')
  t.equal(readBatchFor(100), 500, 'never more than 500')
  t.equal(readBatchFor(10 * 1024 * 1024), 1, 'never fewer than 1')
  t.equal(readBatchFor(maxKeyBytes(64 * 1024), 64 * 1024 * 1024), 500, 'a larger receive limit reads more at once')
  t.equal(separator(Buffer.from('dev/abc'), Buffer.from('dev/abd')), 'dev/abd')
  t.equal(separator(Buffer.from('dev/a'), Buffer.from('dev/b-long')), 'dev/b', 'the shortest prefix that sorts after')
  t.ok(separator(Buffer.from('dev/a'), Buffer.from('dev/ab')) > 'dev/a')
})

t.test('inParallel: bounded, in order', async t => {
  let running = 0
  let most = 0
  const results = await inParallel([5, 1, 4, 2, 3], 2, async n => {
    most = Math.max(most, ++running)
    await new Promise(resolve => setImmediate(resolve))
    running--
    return n * 10
  })
  t.same(results, [50, 10, 40, 20, 30])
  t.equal(most, 2, 'never more than 2 at once')
  t.same(await inParallel([], 3, async () => 1), [])
})

t.test('store and rule errors become statuses in one place', async t => {
  t.equal(toHttpError(new KeyNotFoundError('apikey x not found')).statusCode, 404)
  t.equal(toHttpError(new VersionMismatchError()).statusCode, 412)
  t.equal(toHttpError(new RevisionCompactedError('compacted')).statusCode, 410)
  t.equal(toHttpError(new InvalidRequestError('bad')).statusCode, 400)
  t.equal(toHttpError(new PermissionDeniedError('no')).message, 'permission denied: no')
  t.equal(toHttpError(new ApiKeyTooLargeError(10)).statusCode, 413)
  t.equal(toHttpError(new Error('boom')).statusCode, 500, 'anything else is a 500, its message not shown')
  t.equal(toHttpError(new Error('boom')).message, 'internal error')
})
