// What the benchmark measures with: latency percentiles, closed-loop load, and the CPU time and
// memory of other processes as Linux keeps them in /proc.
import { readFileSync, writeFileSync } from 'node:fs'
import { spawnSync } from 'node:child_process'

/** One load run of one operation on one side (API or raw etcd3). */
export interface LoadResult {
  /** Operations that ended as expected (HTTP: the expected status; raw: no error). */
  ops: number
  seconds: number
  /** ops / seconds. */
  rate: number
  /** Milliseconds, over the expected operations. */
  p50: number
  p99: number
  /** Operations that ended otherwise, by status or error name. */
  unexpected: Record<string, number>
  /** Set when the operation ran out of keys to work on before the time was up. */
  exhausted?: boolean
}

/** The value below which `p` percent of the sorted samples lie (nearest rank). */
export function percentile (sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN
  const rank = Math.ceil((p / 100) * sorted.length)
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]
}

export function latencySummary (samples: number[]): { p50: number, p99: number, max: number } {
  const sorted = Float64Array.from(samples).sort()
  const list = Array.from(sorted)
  return { p50: percentile(list, 50), p99: percentile(list, 99), max: list[list.length - 1] ?? NaN }
}

export function countInto (counts: Record<string, number>, what: string): void {
  counts[what] = (counts[what] ?? 0) + 1
}

/**
 * Runs `operation` in `workers` closed loops (each starts its next call when the last one ended)
 * for `seconds`. An operation that returns false has no more work: every loop stops then.
 */
export async function closedLoop (workers: number, seconds: number, operation: () => Promise<unknown>): Promise<LoadResult> {
  const samples: number[] = []
  const unexpected: Record<string, number> = {}
  const started = performance.now()
  const end = started + seconds * 1000
  let exhausted = false as boolean
  let finished = started
  await Promise.all(Array.from({ length: workers }, async () => {
    while (!exhausted && performance.now() < end) {
      const begin = performance.now()
      try {
        if (await operation() === false) {
          exhausted = true
          finished = performance.now()
          return
        }
        samples.push(performance.now() - begin)
      } catch (err) {
        countInto(unexpected, (err as Error).name ?? 'Error')
      }
    }
  }))
  const elapsed = ((exhausted ? finished : performance.now()) - started) / 1000
  return { ops: samples.length, seconds: elapsed, rate: samples.length / elapsed, ...latencySummary(samples), unexpected, ...(exhausted && { exhausted }) }
}

const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100

/** User and system CPU time a process has used so far, in microseconds; undefined when unknown. */
export function processCpuMicros (pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) * 1e6 / CLOCK_TICKS
  } catch {
    return undefined
  }
}

/** `micros` spread over `count` operations; undefined when either is unknown or zero. */
export function perOperation (micros: number | undefined, count: number): number | undefined {
  return micros === undefined || count === 0 ? undefined : micros / count
}

/** VmRSS and VmHWM (peak RSS) of a process, in bytes. */
export function memoryOf (pid: number): { rss: number, peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024
  return { rss: kib('VmRSS'), peak: kib('VmHWM') }
}

/** Resets a process's VmHWM to its current RSS (Linux 4.0+); false when not allowed. */
export function resetPeakRss (pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5')
    return true
  } catch {
    return false
  }
}
