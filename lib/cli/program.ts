// The command tree (commander): every command, its arguments and flags, named as sensuctl names them.
import { readFileSync } from 'node:fs'
import { Argument, Command, Option } from 'commander'
import { ApiClient } from './client.js'
import { completionScript, SHELLS, type Shell } from './completion.js'
import { DEFAULT_NAMESPACE, DEFAULT_URL, resolveConnection, type ConnectionFlags } from './connection.js'
import { UsageError } from './errors.js'
import { FORMATS } from './formats.js'
import { outputTo } from './output.js'
import { grant, label, revoke, revokeAll, rotate, setDisabled } from './commands/change.js'
import { DEFAULT_CHUNK_SIZE, info, list } from './commands/read.js'
import type { Context } from './commands/context.js'
import { collectLabel, parseChunkSize, parseDuration, parseGrace, parseInstant, parseLabelChange } from './values.js'

const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'))

/** An action that needs the server: commander's arguments, with the context made from the global flags. */
function withContext<A extends unknown[]> (action: (ctx: Context, ...args: A) => Promise<void>) {
  return async (...args: unknown[]) => {
    const command = args.at(-1) as Command
    const connection = resolveConnection(command.optsWithGlobals<ConnectionFlags>())
    const ctx = { connection, client: new ApiClient(connection), out: outputTo(process.stdout) }
    await action(ctx, ...args as A)
  }
}

const formatOption = () => new Option('--format <format>', 'format of the output').choices(FORMATS).default('tabular')
const skipConfirm = () => new Option('--skip-confirm', 'do not ask on the terminal (needed without one, as in a script)')
const idempotencyKey = () => new Option('--idempotency-key <key>', 'makes a retry safe: the same value within 24 hours answers the same secret')

/**
 * The program. It throws a CommanderError instead of exiting (exitOverride), and gives commander's
 * own error messages to `outputError`; subcommands inherit both, so they are set first.
 */
export function buildProgram (outputError: (text: string) => void): Command {
  const program = new Command('apikeys')
    .exitOverride()
    .configureOutput({ outputError })
    .description('Manage the API keys of a fastify-etcd-apikeys server, as `sensuctl api-key` does for Sensu Go.')
    .version(version, '--version', 'print the version')
    .addOption(new Option('--url <url>', `the server (env APIKEYS_URL; default ${DEFAULT_URL})`))
    .addOption(new Option('--token <token>', 'an admin bearer token (env APIKEYS_TOKEN; default: the first line of ./data/admin-token)'))
    .addOption(new Option('--token-file <file>', 'read the bearer token from the first line of this file'))
    .addOption(new Option('--api-key <secret>', 'authenticate with an API key (env APIKEYS_KEY)'))
    .addOption(new Option('--namespace <namespace>', `the namespace (env APIKEYS_NAMESPACE; default ${DEFAULT_NAMESPACE})`))
    .configureHelp({ showGlobalOptions: true })

  program.command('grant')
    .description('grant a new API key and print its secret, once')
    .argument('[USERNAME]', 'the user the key acts as (default: the caller; admin for a bearer token)')
    .addOption(new Option('--label <key=value>', 'a label (repeat the flag for more)').argParser(collectLabel))
    .addOption(new Option('--expires-in <duration>', 'expire after 90m, 12h, 30d...').argParser(parseDuration).conflicts('expiresAt'))
    .addOption(new Option('--expires-at <date>', 'expire at this ISO 8601 date (local time without an offset) or Unix second').argParser(parseInstant))
    .addOption(idempotencyKey())
    .option('--quiet', 'print only the secret, for scripts: export KEY=$(apikeys grant --quiet)')
    .action(withContext(grant))

  program.command('list')
    .description('list API keys, page by page as the server sends them')
    .option('--all-namespaces', 'list the keys of every namespace')
    .option('--label-selector <selector>', "keep the keys whose labels match, e.g. 'team == ops'")
    .option('--field-selector <selector>', "keep the keys whose fields match, e.g. 'api_key.username == alice'")
    .addOption(new Option('--chunk-size <n>', `keys asked for in one request (1-1000; default ${DEFAULT_CHUNK_SIZE})`).argParser(parseChunkSize))
    .addOption(formatOption())
    .action(withContext(async (ctx, options: Parameters<typeof list>[1], command: Command) => {
      if (options.allNamespaces === true && command.getOptionValueSourceWithGlobals('namespace') === 'cli') {
        throw new UsageError('--all-namespaces and --namespace cannot go together: drop one')
      }
      await list(ctx, options)
    }))

  program.command('info')
    .description('show one API key')
    .argument('<NAME>', "the key's name")
    .addOption(formatOption())
    .action(withContext(info))

  program.command('revoke')
    .description('revoke (delete) an API key; asks first on a terminal')
    .argument('<NAME>', "the key's name")
    .addOption(skipConfirm())
    .action(withContext(revoke))

  program.command('revoke-all')
    .description('revoke every API key of a user, in every namespace (admins only); asks first on a terminal')
    .argument('<USERNAME>', 'the user')
    .addOption(skipConfirm())
    .action(withContext(revokeAll))

  program.command('label')
    .description('set labels (key=value) and remove them (key-) with one merge patch')
    .argument('<NAME>', "the key's name")
    .addArgument(new Argument('<CHANGES...>', 'key=value sets a label, key- removes it').argParser(parseLabelChange))
    .action(withContext(label))

  program.command('rotate')
    .description('give an API key a new secret; the old one works for --grace more')
    .argument('<NAME>', "the key's name")
    .addOption(new Option('--grace <duration>', 'how long the old secret keeps working: 0, 90m, 1h, 7d (at most 7d; default 0)').argParser(parseGrace))
    .addOption(idempotencyKey())
    .option('--quiet', 'print only the new secret')
    .action(withContext(rotate))

  program.command('disable')
    .description('stop an API key from authenticating, without revoking it')
    .argument('<NAME>', "the key's name")
    .action(withContext(async (ctx, name: string) => await setDisabled(ctx, name, true)))

  program.command('enable')
    .description('let a disabled API key authenticate again')
    .argument('<NAME>', "the key's name")
    .action(withContext(async (ctx, name: string) => await setDisabled(ctx, name, false)))

  program.command('completion')
    .description('print the shell completion script: source <(apikeys completion bash)')
    .addArgument(new Argument('<SHELL>', 'the shell').choices(SHELLS))
    .action(async (shell: Shell) => { await outputTo(process.stdout).write(completionScript(program, shell)) })

  return program
}
