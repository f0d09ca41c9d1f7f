// What can go wrong in the command line, each with its exit code (docs/cli.md): the answer to a
// script is the code, the answer to a person is one line on stderr.

/** The exit codes, as docs/cli.md lists them. */
export const EXIT = {
  ok: 0,
  /** The server refused the request, or the user did not confirm. */
  refused: 1,
  /** The command line itself is wrong: unknown command, bad flag value, no credentials. */
  usage: 2,
  /** The server could not be reached. */
  cannotConnect: 3
} as const

/** An error the command line reports on one line and ends with `exitCode`. */
export class CliError extends Error {
  constructor (message: string, readonly exitCode: number) {
    super(message)
    this.name = 'CliError'
  }
}

/** A wrong command line found after parsing (a flag value commander cannot check alone). */
export class UsageError extends CliError {
  constructor (message: string) {
    super(message, EXIT.usage)
    this.name = 'UsageError'
  }
}

/** An error answer from the server: its status, and its message (Sensu's `{message, code}` body). */
export class ServerError extends CliError {
  constructor (message: string, readonly status: number) {
    super(message, EXIT.refused)
    this.name = 'ServerError'
  }
}

/** The server could not be reached, or did not answer in time. */
export class ConnectError extends CliError {
  constructor (message: string) {
    super(message, EXIT.cannotConnect)
    this.name = 'ConnectError'
  }
}

/** The user answered no (or nothing) to a confirmation, or there was no terminal to ask on. */
export class NotConfirmedError extends CliError {
  constructor (message: string) {
    super(message, EXIT.refused)
    this.name = 'NotConfirmedError'
  }
}
