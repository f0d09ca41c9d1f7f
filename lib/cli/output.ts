// Where the command line writes: a stream written with its backpressure respected (a list of
// 100,000 keys piped into a slow reader holds one page in memory), and colour only for a person.
import { once } from 'node:events'
import { inspect } from 'node:util'

/** A style of util.inspect.colors: bold, red... */
export type Style = 'bold' | 'red'

/**
 * `text` between the style's escape codes. (Not util.styleText: from Node 20.18 on it asks the
 * stream's colour depth again, which TERM decides, after NO_COLOR and the terminal have been.)
 */
export function styled (style: Style, text: string): string {
  const [open, close] = inspect.colors[style] ?? [0, 0]
  return `\x1b[${open}m${text}\x1b[${close}m`
}

export interface Output {
  /** Whether colours go into this stream. */
  readonly colour: boolean
  write (text: string): Promise<void>
  /** `text` styled when colours are on, as is otherwise. */
  style (style: Style, text: string): string
}

/**
 * Colour only on a terminal, and never when NO_COLOR is set to anything but the empty string
 * (no-color.org).
 */
export function colourWanted (stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv = process.env): boolean {
  return stream.isTTY === true && (env.NO_COLOR === undefined || env.NO_COLOR === '')
}

export function outputTo (stream: NodeJS.WritableStream & { isTTY?: boolean }, env: NodeJS.ProcessEnv = process.env): Output {
  const colour = colourWanted(stream, env)
  return {
    colour,
    async write (text) {
      if (!stream.write(text)) await once(stream, 'drain')
    },
    style: (style, text) => colour ? styled(style, text) : text
  }
}
