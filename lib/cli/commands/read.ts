// list and info: the keys, in the format asked for.
import { ALL_NAMESPACES_PATH, collectionPath, keyPath } from '../client.js'
import { listPrinter, printKey, type Format } from '../formats.js'
import type { ShownKey } from '../shown-key.js'
import type { Context } from './context.js'

/** The page size when --chunk-size is not given: a list is always read in pages, never whole. */
export const DEFAULT_CHUNK_SIZE = 500

export interface ListOptions {
  allNamespaces?: boolean
  labelSelector?: string
  fieldSelector?: string
  chunkSize?: number
  format: Format
}

export async function list (ctx: Context, options: ListOptions): Promise<void> {
  const path = options.allNamespaces === true ? ALL_NAMESPACES_PATH : collectionPath(ctx.connection.namespace)
  const printer = listPrinter(options.format, ctx.out)
  const query = { labelSelector: options.labelSelector, fieldSelector: options.fieldSelector }
  for await (const page of ctx.client.pages<ShownKey>(path, options.chunkSize ?? DEFAULT_CHUNK_SIZE, query)) {
    await printer.page(page)
  }
  await printer.end()
}

export async function info (ctx: Context, name: string, options: { format: Format }): Promise<void> {
  const { body } = await ctx.client.call<ShownKey>('GET', keyPath(ctx.connection.namespace, name))
  await printKey(options.format, ctx.out, body)
}
