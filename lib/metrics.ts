// The plugin's Prometheus metrics (option `metrics`), made with prom-client: the families, the
// store's observer that feeds them, the HTTP histogram's hook, and the cache's gauges read at
// scrape time. The store only calls its observer (lib/store/observer.ts); prom-client stays here.
import { Counter, Gauge, Histogram, collectDefaultMetrics, type Registry } from 'prom-client'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { EtcdOperation, StoreObserver } from './store/observer.js'
import type { CacheStatus } from './store/cache/watch-cache.js'

/** What verify can tell of a secret. */
export type VerificationResult = 'valid' | 'malformed' | 'unknown' | 'expired' | 'disabled' | 'revoked'
const VERIFICATION_RESULTS: VerificationResult[] = ['valid', 'malformed', 'unknown', 'expired', 'disabled', 'revoked']
const ETCD_OPERATIONS: EtcdOperation[] = ['range', 'txn', 'put', 'lease_grant', 'lease_revoke']

/** Fixed buckets, in seconds: an HTTP answer (etcd's round trips included), one etcd call. */
const HTTP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
const ETCD_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]

/** The route label of a request no route matched (the URL itself would be a label per URL). */
export const UNMATCHED_ROUTE = 'unmatched'

export interface PluginMetrics {
  /** What the store tells: etcd calls, keys created and revoked. */
  observer: StoreObserver
  /** Counts one verification by its result. */
  verified(result: VerificationResult): void
  /**
   * The onResponse hook that times every answer, by method, route pattern and status; undefined
   * when the registry already has `http_request_duration_seconds` (a host's own, from
   * fastify-metrics for example, with the same labels): the host measures its requests itself.
   */
  timeRequest?: (request: FastifyRequest, reply: FastifyReply) => void
}

/** Registers the plugin's families in `registry`, and Node's defaults unless it already has them. */
export function pluginMetrics (registry: Registry, cacheStatus: () => CacheStatus | null): PluginMetrics {
  const registers = [registry]
  const taken = ['apikeys_etcd_request_duration_seconds', 'apikeys_verifications_total', 'apikeys_keys_created_total']
    .filter(name => registry.getSingleMetric(name) !== undefined)
  if (taken.length > 0) {
    throw new Error(`fastify-etcd-apikeys: the metrics registry already holds ${taken.join(', ')}: ` +
      'give each instance of the plugin its own registry (option metrics.registry)')
  }
  // Node's process defaults, unless the host collects them in this registry already.
  if (registry.getSingleMetric('process_cpu_user_seconds_total') === undefined) collectDefaultMetrics({ register: registry })

  const etcdSeconds = new Histogram({
    name: 'apikeys_etcd_request_duration_seconds', help: 'Duration of each attempt of an etcd call, by etcd operation', labelNames: ['operation'], buckets: ETCD_BUCKETS, registers
  })
  const etcdErrors = new Counter({ name: 'apikeys_etcd_errors_total', help: 'etcd call attempts that failed (timed out, refused, unavailable), by etcd operation', labelNames: ['operation'], registers })
  const verifications = new Counter({ name: 'apikeys_verifications_total', help: 'API key secrets verified, by result', labelNames: ['result'], registers })
  const created = new Counter({ name: 'apikeys_keys_created_total', help: 'API keys created', registers })
  const revoked = new Counter({ name: 'apikeys_keys_revoked_total', help: 'API keys revoked: deleted one by one, or by a revoke-all', registers })
  // Every known label value from the start, at 0: a rate() over a series that appears late misses its first events.
  for (const operation of ETCD_OPERATIONS) {
    etcdSeconds.zero({ operation })
    etcdErrors.inc({ operation }, 0)
  }
  for (const result of VERIFICATION_RESULTS) verifications.inc({ result }, 0)
  cacheFamilies(registry, cacheStatus)

  const http = registry.getSingleMetric('http_request_duration_seconds') === undefined
    ? new Histogram({ name: 'http_request_duration_seconds', help: 'Duration of HTTP answers, by method, route pattern and status code', labelNames: ['method', 'route', 'status_code'], buckets: HTTP_BUCKETS, registers })
    : undefined

  return {
    observer: {
      etcdCall (operation, seconds, failed) {
        etcdSeconds.observe({ operation }, seconds)
        if (failed) etcdErrors.inc({ operation })
      },
      keysCreated: count => created.inc(count),
      keysRevoked: count => revoked.inc(count)
    },
    verified: result => verifications.inc({ result }),
    timeRequest: http && ((request, reply) => {
      http.observe({ method: request.method, route: request.routeOptions.url ?? UNMATCHED_ROUTE, status_code: reply.statusCode }, reply.elapsedTime / 1000)
    })
  }
}

/** The cache's families, read from its status when scraped: nothing on the read path. */
function cacheFamilies (registry: Registry, cacheStatus: () => CacheStatus | null): void {
  const registers: Registry[] = []
  const families = [
    new Gauge({
      name: 'apikeys_cache_live',
      help: '1 while the read cache follows etcd and serves reads, else 0 (reads go to etcd)',
      registers,
      collect () { this.set(cacheStatus()?.live === true ? 1 : 0) }
    }),
    new Gauge({
      name: 'apikeys_cache_revision_lag',
      help: 'etcd\'s last known revision minus the cache\'s (0 without a cache)',
      registers,
      collect () {
        const status = cacheStatus()
        this.set(status === null ? 0 : Math.max(0, status.etcdRevision - status.revision))
      }
    }),
    new Counter({
      name: 'apikeys_cache_reads_total',
      help: 'Reads served from the cache (source="cache") and those that went to etcd (source="etcd"); 0 without a cache',
      labelNames: ['source'],
      registers,
      collect () {
        const reads = cacheStatus()?.reads ?? { cache: 0, etcd: 0 }
        this.reset()
        this.inc({ source: 'cache' }, reads.cache)
        this.inc({ source: 'etcd' }, reads.etcd)
      }
    })
  ]
  for (const family of families) registry.registerMetric(family)
}
