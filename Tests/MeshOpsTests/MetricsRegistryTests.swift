import MeshOps
import Synchronization
import Testing

/// The values a callback gauge reports, changed by the test between scrapes.
private final class GaugeSource: Sendable {
  private let values = Mutex<[(job: String, value: Double)]>([])

  func set(_ values: [(job: String, value: Double)]) { self.values.withLock { $0 = values } }

  func read() -> [(labels: [String: String], value: Double)] {
    values.withLock { values in values.map { entry in (labels: ["job": entry.job], value: entry.value) } }
  }
}

/// The Prometheus text exposition of counters, histograms and scrape-time gauges, line for line.
@Suite struct MetricsRegistryTests {
  @Test func anEmptyRegistryExposesNothing() {
    #expect(MetricsRegistry().exposition() == "\n")
  }

  @Test func countersSumPerLabelSetWithLabelsSorted() {
    let registry = MetricsRegistry()
    let help = "Calls answered, by method and status."
    registry.increment("pipemesh_calls_total", help: help, labels: ["method": "Push", "code": "OK"])
    registry.increment("pipemesh_calls_total", help: help, labels: ["code": "OK", "method": "Push"], by: 2)
    registry.increment("pipemesh_calls_total", help: help, labels: ["method": "Pull", "code": "NOT_FOUND"])
    #expect(
      registry.exposition() == """
        # HELP pipemesh_calls_total Calls answered, by method and status.
        # TYPE pipemesh_calls_total counter
        pipemesh_calls_total{code="NOT_FOUND",method="Pull"} 1
        pipemesh_calls_total{code="OK",method="Push"} 3

        """)
  }

  @Test func scrapedCountersAreTypedAsCountersAndAnEndedJobsSeriesAreForgotten() {
    let registry = MetricsRegistry()
    registry.counter("pipemesh_passes_total", help: "Passes run.") { [(["kind": "forward"], 7)] }
    registry.observe("pipemesh_step_seconds", help: "Steps.", labels: ["job": "a"], value: 0.5, buckets: [1])
    registry.observe("pipemesh_step_seconds", help: "Steps.", labels: ["job": "b"], value: 2, buckets: [1])
    registry.increment("pipemesh_steps_total", help: "Steps.", labels: ["job": "a", "stage": "0"])
    registry.forget("job", "a")
    #expect(
      registry.exposition() == """
        # HELP pipemesh_step_seconds Steps.
        # TYPE pipemesh_step_seconds histogram
        pipemesh_step_seconds_bucket{job="b",le="1"} 0
        pipemesh_step_seconds_bucket{job="b",le="+Inf"} 1
        pipemesh_step_seconds_sum{job="b"} 2
        pipemesh_step_seconds_count{job="b"} 1
        # HELP pipemesh_passes_total Passes run.
        # TYPE pipemesh_passes_total counter
        pipemesh_passes_total{kind="forward"} 7

        """)
  }

  @Test func labelValuesAreEscaped() {
    let registry = MetricsRegistry()
    registry.increment("escapes_total", help: "Escaping.", labels: ["path": "a\"b\\c\nd"])
    #expect(
      registry.exposition() == #"""
        # HELP escapes_total Escaping.
        # TYPE escapes_total counter
        escapes_total{path="a\"b\\c\nd"} 1

        """#)
  }

  @Test func wholeNumbersPrintAsIntegersAndOthersAsDecimals() {
    let registry = MetricsRegistry()
    registry.increment("a_total", help: "Whole.", by: 2)
    registry.increment("a_total", help: "Whole.", by: 0.5)
    registry.increment("a_total", help: "Whole.", by: 0.5)
    registry.increment("b_total", help: "Fraction.", by: 0.25)
    registry.increment("c_total", help: "Large.", by: 999_999_999_999_999)
    registry.increment("d_total", help: "Unlabelled and untouched.", by: 0)
    #expect(
      registry.exposition() == """
        # HELP a_total Whole.
        # TYPE a_total counter
        a_total 3
        # HELP b_total Fraction.
        # TYPE b_total counter
        b_total 0.25
        # HELP c_total Large.
        # TYPE c_total counter
        c_total 999999999999999
        # HELP d_total Unlabelled and untouched.
        # TYPE d_total counter
        d_total 0

        """)
  }

  @Test func nonFiniteValuesUseThePrometheusSpelling() {
    let registry = MetricsRegistry()
    registry.gauge("g", help: "Odd values.") {
      [(["v": "nan"], .nan), (["v": "up"], .infinity), (["v": "down"], -.infinity)]
    }
    let lines = registry.exposition().split(separator: "\n").map(String.init)
    #expect(lines.contains(#"g{v="nan"} NaN"#))
    #expect(lines.contains(#"g{v="up"} +Inf"#))
    #expect(lines.contains(#"g{v="down"} -Inf"#))
  }

  @Test func histogramBucketsAreCumulative() {
    let registry = MetricsRegistry()
    for value in [0.25, 1, 3] {
      registry.observe(
        "pipemesh_call_seconds", help: "Call latency.", labels: ["method": "Push"], value: value,
        buckets: [0.5, 1, 2.5])
    }
    registry.observe(
      "pipemesh_call_seconds", help: "Call latency.", labels: ["method": "Pull"], value: 0.5,
      buckets: [0.5, 1, 2.5])
    #expect(
      registry.exposition() == """
        # HELP pipemesh_call_seconds Call latency.
        # TYPE pipemesh_call_seconds histogram
        pipemesh_call_seconds_bucket{method="Pull",le="0.5"} 1
        pipemesh_call_seconds_bucket{method="Pull",le="1"} 1
        pipemesh_call_seconds_bucket{method="Pull",le="2.5"} 1
        pipemesh_call_seconds_bucket{method="Pull",le="+Inf"} 1
        pipemesh_call_seconds_sum{method="Pull"} 0.5
        pipemesh_call_seconds_count{method="Pull"} 1
        pipemesh_call_seconds_bucket{method="Push",le="0.5"} 1
        pipemesh_call_seconds_bucket{method="Push",le="1"} 2
        pipemesh_call_seconds_bucket{method="Push",le="2.5"} 2
        pipemesh_call_seconds_bucket{method="Push",le="+Inf"} 3
        pipemesh_call_seconds_sum{method="Push"} 4.25
        pipemesh_call_seconds_count{method="Push"} 3

        """)
  }

  @Test func histogramWithoutLabelsGetsOnlyTheBucketLabel() {
    let registry = MetricsRegistry()
    registry.observe("checkpoint_seconds", help: "Checkpoint time.", value: 2, buckets: [1, 10])
    #expect(
      registry.exposition() == """
        # HELP checkpoint_seconds Checkpoint time.
        # TYPE checkpoint_seconds histogram
        checkpoint_seconds_bucket{le="1"} 0
        checkpoint_seconds_bucket{le="10"} 1
        checkpoint_seconds_bucket{le="+Inf"} 1
        checkpoint_seconds_sum 2
        checkpoint_seconds_count 1

        """)
  }

  @Test func defaultLatencyBucketsRunFrom100MicrosecondsTo30Seconds() {
    let registry = MetricsRegistry()
    registry.observe("rpc_seconds", help: "RPC latency.", value: 0.003)
    let buckets = registry.exposition().split(separator: "\n").filter { $0.hasPrefix("rpc_seconds_bucket") }
    #expect(buckets.count == MetricsRegistry.latencyBuckets.count + 1)
    #expect(buckets.first == #"rpc_seconds_bucket{le="0.0001"} 0"#)
    #expect(buckets.contains(#"rpc_seconds_bucket{le="0.0025"} 0"#))
    #expect(buckets.contains(#"rpc_seconds_bucket{le="0.005"} 1"#))
    #expect(buckets.dropLast().last == #"rpc_seconds_bucket{le="30"} 1"#)
    #expect(buckets.last == #"rpc_seconds_bucket{le="+Inf"} 1"#)
  }

  @Test func callbackGaugeSeriesComeAndGoBetweenScrapes() {
    let registry = MetricsRegistry()
    let source = GaugeSource()
    registry.gauge("pipemesh_job_variables", help: "Variables held, by job.") { source.read() }
    source.set([("a", 3), ("b", -1.5)])
    #expect(
      registry.exposition() == """
        # HELP pipemesh_job_variables Variables held, by job.
        # TYPE pipemesh_job_variables gauge
        pipemesh_job_variables{job="a"} 3
        pipemesh_job_variables{job="b"} -1.5

        """)
    source.set([("b", -1.5), ("c", 0)])
    #expect(
      registry.exposition() == """
        # HELP pipemesh_job_variables Variables held, by job.
        # TYPE pipemesh_job_variables gauge
        pipemesh_job_variables{job="b"} -1.5
        pipemesh_job_variables{job="c"} 0

        """)
    source.set([])
    #expect(
      registry.exposition() == """
        # HELP pipemesh_job_variables Variables held, by job.
        # TYPE pipemesh_job_variables gauge

        """)
  }

  @Test func gaugesFollowTheCountersAndHistogramsInNameOrder() {
    let registry = MetricsRegistry()
    registry.gauge("a_gauge", help: "First gauge.") { [(labels: [:], value: 7)] }
    registry.increment("z_total", help: "Last counter.")
    registry.observe("m_seconds", help: "Middle histogram.", value: 1, buckets: [1])
    #expect(
      registry.exposition() == """
        # HELP m_seconds Middle histogram.
        # TYPE m_seconds histogram
        m_seconds_bucket{le="1"} 1
        m_seconds_bucket{le="+Inf"} 1
        m_seconds_sum 1
        m_seconds_count 1
        # HELP z_total Last counter.
        # TYPE z_total counter
        z_total 1
        # HELP a_gauge First gauge.
        # TYPE a_gauge gauge
        a_gauge 7

        """)
  }
}
