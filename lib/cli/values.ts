// The values flags and arguments take, parsed for commander (its InvalidArgumentError makes a bad
// one a usage error, exit 2, with commander's message naming the flag).
import { InvalidArgumentError } from 'commander'

const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400 }

/** `90m`, `12h`, `30d` (also `45s`) as seconds. */
export function parseDuration (text: string): number {
  const match = /^(\d+)([smhd])$/.exec(text)
  if (match === null) throw new InvalidArgumentError('Write a number and a unit: 90m, 12h or 30d (s, m, h, d).')
  return Number(match[1]) * UNIT_SECONDS[match[2]]
}

/** A grace period: a duration, or 0. */
export function parseGrace (text: string): number {
  return text === '0' ? 0 : parseDuration(text)
}

const ISO_8601 = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/

/** ISO 8601 (`2027-01-31`, `2027-01-31T12:00:00Z`) or Unix seconds, as Unix seconds. */
export function parseInstant (text: string): number {
  if (/^\d+$/.test(text)) return Number(text)
  const ms = ISO_8601.test(text) ? Date.parse(text) : NaN
  if (!Number.isFinite(ms)) throw new InvalidArgumentError('Write an ISO 8601 date (2027-01-31, 2027-01-31T12:00:00Z) or Unix seconds.')
  return Math.floor(ms / 1000)
}

/** `--label k=v`, repeated: the labels so far, with this one. */
export function collectLabel (text: string, labels: Record<string, string> = {}): Record<string, string> {
  const at = text.indexOf('=')
  if (at <= 0) throw new InvalidArgumentError('Write a label as key=value.')
  return { ...labels, [text.slice(0, at)]: text.slice(at + 1) }
}

/** `k=v` sets a label, `k-` removes it: a merge patch entry (null removes). */
export function parseLabelChange (text: string, changes: Record<string, string | null> = {}): Record<string, string | null> {
  if (/^[^=]+-$/.test(text)) return { ...changes, [text.slice(0, -1)]: null }
  const at = text.indexOf('=')
  if (at <= 0) throw new InvalidArgumentError(`"${text}" is neither key=value (set a label) nor key- (remove it).`)
  return { ...changes, [text.slice(0, at)]: text.slice(at + 1) }
}

/** `--chunk-size`: the page size, 1 to 1000 (the server's largest page). */
export function parseChunkSize (text: string): number {
  const size = /^\d+$/.test(text) ? Number(text) : NaN
  if (!(size >= 1 && size <= 1000)) throw new InvalidArgumentError('Give a page size from 1 to 1000.')
  return size
}
