// Where the command line connects and as whom: flags win over the environment, and the environment
// over ./data/admin-token (docs/cli.md). A secret is never echoed, only where it came from.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { UsageError } from './errors.js'

export const DEFAULT_URL = 'http://127.0.0.1:8080'
export const DEFAULT_NAMESPACE = 'default'
/** The standalone server's base path (its plugin's `basePath`). */
export const BASE_PATH = '/api/core/v2'
/** Where the standalone server keeps its admin tokens, from the folder it was started in. */
export const ADMIN_TOKEN_FILE = join('data', 'admin-token')

/** The connection flags, as commander parsed them (global options). */
export interface ConnectionFlags {
  url?: string
  token?: string
  tokenFile?: string
  apiKey?: string
  namespace?: string
}

export interface Connection {
  /** The server's URL with the API's base path, no trailing slash. */
  apiUrl: string
  /** The Authorization header's value. */
  authorization: string
  /** Where the credentials came from (`--token`, `APIKEYS_KEY`, `./data/admin-token`...), for messages. */
  credentialsFrom: string
  namespace: string
}

export function resolveConnection (flags: ConnectionFlags, env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): Connection {
  return {
    apiUrl: apiUrlOf(flags.url ?? nonEmpty(env.APIKEYS_URL) ?? DEFAULT_URL, flags.url !== undefined ? '--url' : 'APIKEYS_URL'),
    ...credentialsOf(flags, env, cwd),
    namespace: flags.namespace ?? nonEmpty(env.APIKEYS_NAMESPACE) ?? DEFAULT_NAMESPACE
  }
}

function nonEmpty (value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value
}

function apiUrlOf (text: string, from: string): string {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw new UsageError(`${from} must be the server's URL, such as ${DEFAULT_URL} (got "${text}")`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UsageError(`${from} must be an http:// or https:// URL, such as ${DEFAULT_URL} (got "${text}")`)
  }
  if (url.search !== '' || url.hash !== '') throw new UsageError(`${from} must not hold a query or a fragment (got "${text}")`)
  return `${url.origin}${url.pathname.replace(/\/+$/, '')}${BASE_PATH}`
}

/** A bearer token: the standalone server's admin token. */
const bearer = (token: string, from: string) => ({ authorization: `Bearer ${checked(token, from)}`, credentialsFrom: from })
/** An API key's secret. */
const apiKey = (secret: string, from: string) => ({ authorization: `Key ${checked(secret, from)}`, credentialsFrom: from })

function credentialsOf (flags: ConnectionFlags, env: NodeJS.ProcessEnv, cwd: string): Pick<Connection, 'authorization' | 'credentialsFrom'> {
  const given = (['token', 'tokenFile', 'apiKey'] as const).filter(name => flags[name] !== undefined)
  if (given.length > 1) throw new UsageError('give only one of --token, --token-file and --api-key')
  if (flags.token !== undefined) return bearer(flags.token, '--token')
  if (flags.tokenFile !== undefined) return bearer(firstToken(flags.tokenFile, true), `--token-file ${flags.tokenFile}`)
  if (flags.apiKey !== undefined) return apiKey(flags.apiKey, '--api-key')

  const envToken = nonEmpty(env.APIKEYS_TOKEN)
  const envKey = nonEmpty(env.APIKEYS_KEY)
  if (envToken !== undefined && envKey !== undefined) throw new UsageError('APIKEYS_TOKEN and APIKEYS_KEY are both set: unset one (or pass --token or --api-key, which win)')
  if (envToken !== undefined) return bearer(envToken, 'APIKEYS_TOKEN')
  if (envKey !== undefined) return apiKey(envKey, 'APIKEYS_KEY')

  const file = join(cwd, ADMIN_TOKEN_FILE)
  const token = firstToken(file, false)
  if (token !== undefined) return bearer(token, `./${ADMIN_TOKEN_FILE}`)
  throw new UsageError(`no credentials: set APIKEYS_TOKEN (an admin token) or APIKEYS_KEY (an API key), or pass --token-file FILE; ./${ADMIN_TOKEN_FILE} is read when present`)
}

/** The first token of a token file (the server's file may hold several, one a line). */
function firstToken (file: string, required: true): string
function firstToken (file: string, required: false): string | undefined
function firstToken (file: string, required: boolean): string | undefined {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (!required && code === 'ENOENT') return undefined
    throw new UsageError(`cannot read the token file ${file}: ${code ?? (err as Error).message}`)
  }
  const token = text.split(/\r?\n/).map(line => line.trim()).find(line => line !== '')
  if (token === undefined) throw new UsageError(`the token file ${file} is empty: it must hold a token on its first line`)
  return token
}

/** A header value must be printable ASCII without spaces; the message names the source, never the value. */
function checked (secret: string, from: string): string {
  if (!/^[\x21-\x7e]+$/.test(secret)) throw new UsageError(`the credentials from ${from} hold a space or a character that cannot go in an HTTP header`)
  return secret
}
