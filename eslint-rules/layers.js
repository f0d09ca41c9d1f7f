// Two layer rules that eslint-plugin-import-x cannot state: its no-cycle skips type-only imports
// (a type import still ties two layers), and no-restricted-paths sees direct imports only.
// Both rules read lib/'s import graph from the files' text: every `import ... from`,
// `import type ... from`, `export ... from` and `import('...')`, relative ones resolved to .ts.
import { readFileSync, existsSync } from 'node:fs'
import { dirname, relative, resolve } from 'node:path'

const SPECIFIER = /(?:^|\n)\s*(?:import|export)\s[^'"]*?\sfrom\s+'([^']+)'|(?:^|\n)\s*import\s+'([^']+)'|import\('([^']+)'\)/g

/** The imports of a file: relative ones as absolute .ts paths, packages by name. */
function importsOf (file, cache) {
  if (cache.has(file)) return cache.get(file)
  const found = { files: [], packages: [] }
  cache.set(file, found)
  let text = ''
  try { text = readFileSync(file, 'utf8') } catch { return found }
  for (const match of text.matchAll(SPECIFIER)) {
    const spec = match[1] ?? match[2] ?? match[3]
    if (spec.startsWith('.')) {
      const target = resolve(dirname(file), spec.replace(/\.js$/, '.ts'))
      if (existsSync(target)) found.files.push({ spec, target })
    } else {
      found.packages.push(spec)
    }
  }
  return found
}

/** A path from `from` to a file satisfying `goal`, as a list of files, or undefined. */
function pathTo (from, goal, cache) {
  const seen = new Set([from])
  const queue = [[from]]
  while (queue.length > 0) {
    const route = queue.shift()
    for (const { target } of importsOf(route[route.length - 1], cache).files) {
      if (goal(target)) return [...route, target]
      if (!seen.has(target)) {
        seen.add(target)
        queue.push([...route, target])
      }
    }
  }
  return undefined
}

const show = (route, cwd) => route.map(file => relative(cwd, file)).join(' → ')

/** For each import: does it lead back to this file? Type-only imports count. */
const noCycle = {
  meta: { type: 'problem', schema: [], docs: { description: 'no import cycles, type-only imports included' } },
  create (context) {
    const file = context.filename
    const cache = new Map()
    return {
      Program (node) {
        for (const { spec, target } of importsOf(file, cache).files) {
          const route = target === file ? [file] : pathTo(target, f => f === file, cache)
          if (route !== undefined) {
            context.report({ node, message: `import '${spec}' is part of an import cycle (type-only imports count): ${show([file, ...route], context.cwd)}` })
          }
        }
      }
    }
  }
}

/** No file this one reaches, however many imports away, imports one of `packages` (option: a list of name prefixes). */
const noTransitivePackages = {
  meta: { type: 'problem', schema: [{ type: 'array', items: { type: 'string' } }], docs: { description: 'packages forbidden through any chain of imports' } },
  create (context) {
    const file = context.filename
    const forbidden = context.options[0] ?? []
    const cache = new Map()
    const offends = f => importsOf(f, cache).packages.find(name => forbidden.some(prefix => name === prefix || name.startsWith(prefix.endsWith('/') ? prefix : `${prefix}/`)))
    return {
      Program (node) {
        if (offends(file) !== undefined) return // the direct import is no-restricted-imports' to report
        const route = pathTo(file, f => offends(f) !== undefined, cache)
        if (route !== undefined) {
          context.report({ node, message: `this file reaches '${offends(route[route.length - 1])}' through ${show(route, context.cwd)}; this layer must not depend on it` })
        }
      }
    }
  }
}

export default { rules: { 'no-cycle': noCycle, 'no-transitive-packages': noTransitivePackages } }
