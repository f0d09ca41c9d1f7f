// The package ships no types: what test/metrics.test.ts reads of its answer.
declare module 'parse-prometheus-text-format' {
  interface Sample {
    value?: string
    labels?: Record<string, string>
    /** Histograms: observation count, sum and cumulative counts by upper bound. */
    count?: string
    sum?: string
    buckets?: Record<string, string>
  }
  interface Family {
    name: string
    help: string
    type: 'COUNTER' | 'GAUGE' | 'HISTOGRAM' | 'SUMMARY' | 'UNTYPED'
    metrics: Sample[]
  }
  export default function parsePrometheusTextFormat (text: string): Family[]
}
