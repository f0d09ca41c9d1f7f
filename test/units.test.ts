// The pieces that need no etcd: secrets, continue tokens, authenticators.
import t from 'tap'
import { crc32 } from 'node:zlib'
import type { FastifyRequest } from 'fastify'
import {
  anyOf, bearerTokens, decodeContinueToken, digestSecret, encodeContinueToken, generateSecret, isWellFormedSecret
} from '../lib/index.js'
import { Coalescer } from '../lib/store/cache/freshness.js'
import { EtcdUnavailableError } from '../lib/store/errors.js'

t.test('secrets: prefix, 43 random characters, CRC-32 checksum', async t => {
  const secret = generateSecret('sak_')
  t.match(secret, /^sak_[A-Za-z0-9_-]{49}$/)
  const body = secret.slice(0, -6)
  const sum = Buffer.alloc(4)
  sum.writeUInt32BE(crc32(Buffer.from(body)))
  t.equal(secret.slice(-6), sum.toString('base64url'), 'the checksum is CRC-32 (IEEE) of prefix and random part')
  t.ok(isWellFormedSecret(secret, 'sak_'))
  t.notOk(isWellFormedSecret(secret, 'xyz_'), 'another prefix')
  t.notOk(isWellFormedSecret(secret.slice(0, 20) + (secret[20] === 'a' ? 'b' : 'a') + secret.slice(21), 'sak_'), 'a changed character')
  t.notOk(isWellFormedSecret(secret + 'x', 'sak_'), 'too long')
  t.not(generateSecret('sak_'), secret, 'random')
  t.equal(digestSecret('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad', 'SHA-256 hex')
})

t.test('continue tokens', async t => {
  const token = encodeContinueToken({ rev: 42, start: 'dev/abc\u0000' })
  t.match(token, /^[A-Za-z0-9_-]+$/, 'base64url without padding')
  t.same(JSON.parse(Buffer.from(token, 'base64url').toString()), { v: 1, rev: 42, start: 'dev/abc\u0000' }, 'the documented JSON')
  t.same(decodeContinueToken(token, 'dev'), { rev: 42, start: 'dev/abc\u0000' })
  const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url')
  const bad: Record<string, string> = {
    'not base64url': '!!!',
    padding: token + '=',
    'not JSON': Buffer.from('nope').toString('base64url'),
    'an array': encode([1]),
    'another version': encode({ v: 2, rev: 1, start: 'dev/a' }),
    'extra fields': encode({ v: 1, rev: 1, start: 'dev/a', x: 1 }),
    'no start': encode({ v: 1, rev: 1 }),
    'rev 0': encode({ v: 1, rev: 0, start: 'dev/a' }),
    'negative rev': encode({ v: 1, rev: -5, start: 'dev/a' }),
    'fractional rev': encode({ v: 1, rev: 1.5, start: 'dev/a' }),
    'huge rev': encode({ v: 1, rev: 1e300, start: 'dev/a' }),
    'rev as a string': encode({ v: 1, rev: '7', start: 'dev/a' }),
    'another namespace': encode({ v: 1, rev: 1, start: 'dev2/a' }),
    'a prefix of the namespace': encode({ v: 1, rev: 1, start: 'de/a' }),
    'climbing out': encode({ v: 1, rev: 1, start: 'dev/../dev2/a' }),
    'the digest prefix': encode({ v: 1, rev: 1, start: '../apikey-digests/' }),
    'too long': encode({ v: 1, rev: 1, start: 'dev/' + 'a'.repeat(2000) }),
    'spare bits set (not canonical)': token.slice(0, -1) + String.fromCharCode(token.charCodeAt(token.length - 1) + 1),
    'not UTF-8': Buffer.concat([Buffer.from('{"v":1,"rev":1,"start":"dev/'), Buffer.from([0xff]), Buffer.from('"}')]).toString('base64url')
  }
  for (const [title, text] of Object.entries(bad)) t.throws(() => decodeContinueToken(text, 'dev'), title)
})

t.test('bearerTokens and anyOf', async t => {
  const request = (authorization?: string) => ({ headers: authorization === undefined ? {} : { authorization } }) as FastifyRequest
  const bearer = bearerTokens(['one', 'two'])
  t.same(await bearer(request('Bearer two')), { username: 'admin', admin: true })
  t.same(await bearer(request('bearer   one')), { username: 'admin', admin: true }, 'the scheme is case-insensitive')
  t.equal(await bearer(request('Bearer three')), null)
  t.equal(await bearer(request('Bearer tw')), null, 'a prefix of a token is no token')
  t.equal(await bearer(request('Key one')), null)
  t.equal(await bearer(request()), null)
  t.throws(() => bearerTokens([]), /non-empty/)
  t.throws(() => bearerTokens(['']), /non-empty/)
  const either = anyOf(bearerTokens(['a'], { username: 'ci' }), bearer)
  t.same(await either(request('Bearer a')), { username: 'ci', admin: true }, 'the first that accepts wins')
  t.same(await either(request('Bearer one')), { username: 'admin', admin: true })
  t.equal(await either(request('Bearer z')), null)
  const failing = anyOf(() => { throw new Error('boom') })
  await t.rejects(async () => await failing(request('Bearer a')), /boom/, 'an authenticator that throws is a rejection, as from an async function')
  const later = anyOf(bearer, async () => ({ username: 'k', admin: false }))
  t.same(await later(request('Key x')), { username: 'k', admin: false }, 'an authenticator that answers later is awaited')
})

t.test('the freshness read: shared by the callers that arrived before it was sent, each with its deadline', async t => {
  let calls = 0
  const sent: Array<(value: number) => void> = []
  const coalescer = new Coalescer(() => new Promise<number>(resolve => { calls++; sent.push(resolve) }))
  const first = [coalescer.run(Date.now() + 60_000), coalescer.run(Date.now() + 60_000)]
  t.equal(calls, 0, 'not sent while the callers of this turn arrive')
  await new Promise(resolve => setImmediate(resolve))
  t.equal(calls, 1, 'one call for the callers of one turn')
  // Arrive while the call is out: theirs is the next call, never the one in flight.
  const second = coalescer.run(Date.now() + 60_000)
  const short = coalescer.run(Date.now() + 20)
  const unavailable = async (promise: Promise<unknown>) => await promise.then(() => false, err => err instanceof EtcdUnavailableError)
  t.ok(await unavailable(short), 'a caller whose deadline comes first gets an EtcdUnavailableError (a 503) then')
  sent[0](1)
  t.same(await Promise.all(first), [1, 1])
  await new Promise(resolve => setImmediate(resolve))
  t.equal(calls, 2, 'the next call is sent for the callers that waited')
  sent[1](2)
  t.equal(await second, 2, 'a caller that arrived after a call was sent gets the next one')
  t.ok(await unavailable(coalescer.run(Date.now() - 1)), 'a deadline already past: at once')
})
