// Sensu's API response filtering: `labelSelector` and `fieldSelector`, parsed by a small tokenizer
// and a recursive-descent parser whose errors say what was expected and where.
//
//   statement := clause ( "&&" clause )*
//   clause    := key ( ("==" | "!=") value | ("in" | "notin") list | "matches" value )
//   list      := "[" value ( "," value )* "]"
//   key, value := bare word [A-Za-z0-9._/:-]+ | '...' | "..."
//
// `in`, `notin` and `matches` stand between spaces; whitespace elsewhere is optional.
import type { ApiKey } from './schemas.js'
import { InvalidRequestError } from './errors.js'

export type SelectorKind = 'labelSelector' | 'fieldSelector'

/** A longer statement is refused: a selector is a few clauses, not a document. */
export const MAX_SELECTOR_LENGTH = 4096

const FIELDS = ['api_key.name', 'api_key.namespace', 'api_key.username', 'api_key.created_by', 'api_key.disabled'] as const
const LABEL_FIELD = 'api_key.labels.'

type Operator = '==' | '!=' | 'in' | 'notin' | 'matches'

interface Clause {
  /** What the clause tests: a label name, or a field of the key. */
  read: (apiKey: ApiKey) => string | undefined
  operator: Operator
  values: string[]
}

type TokenType = 'word' | 'string' | '==' | '!=' | '&&' | '[' | ']' | ',' | 'end'

interface Token {
  type: TokenType
  /** The word, or a quoted string's content. */
  text: string
  /** Where it starts in the statement, counting from 0 (as JSON.parse's messages do). */
  position: number
  /** Whitespace (or the statement's start) right before it. */
  spaceBefore: boolean
}

const BARE = /[A-Za-z0-9._/:-]/
const SYMBOLS = ['==', '!=', '&&', '[', ']', ','] as const

/** How a token reads in a message: a word quoted, a quoted string as typed, the end as such. */
function shown (token: Token): string {
  if (token.type === 'end') return 'the end of the statement'
  const text = token.type === 'string' ? token.text : token.type === 'word' ? token.text : token.type
  const cut = text.length > 40 ? `${text.slice(0, 37)}...` : text
  return token.type === 'string' ? `the string "${cut}"` : `"${cut}"`
}

class SelectorSyntaxError extends InvalidRequestError {}

/** Splits a statement into tokens; an unknown character or an unterminated string is an error. */
function tokenize (kind: SelectorKind, text: string): Token[] {
  const tokens: Token[] = []
  let i = 0
  while (true) {
    const before = i
    while (i < text.length && /\s/.test(text[i])) i++
    const spaceBefore = i > before || i === 0
    if (i >= text.length) {
      tokens.push({ type: 'end', text: '', position: i, spaceBefore })
      return tokens
    }
    const position = i
    const c = text[i]
    const symbol = SYMBOLS.find(s => text.startsWith(s, i))
    if (symbol !== undefined) {
      tokens.push({ type: symbol, text: symbol, position, spaceBefore })
      i += symbol.length
    } else if (c === '"' || c === "'") {
      const close = text.indexOf(c, i + 1)
      if (close === -1) throw new SelectorSyntaxError(`${kind}: the string opened with ${c} at position ${position} is not closed`)
      tokens.push({ type: 'string', text: text.slice(i + 1, close), position, spaceBefore })
      i = close + 1
    } else if (BARE.test(c)) {
      while (i < text.length && BARE.test(text[i])) i++
      tokens.push({ type: 'word', text: text.slice(position, i), position, spaceBefore })
    } else {
      const hint = c === '=' || c === '!' || c === '&' ? ` (did you mean "${c}${c === '!' ? '=' : c}"?)` : ''
      throw new SelectorSyntaxError(`${kind}: unexpected character ${JSON.stringify(c)} at position ${position}${hint}; a bare word holds only A-Z a-z 0-9 . _ / : -, quote other values`)
    }
  }
}

/** What a key names: a label (labelSelector), or one of the fields of a key (fieldSelector). */
function reader (kind: SelectorKind, key: Token): Clause['read'] {
  const name = key.text
  const label = (labels: Record<string, string> | undefined, label: string) =>
    labels !== undefined && Object.hasOwn(labels, label) ? labels[label] : undefined
  if (kind === 'labelSelector') {
    if (name === '') throw new SelectorSyntaxError(`${kind}: empty label name at position ${key.position}`)
    return apiKey => label(apiKey.metadata.labels, name)
  }
  switch (name) {
    case 'api_key.name': return apiKey => apiKey.metadata.name
    case 'api_key.namespace': return apiKey => apiKey.metadata.namespace
    case 'api_key.username': return apiKey => apiKey.username
    case 'api_key.created_by': return apiKey => apiKey.metadata.created_by
    // `true` or `false`: an absent field is false.
    case 'api_key.disabled': return apiKey => String(apiKey.disabled === true)
  }
  if (name.startsWith(LABEL_FIELD) && name.length > LABEL_FIELD.length) {
    const labelName = name.slice(LABEL_FIELD.length)
    return apiKey => label(apiKey.metadata.labels, labelName)
  }
  throw new SelectorSyntaxError(`${kind}: unknown field ${shown(key)} at position ${key.position}; the fields are ${FIELDS.join(', ')} and ${LABEL_FIELD}<label name>`)
}

/** The recursive-descent parser over the tokens of one statement. */
class Parser {
  private index = 0
  constructor (private readonly kind: SelectorKind, private readonly tokens: Token[]) {}

  private peek (): Token { return this.tokens[this.index] }
  private next (): Token { return this.tokens[this.index++] }

  private fail (expected: string, after: Token | undefined, found: Token): never {
    const where = after === undefined ? '' : ` after ${shown(after)}`
    throw new SelectorSyntaxError(`${this.kind}: expected ${expected}${where}, found ${shown(found)} at position ${found.position}`)
  }

  statement (): Clause[] {
    const clauses = [this.clause(undefined)]
    while (this.peek().type === '&&') {
      const and = this.next()
      clauses.push(this.clause(and))
    }
    const end = this.peek()
    if (end.type !== 'end') this.fail('"&&" or the end of the statement', this.tokens[this.index - 1], end)
    return clauses
  }

  private value (after: Token): string {
    const token = this.next()
    if (token.type !== 'word' && token.type !== 'string') this.fail('a value (a bare word or a quoted string)', after, token)
    return token.text
  }

  private clause (after: Token | undefined): Clause {
    const key = this.next()
    if (key.type !== 'word' && key.type !== 'string') this.fail(`a ${this.kind === 'labelSelector' ? 'label name' : 'field'}`, after, key)
    const read = reader(this.kind, key)
    const op = this.next()
    if (op.type === '==' || op.type === '!=') return { read, operator: op.type, values: [this.value(op)] }
    if (op.type === 'word' && (op.text === 'in' || op.text === 'notin' || op.text === 'matches')) {
      if (!op.spaceBefore) this.fail('a space', key, op)
      const operator = op.text
      const following = this.peek()
      if (!following.spaceBefore) this.fail(`a space after "${operator}"`, undefined, following)
      return { read, operator, values: operator === 'matches' ? [this.value(op)] : this.list(op) }
    }
    return this.fail('"==", "!=", "in", "notin" or "matches"', key, op)
  }

  private list (after: Token): string[] {
    const open = this.next()
    if (open.type !== '[') this.fail('"["', after, open)
    const values = [this.value(open)]
    while (true) {
      const token = this.next()
      if (token.type === ']') return values
      if (token.type !== ',') this.fail('"," or "]"', this.tokens[this.index - 2], token)
      values.push(this.value(token))
    }
  }
}

function holds (clause: Clause, apiKey: ApiKey): boolean {
  const value = clause.read(apiKey)
  switch (clause.operator) {
    case '==': return value === clause.values[0]
    case '!=': return value !== clause.values[0]
    case 'in': return value !== undefined && clause.values.includes(value)
    case 'notin': return value === undefined || !clause.values.includes(value)
    case 'matches': return value !== undefined && value.includes(clause.values[0])
  }
}

/** A parsed statement: true for a key every clause of which holds. */
export type Selector = (apiKey: ApiKey) => boolean

/** Parses one statement; a statement that does not parse, or names an unknown field, is an InvalidRequestError saying what and where. */
export function parseSelector (kind: SelectorKind, text: string): Selector {
  if (text.length > MAX_SELECTOR_LENGTH) throw new SelectorSyntaxError(`${kind} is longer than ${MAX_SELECTOR_LENGTH} characters`)
  if (text.trim() === '') throw new SelectorSyntaxError(`${kind} is empty: give a statement such as ${kind === 'labelSelector' ? 'team == ops' : 'api_key.username == alice'}, or leave the parameter out`)
  const clauses = new Parser(kind, tokenize(kind, text)).statement()
  return apiKey => clauses.every(clause => holds(clause, apiKey))
}

/** The selectors of a list request, both applied; undefined when neither is given. */
export function selectorsOf (query: { labelSelector?: string, fieldSelector?: string }): Selector | undefined {
  const selectors = [
    query.labelSelector === undefined ? undefined : parseSelector('labelSelector', query.labelSelector),
    query.fieldSelector === undefined ? undefined : parseSelector('fieldSelector', query.fieldSelector)
  ].filter(s => s !== undefined)
  if (selectors.length === 0) return undefined
  return apiKey => selectors.every(selector => selector(apiKey))
}
