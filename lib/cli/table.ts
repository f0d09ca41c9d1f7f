// The tabular format, drawn with cli-table3: a list's rows in capped columns, and one key's fields.
import Table from 'cli-table3'
import type { Output } from './output.js'
import type { ShownKey } from './shown-key.js'

/** No borders: columns two spaces apart, as sensuctl draws them. */
const BORDERS = ['top', 'top-mid', 'top-left', 'top-right', 'bottom', 'bottom-mid', 'bottom-left', 'bottom-right', 'left', 'left-mid', 'mid', 'mid-mid', 'right', 'right-mid']
const CHARS = { ...Object.fromEntries(BORDERS.map(name => [name, ''])), middle: '  ' }
const STYLE = { 'padding-left': 0, 'padding-right': 0, head: [], border: [] }

interface Column {
  title: string
  /** The widest the column grows; a longer value is cut with '…'. */
  max: number
  /** A column whose values all have one width (a timestamp, 'never') is always `max` wide. */
  fixed?: boolean
  cell (key: ShownKey): string
}

/** Unix seconds as ISO 8601 in UTC, to the second. */
export const timestamp = (seconds: number) => new Date(seconds * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z')
const labelsOf = (labels: Record<string, string> | undefined) => Object.entries(labels ?? {}).map(([k, v]) => `${k}=${v}`).join(',')

const COLUMNS: Column[] = [
  { title: 'Name', max: 40, cell: key => key.metadata.name },
  { title: 'Namespace', max: 24, cell: key => key.metadata.namespace },
  { title: 'Username', max: 24, cell: key => key.username },
  { title: 'Created', max: 20, fixed: true, cell: key => timestamp(key.created_at) },
  { title: 'Expires', max: 20, fixed: true, cell: key => key.expires_at === undefined ? 'never' : timestamp(key.expires_at) },
  { title: 'Last used', max: 20, fixed: true, cell: key => key.last_used_at === undefined ? 'never' : timestamp(key.last_used_at) },
  { title: 'Labels', max: 48, cell: key => labelsOf(key.metadata.labels) }
]

export type Widths = number[]

/** Rows drawn one table each: cli-table3's time grows faster than its rows (a table of 500 rows takes 3 to 4 times as long as 500 tables of one). */
function render (rows: string[][], widths: Widths): string {
  return rows.map(row => {
    const table = new Table({ chars: CHARS, style: STYLE, colWidths: widths })
    table.push(row)
    return table.toString().trimEnd() + '\n'
  }).join('')
}

/**
 * A page of keys as table rows, and the header. Without `widths` (the first page), each column is
 * as wide as its widest value on this page, up to its maximum; the timestamps' are fixed.
 */
export function keyTable (keys: ShownKey[], widths: Widths | undefined, out: Output): { header: string, rows: string, widths: Widths } {
  const rows = keys.map(key => COLUMNS.map(column => column.cell(key)))
  widths ??= COLUMNS.map((column, i) => column.fixed === true ? column.max : Math.min(column.max, Math.max(column.title.length, ...rows.map(row => row[i].length))))
  const titles = COLUMNS.map(column => out.style('bold', column.title))
  const rules = widths.map(width => '─'.repeat(width))
  return { header: render([titles, rules], widths), rows: render(rows, widths), widths }
}

/** One key, a field a line (`info`). Fields the key does not have are left out. */
export function keyDetails (key: ShownKey, out: Output): string {
  const map = (value: Record<string, string> | null | undefined) => value == null ? undefined : labelsOf(value)
  const fields: Array<[string, string | undefined]> = [
    ['Name', key.metadata.name],
    ['Namespace', key.metadata.namespace],
    ['Username', key.username],
    ['Created by', key.metadata.created_by],
    ['Created', timestamp(key.created_at)],
    ['Expires', key.expires_at === undefined ? 'never' : timestamp(key.expires_at)],
    ['Last used', key.last_used_at === undefined ? 'never' : timestamp(key.last_used_at)],
    ['Rotated', key.rotated_at === undefined ? undefined : timestamp(key.rotated_at)],
    ['Disabled', key.disabled === true ? 'yes' : 'no'],
    ['Labels', labelsOf(key.metadata.labels)],
    ['Annotations', map(key.metadata.annotations)],
    ['URL', key.url],
    ['SHA512', key.sha512],
    ['Filters', map(key.filters)],
    ['Headers', map(key.headers)]
  ]
  const table = new Table({ chars: { ...CHARS, middle: ' ' }, style: STYLE })
  table.push(...fields.filter(([, value]) => value !== undefined).map(([name, value]) => [out.style('bold', `${name}:`), value ?? '']))
  return `${out.style('bold', `=== ${key.metadata.name}`)}\n${table.toString().split('\n').map(line => line.trimEnd()).join('\n')}\n`
}
