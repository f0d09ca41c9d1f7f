// A key as the command line receives it from the server.
import type { ApiKey, CreatedApiKey } from '../keys/schemas.js'

/** The lifecycle fields (rotation, disabling, last use) a key has when the server sets them. */
interface Lifecycle { disabled?: boolean, last_used_at?: number, rotated_at?: number }

export type ShownKey = ApiKey & Lifecycle
/** The answer to a grant or a rotation: the key with its secret, shown this once. */
export type KeyWithSecret = CreatedApiKey & Lifecycle
