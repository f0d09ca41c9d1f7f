/**
 * `<namespace>/<name>`, as a digest index entry and an Idempotency-Key entry name a key: built and
 * parsed here only. A name never holds `/` (NAME_PATTERN), so the first `/` divides them.
 */
export function qualifiedName (namespace: string, name: string): string {
  return `${namespace}/${name}`
}

export function parseQualifiedName (text: string): { namespace: string, name: string } {
  const slash = text.indexOf('/')
  return { namespace: text.slice(0, slash), name: text.slice(slash + 1) }
}
