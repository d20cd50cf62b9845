import Foundation
import MeshProto
import MeshRPC
import MeshTestSupport
import MeshWire
import Testing

#if canImport(FoundationNetworking)
  import FoundationNetworking
#endif

/// The services as systemd and Prometheus see them, without systemd as PID 1.
@Suite struct OperationsTests {
  @Test func notifiesReadyOnlyOnceServingThenStatusWatchdogAndStopping() async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-notify")
    let socket = try NotifySocket(directory: directory.path)
    let started = ContinuousClock.now
    let ps = try ChildProcess(
      PipemeshBinary.path, ["serve", "ps", "--listen", "127.0.0.1:0"], logPath: directory.file("ps.log"),
      environment: ["NOTIFY_SOCKET": socket.path, "WATCHDOG_USEC": "400000"])
    let ready = try await socket.waitFor("READY=1")
    #expect(
      socket.received.first?.message.contains("READY=1") == true,
      "something came before READY=1: \(socket.received.map(\.message))")
    let status = try #require(ready.message.split(separator: "\n").first { $0.hasPrefix("STATUS=") })
    let endpoint = try #require(status.split(separator: " ").first { $0.hasPrefix("127.0.0.1:") }).trimmingCharacters(
      in: .punctuationCharacters)
    // READY=1 means the port answers: the first health check must succeed.
    let health = try await RPCClient(target: String(endpoint)).call(
      HealthMethods.check, .init(), options: .init(timeout: .seconds(5)))
    #expect(health.status == .serving)

    // WatchdogSec=0.4 s: a ping every 0.4/3 s. Not too often: a loop pinging
    // without pause would far exceed the pings that interval allows since
    // the service started.
    let pinged = { (from: ContinuousClock.Instant, to: ContinuousClock.Instant) in
      socket.received.filter { $0.message.contains("WATCHDOG=1") && $0.at >= from && $0.at <= to }.count
    }
    try await socket.waitFor("WATCHDOG=1", count: 4)
    let now = ContinuousClock.now
    let allowed = Int((now - started) / (.milliseconds(400) / 3)) + 2
    #expect(pinged(started, now) <= allowed, "\(pinged(started, now)) pings in the time \(allowed - 2) intervals take")
    // And often enough: systemd stops a service silent for WatchdogSec (0.4 s). Over a window,
    // more pings than a ping per WatchdogSec would send (which would be stopped at the first delay).
    let windowStarted = ContinuousClock.now
    try await Task.sleep(for: .seconds(2))
    let windowEnded = ContinuousClock.now
    let needed = Int((windowEnded - windowStarted) / .milliseconds(400)) + 1
    let inWindow = pinged(windowStarted, windowEnded)
    #expect(inWindow >= needed, "\(inWindow) pings where more than one per 0.4 s (\(needed)) are needed")

    ps.signal(SIGTERM)
    let stopping = try await socket.waitFor("STOPPING=1")
    #expect(stopping.message.contains("STATUS="))
    #expect(try await ps.waitForExit() == 0, "\(ps.log)")
  }

  /// OpenBLAS falls back to its generic SSE3 kernels (Prescott) on a CPU it
  /// does not know by model; a partition takes the kernels the CPU's flags
  /// run instead (on a CPU OpenBLAS knows, it keeps OpenBLAS's choice), and
  /// keeps the ones an operator names.
  #if arch(x86_64)
    @Test func aPartitionComputesWithTheKernelsItsCPURuns() async throws {
      let logs = try TemporaryDirectory(prefix: "pipemesh-blas-kernels")
      let cpuInfo = try String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
      let flags = Set(cpuInfo.split(separator: "\n").first { $0.hasPrefix("flags") }?.split(separator: " ") ?? [])
      let chosen = try await RunningService.start("partition", log: logs.file("chosen.log"))
      let kernels = try await chosen.process.waitForLine(startingWith: "pipemesh partition: OpenBLAS with ")
      if flags.isSuperset(of: ["avx2", "fma"]) {
        #expect(!kernels.hasPrefix("Prescott "), "\(kernels)")
      }
      let named = try await RunningService.start(
        "partition", log: logs.file("named.log"), environment: ["OPENBLAS_CORETYPE": "Core2"])
      #expect(
        try await named.process.waitForLine(startingWith: "pipemesh partition: OpenBLAS with ")
          == "Core2 kernels, 1 thread")
    }
  #endif

  @Test func metricsAreScrapedOverHTTP() async throws {
    let logs = try TemporaryDirectory(prefix: "pipemesh-metrics")
    let ps = try await RunningService.start("ps", ["--metrics-listen", "127.0.0.1:0"], log: logs.file("ps.log"))
    let client = try RPCClient(target: ps.endpoint)
    _ = try await client.call(
      ParameterServerMethods.register,
      .with {
        $0.job = "scraped"
        $0.variables = [
          .with {
            $0.name = "w"
            $0.shape = [4]
          }
        ]
      })
    _ = try? await client.call(ParameterServerMethods.pull, .with { $0.job = "missing" })

    let line = try await ps.process.waitForLine(startingWith: "pipemesh ps: ready on ")
    let url = try #require(line.split(separator: " ").last.flatMap { URL(string: String($0)) })
    let (data, response) = try await URLSession.shared.data(from: url)
    #expect((response as? HTTPURLResponse)?.statusCode == 200)
    let text = String(decoding: data, as: UTF8.self)
    #expect(
      text.contains("pipemesh_rpc_requests_total{code=\"OK\",method=\"/pipemesh.v1.ParameterServer/Register\"} 1"),
      "\(text)")
    #expect(
      text.contains("pipemesh_rpc_requests_total{code=\"NOT_FOUND\",method=\"/pipemesh.v1.ParameterServer/Pull\"} 1"))
    #expect(text.contains("pipemesh_rpc_duration_seconds_count{method=\"/pipemesh.v1.ParameterServer/Register\"} 1"))
    #expect(text.contains("pipemesh_ps_variables 1"))
    #expect(text.contains("pipemesh_ps_checkpoint_age_seconds -1"))
    #expect(text.contains("pipemesh_ps_staleness_max 0"))
    // The job's 4 float32 values, and the process's resident memory.
    #expect(text.contains("pipemesh_ps_job_bytes{job=\"scraped\"} 16"), "\(text)")
    let resident = text.split(separator: "\n").first { $0.hasPrefix("pipemesh_process_resident_bytes{at=\"now\"} ") }
    #expect((resident?.split(separator: " ").last.flatMap { Double($0) } ?? 0) > 1_000_000, "\(text)")
    #expect(text.contains("# TYPE pipemesh_rpc_duration_seconds histogram"))
  }

  /// The coordinator's metrics follow a job as it trains (its step, loss,
  /// speed, bubble and step times, labelled with the job), count the stop a
  /// `kill -9` of a partition costs it and the recovery, and drop the job's
  /// series when it ends; its log tells the same story; the partitions'
  /// counts are counters.
  @Test func aCoordinatorsMetricsFollowItsJobsAndTheirStops() async throws {
    let logs = try TemporaryDirectory(prefix: "pipemesh-job-metrics")
    let ps = try await RunningService.start(
      "ps", ["--checkpoint-dir", logs.file("ps"), "--checkpoint-seconds", "0"], log: logs.file("ps.log"))
    let metrics = ["--metrics-listen", "127.0.0.1:0"]
    let first = try await RunningService.start("partition", metrics, log: logs.file("partition0.log"))
    let second = try await RunningService.start("partition", log: logs.file("partition1.log"))
    let coordinator = try await RunningService.start(
      "coordinator", ["--ps", ps.endpoint, "--partitions", "\(first.endpoint);\(second.endpoint)"] + metrics,
      log: logs.file("coordinator.log"))
    let coordinatorMetrics = try await Self.metricsURL(of: coordinator, "coordinator")
    let partitionMetrics = try await Self.metricsURL(of: first, "partition")
    let training = try ChildProcess(
      PipemeshBinary.path,
      [
        "train", "--coordinator", coordinator.endpoint, "--job", "watched", "--model", DurableStateTests.model,
        "--stages", "2", "--epochs", "8", "--micro-batches", "2", "--checkpoint-every", "5", "--max-restarts", "1",
        "--json",
      ], logPath: logs.file("train.log"))

    let deadline = ContinuousClock.now + .seconds(120)
    var text = ""
    while Self.value(in: text, "pipemesh_job_step{job=\"watched\"}") ?? 0 < 10 {
      try #require(ContinuousClock.now < deadline, "the job's step never showed: \(text)")
      text = try await Self.scrape(coordinatorMetrics)
    }
    #expect((Self.value(in: text, "pipemesh_job_loss{job=\"watched\"}") ?? 0) > 0, "\(text)")
    #expect((Self.value(in: text, "pipemesh_job_samples_per_second{job=\"watched\"}") ?? 0) > 0)
    let bubble = try #require(Self.value(in: text, "pipemesh_job_bubble_fraction{job=\"watched\"}"), "\(text)")
    #expect(bubble >= 0 && bubble < 1)
    #expect(Self.value(in: text, "pipemesh_job_replicas{job=\"watched\"}") == 1)
    for stage in 0..<2 {
      let busy = Self.value(
        in: text, "pipemesh_job_stage_busy_fraction{job=\"watched\",replica=\"0\",stage=\"\(stage)\"}")
      #expect(busy.map { $0 > 0 && $0 <= 1 } == true, "stage \(stage): \(text)")
    }
    #expect((Self.value(in: text, "pipemesh_job_step_seconds_count{job=\"watched\"}") ?? 0) >= 10)
    #expect(text.contains("# TYPE pipemesh_coordinator_steps_total counter"))

    second.process.signal(SIGKILL)
    _ = try await second.process.waitForExit()
    let back = try await RunningService.start(
      "partition", log: logs.file("partition1-back.log"), listen: second.endpoint)
    #expect(try await training.waitForExit(timeout: .seconds(600)) == 0, "\(training.log)")
    #expect(back.process.isRunning)

    text = try await Self.scrape(coordinatorMetrics)
    #expect(!text.contains("job=\"watched\""), "the ended job's series stayed: \(text)")
    #expect(Self.value(in: text, "pipemesh_coordinator_job_stops_total{how=\"failed\"}") == 1, "\(text)")
    #expect(Self.value(in: text, "pipemesh_coordinator_recovery_seconds_count{how=\"failed\"}") == 1, "\(text)")
    let shown = try await pipemesh(
      ["jobs", "show", "watched", "--json", "--coordinator", coordinator.endpoint], in: logs)
    let record = try #require(
      try JSONSerialization.jsonObject(with: Data(shown.output.utf8)) as? [String: Any], "\(shown.output)")
    let redone = (record["faults"] as? [[String: Any]])?.first?["stepsRedone"] as? Double ?? 0
    let total = record["totalSteps"] as? Double ?? 0
    #expect(Self.value(in: text, "pipemesh_coordinator_steps_redone_total{how=\"failed\"}") == redone)
    // Every step run counts, the ones run again too.
    #expect(Self.value(in: text, "pipemesh_coordinator_steps_total") == total + redone, "\(record)")

    // The coordinator's log tells the job's story.
    let log = coordinator.process.log
    for line in [
      "job watched starts on 2 stages × 1 replicas", "job watched epoch 1 (step", "job watched stopped at step",
      "job watched starts from step", "job watched steps again", "job watched succeeded",
    ] {
      #expect(log.contains(line), "no '\(line)' in the coordinator's log: \(log)")
    }

    let partitionText = try await Self.scrape(partitionMetrics)
    #expect(partitionText.contains("# TYPE pipemesh_partition_passes_total counter"), "\(partitionText)")
    #expect((Self.value(in: partitionText, "pipemesh_partition_passes_total{kind=\"forward\"}") ?? 0) > 0)
  }

  /// A service's metrics address, from its "ready on …, metrics on http://…" line.
  static func metricsURL(of service: RunningService, _ role: String) async throws -> URL {
    let line = try await service.process.waitForLine(startingWith: "pipemesh \(role): ready on ")
    return try #require(line.split(separator: " ").last.flatMap { URL(string: String($0)) })
  }

  static func scrape(_ url: URL) async throws -> String {
    String(decoding: try await URLSession.shared.data(from: url).0, as: UTF8.self)
  }

  /// The value of the series `series` (name and labels as exposed), if present.
  static func value(in text: String, _ series: String) -> Double? {
    text.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { line in
      line.split(separator: " ").last.flatMap { Double($0) }
    }
  }
}
