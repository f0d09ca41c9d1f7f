// The standalone server's admin bearer tokens: from APIKEY_ADMIN_TOKEN, or from a file trusted only when safe.
import { randomBytes } from 'node:crypto'
import { mkdir, open, stat, writeFile, type FileHandle } from 'node:fs/promises'
import { constants } from 'node:fs'
import { join } from 'node:path'
import { ADMIN_TOKEN_MIN_LENGTH, isAdminToken, type ServerConfig } from './config.js'

export interface AdminTokens {
  /** Each one authenticates as an admin: several let a token be rotated without downtime. */
  tokens: string[]
  /** The file they come from, when APIKEY_ADMIN_TOKEN is not set. */
  file?: string
  /** What the operator should fix, for the log (DATA_DIR open to others). */
  warning?: string
}

/** The admin token file holds one token a line: anything larger is not one. */
const MAX_ADMIN_TOKEN_FILE_BYTES = 64 * 1024

/** An admin token file the server does not trust; its message names the file and says what to do. */
export class AdminTokenFileError extends Error {}

const octal = (mode: number) => (mode & 0o777).toString(8).padStart(4, '0')
const refused = (file: string, problem: string) => new AdminTokenFileError(`the admin token file ${file} ${problem}`)

/**
 * The admin bearer tokens: APIKEY_ADMIN_TOKEN's, or those of `<DATA_DIR>/admin-token`, one a
 * line. On first start the server makes the folder (0700) and the file (0600, one random token),
 * so that the token survives restarts. The file is trusted only when no one but the server's user
 * can have read or written it: a regular file (not a symbolic link), owned by the server's user,
 * mode 0600 or stricter; else the start fails with an AdminTokenFileError.
 */
export async function loadAdminToken (config: ServerConfig): Promise<AdminTokens> {
  if (config.adminTokens !== undefined) return { tokens: config.adminTokens }
  const { dataDir } = config
  const file = join(dataDir, 'admin-token')
  await mkdir(dataDir, { recursive: true, mode: 0o700 })
  // A folder open to others is only warned about: the file's own checks keep the token private,
  // and a container's volume folder is often made 0755 by the runtime, out of the operator's hands.
  const dirMode = (await stat(dataDir)).mode
  const warning = (dirMode & 0o077) === 0
    ? undefined
    : `DATA_DIR ${dataDir} has mode ${octal(dirMode)}: users other than the server's may list it; chmod 700 ${dataDir}`
  const existing = await readAdminTokenFile(file)
  if (existing !== undefined) return { tokens: existing, file, warning }
  const token = randomBytes(32).toString('base64url')
  try {
    // wx: O_EXCL, which never follows a symbolic link planted in the meantime.
    await writeFile(file, token + '\n', { mode: 0o600, flag: 'wx' })
    return { tokens: [token], file, warning }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
  }
  // Another server sharing DATA_DIR made it first: use that one.
  const made = await readAdminTokenFile(file)
  if (made === undefined) throw refused(file, 'was made and removed by something else while the server started: start it again')
  return { tokens: made, file, warning }
}

/** The tokens of the admin token file, checked; undefined when there is no such file. */
async function readAdminTokenFile (file: string): Promise<string[] | undefined> {
  let handle: FileHandle
  try {
    // O_NOFOLLOW: a symbolic link is refused, not followed. O_NONBLOCK: a FIFO cannot hang the start.
    handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return undefined
    if (code === 'ELOOP') throw refused(file, 'is a symbolic link; it must be a regular file: replace the link with the file itself')
    throw refused(file, `cannot be read (${code}): it must be readable by the server's user`)
  }
  try {
    // The checks are made on the file opened, so that it cannot be swapped between check and read.
    const stats = await handle.stat()
    if (!stats.isFile()) throw refused(file, 'is not a regular file; it must be one, holding one token a line')
    const uid = process.getuid?.()
    if (uid !== undefined && stats.uid !== uid) {
      throw refused(file, `is owned by uid ${stats.uid}, not by the server's user (uid ${uid}): chown it to that user`)
    }
    if ((stats.mode & 0o077) !== 0) throw refused(file, `has mode ${octal(stats.mode)}; it must be 0600: chmod 600 ${file}`)
    if (stats.size > MAX_ADMIN_TOKEN_FILE_BYTES) throw refused(file, `holds ${stats.size} bytes, more than ${MAX_ADMIN_TOKEN_FILE_BYTES}: it must hold only tokens, one a line`)
    const lines = (await handle.readFile('utf8')).split('\n').map(line => line.trim())
    const bad = lines.findIndex(line => line !== '' && !isAdminToken(line))
    if (bad >= 0) {
      throw refused(file, `has a bad line ${bad + 1}: each line must hold one token of at least ${ADMIN_TOKEN_MIN_LENGTH} ` +
        'printable characters, without spaces or commas')
    }
    const tokens = lines.filter(line => line !== '')
    if (tokens.length === 0) {
      throw refused(file, `holds no token: write one a line (at least ${ADMIN_TOKEN_MIN_LENGTH} printable characters), or delete the file to have one made`)
    }
    return tokens
  } finally {
    await handle.close()
  }
}
