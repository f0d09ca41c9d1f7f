// Single HTTP requests on kept-alive connections, for the parts of the benchmark that time one
// request at a time (revocation, setup), where a new connection per request would be measured too.
import { Agent, request } from 'node:http'

const agent = new Agent({ keepAlive: true, maxSockets: 64 })

export interface CallAnswer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
}

export async function httpCall (url: string, options: { method?: string, headers?: Record<string, string>, body?: string } = {}): Promise<CallAnswer> {
  return await new Promise((resolve, reject) => {
    const req = request(url, { method: options.method ?? 'GET', headers: options.headers, agent, timeout: 30_000 }, res => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', chunk => { body += chunk })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url} within 30 s`)))
    req.on('error', reject)
    req.end(options.body)
  })
}

/** Closes the kept-alive connections, so that the process can exit. */
export function closeConnections (): void {
  agent.destroy()
}
