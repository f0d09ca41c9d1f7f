// Asking before a revocation: on a terminal only, so that nothing is deleted by accident from a
// script (which must say --skip-confirm).
import { once } from 'node:events'
import { createInterface } from 'node:readline/promises'
import { NotConfirmedError } from './errors.js'

/**
 * Asks `question` on the terminal and resolves on "y" or "yes"; any other answer, end of input, or
 * no terminal at all is a NotConfirmedError (exit 1). `what` names the action for the messages.
 */
export async function confirm (question: string, what: string): Promise<void> {
  if (process.stdin.isTTY !== true) {
    throw new NotConfirmedError(`${what} asks for a confirmation on a terminal, and there is none: pass --skip-confirm to do it from a script`)
  }
  const prompt = createInterface({ input: process.stdin, output: process.stderr })
  try {
    const closed = once(prompt, 'close').then(() => '')
    const answer = await Promise.race([prompt.question(`${question} [y/N] `), closed])
    if (!/^\s*y(es)?\s*$/i.test(answer)) throw new NotConfirmedError(`${what} canceled: nothing was changed`)
  } finally {
    prompt.close()
  }
}
