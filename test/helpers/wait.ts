// Waiting in tests: poll for the condition itself, with a deadline, never a bare sleep.
import { setTimeout as sleep } from 'node:timers/promises'
import { inspect } from 'node:util'

/** What a condition returns once it holds. */
export type Truthy<T> = Exclude<T, false | 0 | '' | null | undefined>

export interface WaitOptions {
  /** What the wait is for, as the failure says it ("b's cache to see its watch is down"); a function is asked at the failure. */
  what: string | (() => string)
  /** How long to wait at most, in ms. */
  timeout?: number
  /** How long between two checks, in ms. */
  interval?: number
}

/**
 * Calls `condition` until it returns a truthy value, and returns that value. After `timeout` ms it
 * throws an error naming `what` and the last value seen. An error thrown by `condition` ends the
 * wait at once: a condition says "not yet" by returning a falsy value, and "never" by throwing.
 */
export async function waitFor<T> (condition: () => T | Promise<T>, { what, timeout = 10_000, interval = 100 }: WaitOptions): Promise<Truthy<T>> {
  const deadline = Date.now() + timeout
  for (;;) {
    const value = await condition()
    if (value) return value as Truthy<T>
    if (Date.now() >= deadline) {
      throw new Error(`waited ${timeout} ms for ${typeof what === 'function' ? what() : what}, in vain (last seen: ${inspect(value, { depth: 2, breakLength: Infinity }).slice(0, 300)})`)
    }
    await sleep(Math.min(interval, Math.max(0, deadline - Date.now())))
  }
}
