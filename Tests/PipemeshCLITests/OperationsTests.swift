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
    var seen: [(message: String, at: ContinuousClock.Instant)] = []

    let ready = try await socket.waitFor("READY=1", seen: &seen)
    #expect(seen.count == 1, "something came before READY=1: \(seen.map(\.message))")
    let status = try #require(ready.split(separator: "\n").first { $0.hasPrefix("STATUS=") })
    let endpoint = try #require(status.split(separator: " ").first { $0.hasPrefix("127.0.0.1:") }).trimmingCharacters(
      in: .punctuationCharacters)
    // READY=1 means the port answers: the first health check must succeed.
    let health = try await RPCClient(target: String(endpoint)).call(
      HealthMethods.check, .init(), options: .init(timeout: .seconds(5)))
    #expect(health.status == .serving)

    // WatchdogSec=0.4 s: a ping every 0.2 s. Datagrams queue while this test
    // is not reading, so count them against the time since the service
    // started rather than timing gaps: a loop pinging too often would far
    // exceed the bound.
    for _ in 0..<4 { _ = try await socket.waitFor("WATCHDOG=1", seen: &seen) }
    while let message = socket.receive() { seen.append((message, .now)) }
    let pings = seen.filter { $0.message.contains("WATCHDOG=1") }.count
    let allowed = Int((ContinuousClock.now - started) / .milliseconds(200)) + 2
    #expect(pings <= allowed, "\(pings) pings in the time \(allowed - 2) intervals take")

    ps.signal(SIGTERM)
    let stopping = try await socket.waitFor("STOPPING=1", seen: &seen)
    #expect(stopping.contains("STATUS="))
    #expect(try await ps.waitForExit() == 0, "\(ps.log)")
  }

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

    let line = try await ps.process.waitForLine(startingWith: "pipemesh ps: listening on ")
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
}
