// The commands that change keys: grant, revoke, revoke-all, label, rotate, disable and enable.
import { ALL_NAMESPACES_PATH, collectionPath, keyPath } from '../client.js'
import { confirm } from '../confirm.js'
import { timestamp } from '../table.js'
import type { KeyWithSecret, ShownKey } from '../shown-key.js'
import type { Context } from './context.js'

export interface GrantOptions {
  label?: Record<string, string>
  /** Seconds from now. */
  expiresIn?: number
  /** Unix seconds. */
  expiresAt?: number
  idempotencyKey?: string
  quiet?: boolean
}

const idempotency = (key: string | undefined) => key === undefined ? undefined : { 'idempotency-key': key }

export async function grant (ctx: Context, username: string | undefined, options: GrantOptions): Promise<void> {
  const expiresAt = options.expiresIn !== undefined ? Math.floor(Date.now() / 1000) + options.expiresIn : options.expiresAt
  const body = {
    ...(username !== undefined && { username }),
    ...(options.label !== undefined && { metadata: { labels: options.label } }),
    ...(expiresAt !== undefined && { expires_at: expiresAt })
  }
  const answer = await ctx.client.call<KeyWithSecret>('POST', collectionPath(ctx.connection.namespace), { body, headers: idempotency(options.idempotencyKey) })
  const key = answer.body
  if (options.quiet === true) return await ctx.out.write(`${key.key}\n`)
  await ctx.out.write([
    'Granted a new API key. Save its secret now: it is never shown again.',
    `Name: ${key.metadata.name}`,
    `Path: ${answer.headers.get('location') ?? keyPath(key.metadata.namespace, key.metadata.name)}`,
    `Key:  ${ctx.out.style('bold', key.key)}`,
    ''
  ].join('\n'))
}

export async function revoke (ctx: Context, name: string, options: { skipConfirm?: boolean }): Promise<void> {
  const { namespace } = ctx.connection
  if (options.skipConfirm !== true) {
    await confirm(`Revoke API key '${name}' in namespace '${namespace}'? Whatever uses it stops working.`, `revoke ${name}`)
  }
  await ctx.client.call('DELETE', keyPath(namespace, name))
  await ctx.out.write(`Revoked API key ${name} in namespace ${namespace}.\n`)
}

export async function revokeAll (ctx: Context, username: string, options: { skipConfirm?: boolean }): Promise<void> {
  if (options.skipConfirm !== true) {
    await confirm(`Revoke every API key of user '${username}', in every namespace? Whatever uses them stops working.`, `revoke-all ${username}`)
  }
  const { body } = await ctx.client.call<{ username: string, deleted: number }>('DELETE', ALL_NAMESPACES_PATH, { query: { username } })
  await ctx.out.write(`Revoked ${body.deleted} API key${body.deleted === 1 ? '' : 's'} of user ${body.username}.\n`)
}

/** Sets (`k=v`) and removes (`k-`, null here) labels with one merge patch. */
export async function label (ctx: Context, name: string, changes: Record<string, string | null>): Promise<void> {
  const { body } = await ctx.client.call<ShownKey>('PATCH', keyPath(ctx.connection.namespace, name), {
    body: { metadata: { labels: changes } },
    contentType: 'application/merge-patch+json'
  })
  const labels = Object.entries(body.metadata.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(',')
  await ctx.out.write(`Labels of API key ${name}: ${labels === '' ? '(none)' : labels}\n`)
}

export async function rotate (ctx: Context, name: string, options: { grace?: number, idempotencyKey?: string, quiet?: boolean }): Promise<void> {
  const startedAt = Math.floor(Date.now() / 1000)
  const { body: key } = await ctx.client.call<KeyWithSecret>('POST', `${keyPath(ctx.connection.namespace, name)}/rotate`, {
    body: options.grace === undefined ? undefined : { grace_seconds: options.grace },
    headers: idempotency(options.idempotencyKey)
  })
  if (options.quiet === true) return await ctx.out.write(`${key.key}\n`)
  const grace = options.grace ?? 0
  await ctx.out.write([
    `Rotated API key ${name}. Save its new secret now: it is never shown again.`,
    grace === 0 ? 'The old secret no longer works.' : `The old secret works until about ${timestamp((key.rotated_at ?? startedAt) + grace)}.`,
    `Key:  ${ctx.out.style('bold', key.key)}`,
    ''
  ].join('\n'))
}

export async function setDisabled (ctx: Context, name: string, disabled: boolean): Promise<void> {
  await ctx.client.call<ShownKey>('PATCH', keyPath(ctx.connection.namespace, name), {
    body: { disabled },
    contentType: 'application/merge-patch+json'
  })
  await ctx.out.write(disabled
    ? `Disabled API key ${name}: it no longer authenticates until \`apikeys enable ${name}\`.\n`
    : `Enabled API key ${name}: it authenticates again.\n`)
}
