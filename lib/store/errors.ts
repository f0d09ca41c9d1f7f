// The store's typed errors. They say what happened in etcd; lib/http/errors.ts is the one place
// that turns them into answers.

export class KeyNotFoundError extends Error {}
export class KeyExistsError extends Error {}
/** `If-Match` named another version than the stored one. */
export class VersionMismatchError extends Error {}
/** A read at a revision that etcd has compacted. */
export class RevisionCompactedError extends Error {}
/** A read at a revision etcd has not reached. */
export class FutureRevisionError extends Error {}
/** A create with an Idempotency-Key found that key's entry already written: `entry` is it, as stored. */
export class IdempotencyEntryExistsError extends Error {
  constructor (readonly entry: string) {
    super('an entry for this Idempotency-Key exists')
  }
}
/** etcd could not answer within the request's deadline. */
export class EtcdUnavailableError extends Error {}
/** The API key a request authenticated with was revoked (deleted, or by revoke-all) before its write. */
export class CredentialRevokedError extends Error {}
/** A key would be given to a username whose keys were revoked after it was made. */
export class RevokedUsernameError extends Error {
  constructor (readonly username: string) {
    super(`the keys of user ${username} were revoked after this apikey was made, so it cannot be given to that user; create a new apikey for it`)
  }
}
/** etcd refused a write: it is out of space and has raised its NOSPACE alarm. Retrying cannot help. */
export class EtcdNoSpaceError extends Error {}
