// Assertions shared by the test files.
import type { Test } from 'tap'
import type { Answer } from './app.js'

/** An error answer in Sensu's shape: this status, JSON `{ message, code }` and nothing else. */
export function checkError (t: Test, res: Answer, status: number, code: number, what = '') {
  const label = what === '' ? '' : `${what}: `
  t.equal(res.statusCode, status, `${label}status ${status}`, { body: res.body })
  t.match(res.headers['content-type'], /^application\/json/, `${label}JSON`)
  const body = res.json()
  t.strictSame(Object.keys(body).sort(), ['code', 'message'], `${label}the body is { message, code }`)
  t.equal(body.code, code, `${label}code ${code}`)
  t.match(body.message, /\S/, `${label}a message`)
}
