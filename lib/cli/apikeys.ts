#!/usr/bin/env node
// `apikeys`: the command line of the API (docs/cli.md). Every failure is one line on stderr and an
// exit code a script can act on (lib/cli/errors.ts), never a stack trace.
import { CommanderError } from 'commander'
import { CliError, EXIT } from './errors.js'
import { colourWanted, styled } from './output.js'
import { buildProgram } from './program.js'

function printError (message: string): void {
  const label = colourWanted(process.stderr) ? styled('red', 'Error:') : 'Error:'
  process.stderr.write(`${label} ${message}\n`)
}

/** Commander's own messages ("error: unknown command 'x'\n(Did you mean y?)") on one line, as ours. */
function oneLine (text: string): string {
  return text.trim().replace(/^error: /, '').split(/\n+/).join(' ')
}

// A reader that goes away (`apikeys list | head`) is no error.
process.stdout.on('error', err => {
  if ((err as NodeJS.ErrnoException).code === 'EPIPE') process.exit(EXIT.ok)
  printError(`cannot write the output: ${err.message}`)
  process.exit(EXIT.refused)
})

async function main (argv: string[]): Promise<number> {
  const program = buildProgram(text => printError(oneLine(text)))
  try {
    await program.parseAsync(argv)
    return EXIT.ok
  } catch (err) {
    // --help and --version end this way too, with exit code 0; any other is a usage error, already printed.
    if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT.ok : EXIT.usage
    if (err instanceof CliError) {
      printError(err.message)
      return err.exitCode
    }
    printError(err instanceof Error ? err.message : String(err))
    return EXIT.refused
  }
}

process.exitCode = await main(process.argv)
