// What the two commands (the server, check-consistency) share: errors on one line, and no warning
// a user cannot act on.

/**
 * grpc-js names the TLS server even when it is an IP address (etcd at https://127.0.0.1:2379), and
 * Node warns about it (DEP0123): nothing a user can act on, and noise before a one-line error.
 */
export function silenceTlsIpWarning (): void {
  const emitWarning = process.emitWarning.bind(process)
  process.emitWarning = ((warning: string | Error, ...rest: any[]) => {
    const code = typeof rest[0] === 'object' ? rest[0]?.code : rest[1]
    if (code !== 'DEP0123') emitWarning(warning, ...rest)
  }) as typeof process.emitWarning
}

/** An error and its causes, on one line: each one's first line, without the plugin's name. */
export function describeError (err: unknown): string {
  const parts: string[] = []
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    parts.push(e.message.replace(/^fastify-etcd-apikeys: /, '').split('\n')[0])
  }
  return parts.join(': ')
}
