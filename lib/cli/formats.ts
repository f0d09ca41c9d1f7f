// The four output formats of `list` and `info`: tabular (cli-table3), json, wrapped-json (Sensu's
// wrapped resource, one a line) and yaml (one wrapped document per key, as sensuctl prints it).
// A list is printed page by page as the pages arrive, so a printer never holds more than a page.
import { stringify as toYaml } from 'yaml'
import type { Output } from './output.js'
import { keyTable, keyDetails, type Widths } from './table.js'
import type { ShownKey } from './shown-key.js'

export const FORMATS = ['tabular', 'json', 'wrapped-json', 'yaml'] as const
export type Format = typeof FORMATS[number]

/** Sensu's wrapped form of a resource: what `sensuctl create` reads. */
export function wrapped (key: ShownKey): { type: 'APIKey', api_version: 'core/v2', metadata: ShownKey['metadata'], spec: Omit<ShownKey, 'metadata'> } {
  const { metadata, ...spec } = key
  return { type: 'APIKey', api_version: 'core/v2', metadata, spec }
}

export interface ListPrinter {
  page (keys: ShownKey[]): Promise<void>
  end (): Promise<void>
}

const indent = (text: string) => text.replace(/^/gm, '  ')

/** Prints a list as its pages arrive. */
export function listPrinter (format: Format, out: Output): ListPrinter {
  switch (format) {
    case 'json': {
      // One array, streamed: `[`, the keys between commas, `]`.
      let first = true
      return {
        async page (keys) {
          for (const key of keys) {
            await out.write(`${first ? '[\n' : ',\n'}${indent(JSON.stringify(key, null, 2))}`)
            first = false
          }
        },
        end: async () => { await out.write(first ? '[]\n' : '\n]\n') }
      }
    }
    case 'wrapped-json':
      return {
        page: async keys => { await out.write(keys.map(key => `${JSON.stringify(wrapped(key))}\n`).join('')) },
        end: async () => {}
      }
    case 'yaml':
      return {
        page: async keys => { await out.write(keys.map(yamlDocument).join('')) },
        end: async () => {}
      }
    case 'tabular': {
      // The column widths come from the first page, so that every page lines up without the
      // whole list being held; a longer value on a later page is cut with '…'.
      let widths: Widths | undefined
      let rows = 0
      return {
        async page (keys) {
          if (keys.length === 0) return
          const table = keyTable(keys, widths, out)
          widths = table.widths
          await out.write((rows === 0 ? table.header : '') + table.rows)
          rows += keys.length
        },
        end: async () => { if (rows === 0) await out.write('No API keys.\n') }
      }
    }
  }
}

const yamlDocument = (key: ShownKey) => `---\n${toYaml(wrapped(key))}`

/** Prints one key (`info`). */
export async function printKey (format: Format, out: Output, key: ShownKey): Promise<void> {
  switch (format) {
    case 'json': return await out.write(`${JSON.stringify(key, null, 2)}\n`)
    case 'wrapped-json': return await out.write(`${JSON.stringify(wrapped(key))}\n`)
    case 'yaml': return await out.write(yamlDocument(key))
    case 'tabular': return await out.write(keyDetails(key, out))
  }
}
