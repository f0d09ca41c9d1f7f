import { readFileSync } from 'node:fs'
import type { IOptions } from 'etcd3'
import type { ServerConfig } from './config.js'

/** The etcd client options of the server's configuration (TLS and credentials), for `endpoints`. */
export function etcdClientOptions (config: ServerConfig, endpoints: string[]): IOptions {
  const { etcdTls, etcdAuth } = config
  return {
    hosts: endpoints,
    ...(etcdTls && {
      credentials: {
        rootCertificate: etcdTls.caFile === undefined ? Buffer.alloc(0) : readFileSync(etcdTls.caFile),
        ...(etcdTls.certFile !== undefined && { certChain: readFileSync(etcdTls.certFile) }),
        ...(etcdTls.keyFile !== undefined && { privateKey: readFileSync(etcdTls.keyFile) })
      }
    }),
    ...(etcdAuth && { auth: etcdAuth })
  }
}
