// `apikeys completion bash|zsh`: scripts generated from commander's own command tree, so a new
// command or flag completes without anyone editing them. (Commander has no completion of its own,
// and the completion libraries for Node, tabtab and omelette, are no longer maintained.)
import type { Command, Option } from 'commander'

export const SHELLS = ['bash', 'zsh'] as const
export type Shell = typeof SHELLS[number]

interface Flag { name: string, takesValue: boolean, choices: readonly string[], description: string }
interface Entry { name: string, description: string, flags: Flag[], choices: readonly string[] }

const flagOf = (option: Option): Flag => ({
  name: option.long ?? option.flags,
  takesValue: option.required || option.optional,
  choices: option.argChoices ?? [],
  description: option.description
})

/** The tree as completion needs it: each command's flags (the global ones included) and its argument's choices. */
function entriesOf (program: Command): { global: Flag[], commands: Entry[] } {
  const global = [...program.options.map(flagOf), { name: '--help', takesValue: false, choices: [], description: 'display help' }]
  const commands = program.commands.map(command => ({
    name: command.name(),
    description: command.description(),
    flags: [...command.options.map(flagOf), ...global.filter(flag => flag.name !== '--version')],
    choices: command.registeredArguments[0]?.argChoices ?? []
  }))
  return { global, commands }
}

export function completionScript (program: Command, shell: Shell): string {
  const tree = entriesOf(program)
  return shell === 'bash' ? bashScript(program.name(), tree) : zshScript(program.name(), tree)
}

function bashScript (name: string, { global, commands }: ReturnType<typeof entriesOf>): string {
  const words = (list: string[]) => list.join(' ')
  const allFlags = commands.flatMap(command => command.flags)
  const valueFlags = [...new Set(allFlags.filter(flag => flag.takesValue).map(flag => flag.name))]
  const flagChoices = [...new Map(allFlags.filter(flag => flag.choices.length > 0).map(flag => [flag.name, flag.choices])).entries()]
  const fn = `_${name.replace(/\W/g, '_')}`
  return `# ${name} completion for bash: source <(${name} completion bash)
${fn}() {
  local cur prev cmd i
  cur="\${COMP_WORDS[COMP_CWORD]}"
  prev="\${COMP_WORDS[COMP_CWORD-1]}"
  cmd=""
  # The command is the first word that is neither a flag nor a flag's value.
  for ((i = 1; i < COMP_CWORD; i++)); do
    case "\${COMP_WORDS[i]}" in
      ${valueFlags.join('|')}) ((i++)) ;;
      -*) ;;
      *) cmd="\${COMP_WORDS[i]}"; break ;;
    esac
  done
  case "$prev" in
${flagChoices.map(([flag, choices]) => `    ${flag}) COMPREPLY=($(compgen -W "${words([...choices])}" -- "$cur")); return ;;`).join('\n')}
    ${valueFlags.join('|')}) COMPREPLY=(); return ;;
  esac
  case "$cmd" in
    "") COMPREPLY=($(compgen -W "${words([...commands.map(c => c.name), ...global.map(f => f.name)])}" -- "$cur")) ;;
${commands.map(c => `    ${c.name}) COMPREPLY=($(compgen -W "${words([...c.choices, ...c.flags.map(f => f.name)])}" -- "$cur")) ;;`).join('\n')}
  esac
}
complete -F ${fn} ${name}
`
}

/** Text inside a zsh _arguments spec or a _describe entry: its brackets and colons escaped. */
const zshText = (text: string) => text.replace(/([[\]:\\])/g, '\\$1').replace(/'/g, "'\\''")

function zshScript (name: string, { global, commands }: ReturnType<typeof entriesOf>): string {
  const spec = (flag: Flag) => {
    const value = !flag.takesValue ? '' : flag.choices.length > 0 ? `:value:(${flag.choices.join(' ')})` : ':value: '
    return `'${flag.name}[${zshText(flag.description)}]${value}'`
  }
  const fn = `_${name.replace(/\W/g, '_')}`
  return `#compdef ${name}
# ${name} completion for zsh: source <(${name} completion zsh), or save it as _${name} in a folder of $fpath
${fn}() {
  local -a commands
  commands=(
${commands.map(c => `    '${c.name}:${zshText(c.description)}'`).join('\n')}
  )
  local curcontext="$curcontext" state line
  _arguments -C \\
${global.map(flag => `    ${spec(flag)} \\`).join('\n')}
    '1: :->command' \\
    '*:: :->args'
  case $state in
    command) _describe 'command' commands ;;
    args)
      case $words[1] in
${commands.map(c => `        ${c.name}) _arguments ${[...c.flags.map(spec), ...(c.choices.length > 0 ? [`'1:value:(${c.choices.join(' ')})'`] : [])].join(' ')} ;;`).join('\n')}
      esac ;;
  esac
}
if [ "$funcstack[1]" = "${fn}" ]; then
  ${fn} "$@"
else
  compdef ${fn} ${name}
fi
`
}
