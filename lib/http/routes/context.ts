// What every handler works with: the store, the settings, and the few steps they share.
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { ApiKeyStore, StoredKey } from '../../store/store.js'
import type { Minter } from '../../store/transactions.js'
import { KeyNotFoundError } from '../../store/errors.js'
import type { Action, Authorize, Caller } from '../../keys/authorization.js'
import type { ApiKey } from '../../keys/schemas.js'
import { requestDeadline } from '../deadline.js'
import { WriteLimitError } from '../errors.js'
import { writeCounter, type WriteLimit } from '../write-limit.js'
import type { Authenticate } from '../authenticators.js'
import type { AuthFailureLimit } from '../failure-limit.js'

/** What the routes take of the plugin's options. */
export interface RouteSettings {
  requestTimeout: number
  keyPrefix: string
  bodyLimit: number
  maxKeysPerUser: number | false
  writeLimit: WriteLimit | false
  authFailureLimit: AuthFailureLimit | false
  authenticate: Authenticate
}

export interface RoutesOptions {
  store: ApiKeyStore
  settings: RouteSettings
  authorize: Authorize
  /** True when `authorize` is the default policy, whose answer for an admin is always yes. */
  defaultPolicy: boolean
  /** The API key the request authenticated with, if it did with one, and how to verify it again. */
  minterOf: (request: FastifyRequest) => Minter | undefined
}

/** The request's caller; the onRequest hook has set it before any handler runs. */
export function callerOf (request: FastifyRequest): Caller {
  return request.apiKeyCaller as Caller
}

/** The strong ETag of a key: its etcd revision, which changes on every update. */
export const etagOf = (revision: number) => `"${revision}"`

export type RouteContext = ReturnType<typeof routeContext>

/** The steps the handlers share, bound to the plugin's store and settings. */
export function routeContext (options: RoutesOptions, prefix: string) {
  const { settings, authorize } = options
  const allowed = (request: FastifyRequest, action: Action, namespace: string, apiKey: ApiKey) =>
    authorize({ caller: callerOf(request), action, namespace, key: apiKey })
  const countWrite = writeCounter(settings.writeLimit)
  return {
    ...options,
    deadline: (request: FastifyRequest) => requestDeadline(request, settings.requestTimeout),
    allowed,
    /**
     * A key the caller may not see answers as if it did not exist, so its existence is not
     * revealed. Without a promise when `authorize` answers at once (the default policy does).
     */
    ensureVisible (request: FastifyRequest, namespace: string, apiKey: ApiKey): void | Promise<void> {
      const notFound = () => new KeyNotFoundError(`apikey ${apiKey.metadata.name} not found`)
      const answer = allowed(request, 'get', namespace, apiKey)
      if (answer === true) return
      if (answer === false) throw notFound()
      return Promise.resolve(answer).then(yes => { if (!yes) throw notFound() })
    },
    /**
     * Who makes a write: the API key it is made with, if the request authenticated with one (the
     * write holds only while that key still authenticates: see Minter), and the caller as that key
     * is now. When the write finds the key changed and verifies it again, the caller's expiry
     * becomes the key's `expires_at` as it is then, which bounds what the write makes from then
     * on; `rule` is asked again with that caller.
     */
    writer (request: FastifyRequest, rule?: (caller: Caller) => void): { caller: () => Caller, minter: Minter | undefined } {
      let caller = callerOf(request)
      const minter = options.minterOf(request)
      return {
        caller: () => caller,
        minter: minter && {
          key: minter.key,
          recheck: async deadline => {
            const fresh = await minter.recheck(deadline)
            if (fresh !== null) {
              caller = { ...caller, expiresAt: fresh.apiKey.expires_at }
              rule?.(caller)
            }
            return fresh
          }
        }
      }
    },
    /**
     * One audit line for every change: who, what, when (the line's time), from where. Names and
     * fields only, never values: a key's headers may hold credentials, and never its secret.
     */
    audit (request: FastifyRequest, action: 'create' | 'patch' | 'rotate' | 'delete' | 'revoke-all', details: Record<string, unknown>) {
      const { username, admin } = callerOf(request)
      request.log.info({ audit: { action, by: username, admin, from: request.ip, ...details } }, `apikey ${action}`)
    },
    /**
     * Counts a non-admin caller's write against its username's limit; past it a 429, before
     * anything is read or written. Called first in every writing handler.
     */
    countWrite (request: FastifyRequest, reply: FastifyReply) {
      const wait = countWrite(callerOf(request))
      if (wait === 0) return
      reply.header('retry-after', String(wait))
      throw new WriteLimitError(callerOf(request).username, String(wait))
    },
    /** The 201 of a create: the key with its secret, where it lives, its ETag. */
    sendCreated (reply: FastifyReply, created: StoredKey, secret: string) {
      const { namespace, name } = created.apiKey.metadata
      return reply.code(201)
        .header('location', `${prefix}/namespaces/${namespace}/apikey/${name}`)
        .header('etag', etagOf(created.revision))
        .send({ ...created.apiKey, key: secret })
    }
  }
}
