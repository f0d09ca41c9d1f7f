import neostandard from 'neostandard'
import importX, { createNodeResolver } from 'eslint-plugin-import-x'
import layers from './eslint-rules/layers.js'

const FASTIFY = ['fastify', '@fastify', 'fastify-plugin']
/** no-restricted-imports' patterns for packages a layer must not use (type-only imports included). */
const packages = (names, why) => ({
  paths: names.filter(n => !n.startsWith('@')).map(name => ({ name, message: why })),
  patterns: [{ group: names.flatMap(n => n.startsWith('@') ? [`${n}/*`] : [n, `${n}/*`]), message: why }]
})

export default [
  ...neostandard({ ts: true, ignores: ['dist/**', 'coverage/**', '.tap/**', 'node_modules/**'] }),
  {
    // TypeBox's idiom: a schema and its static type share one name.
    files: ['lib/keys/schemas.ts'],
    rules: { '@typescript-eslint/no-redeclare': 'off' }
  },
  // The layers (docs/architecture.md). eslint-plugin-import-x holds the paths between folders;
  // eslint-rules/layers.js the cycles (type-only imports count) and packages reached indirectly.
  {
    files: ['lib/**/*.ts', 'bench/**/*.ts', 'dev/**/*.ts', 'test/**/*.ts', 'examples/**/*.ts'],
    plugins: { 'import-x': importX, layers },
    settings: { 'import-x/resolver-next': [createNodeResolver({ extensionAlias: { '.js': ['.ts', '.js'] } })] },
    rules: {
      'import-x/no-restricted-paths': ['error', {
        zones: [
          { target: './lib/store', from: ['./lib/http', './lib/index.ts', './lib/options.ts', './lib/metrics.ts', './lib/server', './lib/tools'], message: 'the store knows nothing of HTTP, the plugin or the server: return a typed error (lib/store/errors.ts) and let lib/http map it' },
          { target: './lib/keys', from: ['./lib/http', './lib/store', './lib/index.ts', './lib/options.ts', './lib/metrics.ts', './lib/server', './lib/tools'], message: 'the key rules are plain functions: no HTTP, no store' },
          { target: './lib/http', from: ['./lib/index.ts', './lib/options.ts', './lib/metrics.ts', './lib/server', './lib/tools'], message: 'the HTTP layer takes what it needs as options (RoutesOptions), not from the plugin entry or the server' },
          { target: './lib/tools', from: ['./lib/index.ts', './lib/http', './lib/server/server.ts', './lib/server/cli.ts'], message: 'the offline tools do not load the plugin: use lib/store and lib/server/etcd-client.ts' },
          { target: './lib/cli', from: ['./lib/store', './lib/http', './lib/index.ts', './lib/options.ts', './lib/metrics.ts', './lib/server', './lib/tools'], message: 'the command line is a client of the HTTP API: it talks to the server over HTTP, never to the store, the plugin or the server\'s code' },
          { target: './lib/cli', from: './lib/keys', except: ['./schemas.ts'], message: 'the command line takes only the key types (lib/keys/schemas.ts) from the key rules: the server applies the rules' },
          { target: ['./lib/store', './lib/keys', './lib/http', './lib/server', './lib/tools', './lib/index.ts', './lib/options.ts', './lib/metrics.ts'], from: './lib/cli', message: 'the plugin and the server do not depend on the command line' },
          { target: './lib', from: ['./test', './bench', './dev', './examples'], message: 'lib/ is the package: it imports nothing of the tests, the bench or the examples' },
          { target: './bench', from: './test', message: 'the bench does not import the tests: shared process helpers live in dev/' }
        ]
      }]
    }
  },
  {
    files: ['lib/**/*.ts'],
    rules: { 'layers/no-cycle': 'error' }
  },
  {
    files: ['lib/store/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', packages(FASTIFY, 'the store uses no Fastify package (only lib/index.ts, lib/options.ts and lib/server/ use both etcd3 and Fastify)')],
      'layers/no-transitive-packages': ['error', FASTIFY]
    }
  },
  {
    files: ['lib/keys/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', packages([...FASTIFY, 'etcd3'], 'the key rules use neither Fastify nor etcd3')],
      'layers/no-transitive-packages': ['error', [...FASTIFY, 'etcd3']]
    }
  },
  {
    // The command line reaches the server over HTTP only, and takes the key schemas' types, never
    // their values (so it loads no TypeBox).
    files: ['lib/cli/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', packages([...FASTIFY, 'etcd3'], 'the command line is an HTTP client: use fetch (lib/cli/client.ts)')],
      'layers/no-transitive-packages': ['error', [...FASTIFY, 'etcd3']],
      '@typescript-eslint/no-restricted-imports': ['error', { patterns: [{ group: ['**/keys/schemas.js'], allowTypeImports: true, message: 'import only types from the key schemas (import type ...)' }] }]
    }
  },
  {
    files: ['lib/http/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', packages(['etcd3'], 'the HTTP layer never talks to etcd: call the store')]
    }
  }
]
