import type { ApiKey } from './schemas.js'

/** Who makes a request: an admin, or a plain username. */
export interface Caller {
  username: string
  admin: boolean
  /**
   * Unix seconds: the caller's own credentials end then (an API key's `expires_at`), and nothing
   * it makes or changes may outlive them. Absent: not bound (bearer tokens).
   */
  expiresAt?: number
}

/** `rotate`: a new secret for the key; the default policy treats it as `patch`, so a key may rotate itself. */
export type Action = 'list' | 'get' | 'create' | 'patch' | 'delete' | 'rotate'

export interface AuthorizeContext {
  caller: Caller
  action: Action
  namespace: string
  /** The stored key; for `create` the key about to be created, for `patch` the key as patched, for `rotate` the key as stored. */
  key: ApiKey
}

export type Authorize = (context: AuthorizeContext) => boolean | Promise<boolean>

/** Admins may do everything; anyone else only touches keys of its own username. */
export const defaultAuthorize: Authorize = ({ caller, key }) => caller.admin || key.username === caller.username
