import neostandard from 'neostandard'

export default [
  ...neostandard({ ts: true, ignores: ['dist/**', 'coverage/**', '.tap/**', 'node_modules/**'] }),
  {
    // TypeBox's idiom: a schema and its static type share one name.
    files: ['lib/keys/schemas.ts'],
    rules: { '@typescript-eslint/no-redeclare': 'off' }
  }
]
