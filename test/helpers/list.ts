// Reading lists the way a client does: one page, or a walk that follows Sensu-Continue.
import type { Answer, TestApp } from './app.js'

export type Key = Record<string, any>

/** etcd orders keys by their bytes. */
export const byteOrder = (a: string, b: string) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'))
export const namesOf = (keys: Key[]) => keys.map(k => k.metadata.name as string)

export interface PageOptions { limit?: number | string, token?: string, auth?: string, labelSelector?: string, fieldSelector?: string }

/** Where a list lives: a namespace's, or every namespace's (`ALL`: GET /apikeys). */
export const ALL = null
export type Scope = string | typeof ALL
const listPath = (ns: Scope) => ns === ALL ? '/apikeys' : `/namespaces/${ns}/apikey`

/** One GET of a namespace's list (or of every namespace's), and its Sensu-Continue header. */
export async function listPage (app: TestApp, ns: Scope, { limit, token, auth, labelSelector, fieldSelector }: PageOptions = {}): Promise<{ res: Answer, next?: string }> {
  const query = new URLSearchParams()
  if (limit !== undefined) query.set('limit', String(limit))
  if (token !== undefined) query.set('continue', token)
  if (labelSelector !== undefined) query.set('labelSelector', labelSelector)
  if (fieldSelector !== undefined) query.set('fieldSelector', fieldSelector)
  const qs = query.toString() === '' ? '' : `?${query}`
  const res = await app.call({ path: `${listPath(ns)}${qs}`, ...(auth !== undefined && { auth }) })
  const header = res.headers['sensu-continue']
  return { res, next: header === undefined ? undefined : String(header) }
}

export interface Walk {
  pages: Key[][]
  /** The Sensu-Continue header of each page. */
  tokens: Array<string | undefined>
  items: Key[]
}

/** Follows Sensu-Continue from `from` (or the first page) until a page carries none. */
export async function walk (app: TestApp, ns: Scope, limit: number, { from, ...options }: Omit<PageOptions, 'limit' | 'token'> & { from?: string } = {}): Promise<Walk> {
  const result: Walk = { pages: [], tokens: [], items: [] }
  let token = from
  for (let n = 0; n < 1000; n++) {
    const { res, next } = await listPage(app, ns, { ...options, limit, token })
    if (res.statusCode !== 200) throw new Error(`page ${n + 1} of ${listPath(ns)}: ${res.statusCode} ${res.body}`)
    const items = res.json() as Key[]
    result.pages.push(items)
    result.tokens.push(next)
    result.items.push(...items)
    if (next === undefined) return result
    token = next
  }
  throw new Error(`the walk of ${listPath(ns)} did not end`)
}
