// What every command is given: the client, the connection it was made from, and stdout.
import type { ApiClient } from '../client.js'
import type { Connection } from '../connection.js'
import type { Output } from '../output.js'

export interface Context {
  client: ApiClient
  connection: Connection
  out: Output
}
