import Foundation
import MeshOps
import MeshProto
import MeshRPC
import MeshTestSupport
import MeshWire
import Synchronization
import Testing

/// Every call kind, over real loopback sockets through the C++ shim and over
/// the in-process transport: the contract both keep.
@Suite struct CallTests {
  let diagnostics = DiagnosticsService(role: "test")

  func echoRequest(_ payload: Data) -> Pipemesh_V1_EchoRequest {
    var request = Pipemesh_V1_EchoRequest()
    request.payload = payload
    return request
  }

  @Test(arguments: TestTransport.allCases)
  func unaryRoundTrip(transport: TestTransport) async throws {
    try await withChannel(transport, [diagnostics]) { client in
      let payload = Data("hello mesh".utf8)
      let response = try await client.call(DiagnosticsMethods.echo, echoRequest(payload))
      #expect(response.payload == payload)
      let description = try await client.call(DiagnosticsMethods.describe, .init())
      #expect(description.role == "test")
      #expect(description.services.contains(DiagnosticsMethods.service))
    }
  }

  @Test(arguments: TestTransport.allCases)
  func metadataDeadlineAndPeerReachTheHandler(transport: TestTransport) async throws {
    let probe = ProbeService()
    try await withChannel(transport, [probe]) { client in
      var options = CallOptions(timeout: Self.patience)
      options.metadata.append("job-7", forKey: "X-Pipemesh-Job")
      let response = try await client.call(ProbeService.metadata, echoRequest(Data()), options: options)
      let seen = String(decoding: response.payload, as: UTF8.self)
      #expect(seen.contains("x-pipemesh-job=job-7"))
      switch transport {
      case .grpc: #expect(seen.contains("|ipv4:127.0.0.1:") || seen.contains("|ipv6:"))
      case .inProcess: #expect(seen.contains("|in-process|"))
      }
      #expect(seen.hasSuffix("|deadline"))
      let withoutDeadline = try await client.call(ProbeService.metadata, echoRequest(Data()))
      #expect(String(decoding: withoutDeadline.payload, as: UTF8.self).hasSuffix("|no-deadline"))
    }
  }

  @Test(arguments: TestTransport.allCases)
  func serverStreamingRoundTrip(transport: TestTransport) async throws {
    try await withChannel(transport, [diagnostics]) { client in
      var request = Pipemesh_V1_EchoStreamRequest()
      request.count = 25
      request.responseSize = 1000
      var sequences: [UInt64] = []
      for try await response in client.stream(DiagnosticsMethods.echoStream, request) {
        #expect(response.payload.count == 1000)
        sequences.append(response.sequence)
      }
      #expect(sequences == Array(0..<25))
    }
  }

  /// A stream whose last response carries its end: the client reads every
  /// response and the end, OK, however the handler goes on; and the server
  /// counts the call once, OK with every byte, also when the client leaves
  /// as soon as it has the last response.
  @Test(arguments: TestTransport.allCases)
  func aLastWriteEndsTheStream(transport: TestTransport) async throws {
    let recorder = CallRecorder()
    try await withChannel(transport, [ProbeService()], observer: recorder) { client in
      for count: UInt64 in [1, 3] {
        var sequences: [UInt64] = []
        for try await response in client.stream(ProbeService.endWithTheLastWrite, .with { $0.count = count }) {
          sequences.append(response.sequence)
        }
        #expect(sequences == Array(0..<count))
      }
      do {
        // Dropped at the end of this block, which cancels the call: the client leaves.
        var leaving = client.stream(ProbeService.endWithTheLastWrite, .with { $0.count = 3 }).makeAsyncIterator()
        for expected: UInt64 in 0..<3 { #expect(try await leaving.next()?.sequence == expected) }
      }
      #expect(await eventually { recorder.calls(to: ProbeService.endWithTheLastWrite.path).count >= 3 })
    }
    // The server is stopped: every call it finished was reported, each once.
    let bytes = { (count: UInt64) in
      try (0..<count).reduce(0) { total, sequence in
        total + (try Pipemesh_V1_EchoResponse.with { $0.sequence = sequence }.serializedData().count)
      }
    }
    let calls = recorder.calls(to: ProbeService.endWithTheLastWrite.path)
    #expect(calls.map(\.code) == [nil, nil, nil], "\(calls)")
    #expect(try calls.map(\.responseBytes) == [bytes(1), bytes(3), bytes(3)], "\(calls)")
  }

  /// Every call a server finished: its path, status and response bytes.
  final class CallRecorder: RPCObserver {
    private let finished = Mutex<[(path: String, code: RPCError.Code?, responseBytes: Int)]>([])

    func callFinished(path: String, code: RPCError.Code?, duration: Duration, requestBytes: Int, responseBytes: Int) {
      finished.withLock { $0.append((path, code, responseBytes)) }
    }

    func calls(to path: String) -> [(path: String, code: RPCError.Code?, responseBytes: Int)] {
      finished.withLock { $0.filter { $0.path == path } }
    }
  }

  @Test(arguments: TestTransport.allCases)
  func clientStreamingRoundTrip(transport: TestTransport) async throws {
    let probe = ProbeService()
    try await withChannel(transport, [probe]) { client in
      let pieces = (0..<40).map { index in Data(repeating: UInt8(index), count: 10_000 + index) }
      let response = try await client.clientStream(ProbeService.collect, options: .init()) { writer in
        for piece in pieces { try await writer.write(echoRequest(piece)) }
      }
      #expect(response.sequence == 40)
      #expect(response.payload == pieces.reduce(Data(), +))
    }
  }

  /// A client stream to a server that is not there fails with UNAVAILABLE
  /// (its first write waits for a start that fails) instead of hanging.
  @Test func aClientStreamToNoServerFails() async throws {
    let nobody = try RefusingPort()
    let client = try RPCClient(target: nobody.endpoint)
    let error = await #expect(throws: RPCError.self) {
      _ = try await client.clientStream(ProbeService.collect, options: .init(timeout: Self.patience)) { writer in
        for _ in 0..<3 { try await writer.write(echoRequest(Data("lost".utf8))) }
      }
    }
    #expect(error?.code == .unavailable, "\(String(describing: error))")
    withExtendedLifetime(nobody) {}
  }

  /// A handler that fails while a response is still on its way: a client
  /// that goes on reading gets the response, then the handler's status. The
  /// server gives such a write a second's grace; on a loaded machine the
  /// client may not take the 16 MiB in within it (the call then ends
  /// CANCELLED, as for a client that stopped reading, below), and the call is
  /// made again, up to three times.
  @Test func aFailureWhileAWriteIsInFlightReachesAClientThatReads() async throws {
    for attempt in 1...3 {
      var late = false
      try await afterTheFirstResponseOfAFailingWrite { probe, iterator in
        // The 16 MiB response waits for this side to read; the handler fails meanwhile.
        try await Task.sleep(for: .milliseconds(400))
        let response: Pipemesh_V1_EchoResponse?
        do {
          response = try await iterator.next()
        } catch let error as RPCError where error.code == .cancelled && attempt < 3 {
          late = true
          return
        }
        #expect(response?.payload.count == 16 << 20)
        let error = await #expect(throws: RPCError.self) { _ = try await iterator.next() }
        #expect(
          error?.code == .invalidArgument && error?.message == "failed while writing", "\(String(describing: error))")
        // Recorded once the write's completion resumed the handler's task, which may come after the status.
        try await probe.waitForAnEvent()
        #expect(probe.seen == ["big write sent"])
      }
      if !late { return }
    }
  }

  /// The same failure with a client that stops reading: the call still ends
  /// (CANCELLED, a second after the failure) instead of waiting for the
  /// client (as it did when the shim waited for the write without a bound).
  /// On a loaded machine the client's transport may take the whole 16 MiB
  /// into its buffers (its flow-control window grows with the delays it
  /// measures): then no write was in flight when the handler failed, and the
  /// call is made again, up to three times.
  @Test func aFailureWhileAWriteIsInFlightEndsTheCallOfAClientThatStoppedReading() async throws {
    var outcomes: [[String]] = []
    for _ in 1...3 {
      try await afterTheFirstResponseOfAFailingWrite { probe, iterator in
        try await probe.waitForAnEvent()
        outcomes.append(probe.seen)
        guard probe.seen == ["big write refused"] else { return }
        let error = await #expect(throws: RPCError.self) { while try await iterator.next() != nil {} }
        #expect(error?.code == .cancelled, "\(String(describing: error))")
      }
      if outcomes.last == ["big write refused"] { return }
    }
    Issue.record("no write was in flight when the handler failed, in 3 calls: \(outcomes)")
  }

  /// Calls `ProbeService.failWhileWriting` with a 16 MiB response over the
  /// shim and hands `body` the probe and the stream after its first response.
  func afterTheFirstResponseOfAFailingWrite(
    _ body: (ProbeService, inout ResponseStream<Pipemesh_V1_EchoResponse>.Iterator) async throws -> Void
  ) async throws {
    let probe = ProbeService()
    try await withChannel(.grpc, [probe]) { client in
      var iterator = client.stream(ProbeService.failWhileWriting, .with { $0.responseSize = 16 << 20 })
        .makeAsyncIterator()
      #expect(try await iterator.next()?.sequence == 0)
      try await body(probe, &iterator)
    }
  }

  @Test(arguments: TestTransport.allCases)
  func aServerThatAnswersEarlyEndsTheClientStream(transport: TestTransport) async throws {
    let probe = ProbeService()
    try await withChannel(transport, [probe]) { client in
      let written = Mutex(0)
      let error = await #expect(throws: RPCError.self) {
        _ = try await client.clientStream(ProbeService.collect, options: .init()) { writer in
          try await writer.write(echoRequest(Data("a".utf8)))
          try await writer.write(echoRequest(Data("stop".utf8)))
          // The refusal ends the call: a write after it throws, long before these are all sent.
          for _ in 0..<100_000 {
            try await writer.write(echoRequest(Data(count: 1000)))
            written.withLock { $0 += 1 }
          }
        }
      }
      #expect(error?.code == .invalidArgument)
      #expect(error?.message == "stopped at request 1", "\(String(describing: error))")
      #expect(written.withLock { $0 } < 100_000)
    }
  }

  @Test(arguments: TestTransport.allCases)
  func aClientStreamThatStallsIsEndedByItsServer(transport: TestTransport) async throws {
    let probe = ProbeService()
    try await withChannel(transport, [probe]) { client in
      // (ModelUploadTests shows requests read within the limit.)
      let error = await #expect(throws: RPCError.self) {
        _ = try await client.clientStream(ProbeService.collectPatiently, options: .init()) { writer in
          try await writer.write(echoRequest(Data("a".utf8)))
          try await writer.write(echoRequest(Data("b".utf8)))
          try await Task.sleep(for: .seconds(120))
          try await writer.write(echoRequest(Data("c".utf8)))
        }
      }
      #expect(error?.code == .deadlineExceeded, "\(String(describing: error))")
      #expect(error?.message.contains("no message came for") == true, "\(String(describing: error))")
    }
  }

  @Test(arguments: TestTransport.allCases)
  func cancellingAClientStreamCancelsTheHandler(transport: TestTransport) async throws {
    let probe = ProbeService()
    try await withChannel(transport, [probe]) { client in
      let call = Task {
        try await client.clientStream(ProbeService.collect, options: .init()) { writer in
          try await writer.write(echoRequest(Data("first".utf8)))
          try await writer.write(echoRequest(Data("second".utf8)))
          try await Task.sleep(for: .seconds(600))
        }
      }
      // Cancelled once the handler has read both, so that it is waiting for a third.
      #expect(await eventually(timeout: Self.patience) { probe.seen.contains("collect read 2") })
      call.cancel()
      let error = await #expect(throws: (any Error).self) { _ = try await call.value }
      #expect(error is CancellationError || (error as? RPCError)?.code == .cancelled, "\(String(describing: error))")
      // The handler read both requests and then stopped waiting: in process it reads the
      // cancellation; over gRPC, whose server learns that a call was cancelled only after
      // the failed read, it may read the stream's end first (RequestStream says so).
      #expect(
        await eventually(timeout: Self.patience) {
          probe.seen.contains("collect cancelled after 2") || probe.seen.contains("collect ended after 2")
        }, "\(probe.seen)")
      if transport == .inProcess { #expect(probe.seen.contains("collect cancelled after 2"), "\(probe.seen)") }
    }
  }

  @Test(arguments: TestTransport.allCases)
  func deadlineExceeded(transport: TestTransport) async throws {
    let probe = ProbeService()
    try await withChannel(transport, [probe]) { client in
      // Long enough for the call to reach its handler on a loaded machine: a
      // deadline that passes in transit ends the call before any handler runs.
      let error = await #expect(throws: RPCError.self) {
        _ = try await client.call(
          ProbeService.waitForCancel, echoRequest(Data()), options: .init(timeout: .seconds(10)))
      }
      #expect(error?.code == .deadlineExceeded)
      #expect(probe.seen.contains("started"), "the call did not reach its handler within its 10 s deadline")
      #expect(
        await eventually(timeout: Self.patience) { probe.seen.contains("cancelled") },
        "the handler's task was not cancelled at the deadline")
    }
  }

  /// How long a handler may take to start or see its cancellation: the
  /// test process's few executor threads are shared with CPU-bound tests
  /// that start at the same moment, which can hold them for tens of seconds.
  static let patience = Duration.seconds(120)

  @Test(arguments: TestTransport.allCases)
  func clientCancellationCancelsTheHandler(transport: TestTransport) async throws {
    let probe = ProbeService()
    try await withChannel(transport, [probe]) { client in
      let call = Task { try await client.call(ProbeService.waitForCancel, echoRequest(Data())) }
      #expect(await eventually(timeout: Self.patience) { probe.seen.contains("started") })
      call.cancel()
      let error = await #expect(throws: RPCError.self) { _ = try await call.value }
      #expect(error?.code == .cancelled)
      #expect(await eventually(timeout: Self.patience) { probe.seen.contains("cancelled") })
    }
  }

  @Test(arguments: TestTransport.allCases)
  func serverCancellationEndsTheClientStream(transport: TestTransport) async throws {
    let probe = ProbeService()
    try await withChannel(transport, [probe]) { client in
      var request = Pipemesh_V1_EchoStreamRequest()
      request.count = 3
      var received = 0
      let error = await #expect(throws: RPCError.self) {
        for try await _ in client.stream(ProbeService.streamThenCancel, request) { received += 1 }
      }
      #expect(error?.code == .cancelled)
      #expect(received <= 3)
    }
  }

  @Test(arguments: TestTransport.allCases)
  func droppingAStreamCancelsTheServerSide(transport: TestTransport) async throws {
    let probe = ProbeService()
    try await withChannel(transport, [probe]) { client in
      var taken = 0
      for try await _ in client.stream(ProbeService.streamForever, .init()) {
        taken += 1
        if taken == 5 { break }
      }
      #expect(taken == 5)
      #expect(await eventually(timeout: Self.patience) { probe.seen.contains { $0.hasPrefix("stream ended after") } })
      if transport == .inProcess {
        // One message in flight: the handler wrote the sixth and waited for it to be read.
        #expect(probe.seen.contains("stream ended after 5"), "\(probe.seen)")
      }
    }
  }

  @Test(arguments: TestTransport.allCases)
  func aMessageJustUnderTheDefaultLimit(transport: TestTransport) async throws {
    try await withChannel(transport, [diagnostics]) { client in
      // The request's field tag and length take a few bytes of the limit.
      var payload = Data(count: TransportConfiguration.defaultMaxMessageBytes - 16)
      payload.withUnsafeMutableBytes { bytes in
        for index in stride(from: 0, to: bytes.count, by: 4096) {
          bytes[index] = UInt8(truncatingIfNeeded: index / 4096)
        }
      }
      let response = try await client.call(DiagnosticsMethods.echo, echoRequest(payload))
      #expect(response.payload == payload)
    }
  }

  /// A channel that failed to connect waits before trying again (fast
  /// failures meanwhile); reconnecting ends the wait and reaches a server that came back
  /// at once — what a partition does for the peers a stage names.
  @Test func aReconnectedChannelReachesAServerThatCameBackAtOnce() async throws {
    // A second at least before the next attempt: without reconnecting, the
    // call below fails at once.
    let patient = TransportConfiguration(maxReconnectBackoff: .seconds(60))
    let first = try RPCServer(services: [diagnostics])
    let endpoint = first.endpoint
    await first.shutdown(gracePeriod: .zero)
    let client = try RPCClient(target: endpoint, transport: patient)
    let refused = await #expect(throws: RPCError.self) {
      _ = try await client.call(DiagnosticsMethods.describe, .init())
    }
    #expect(refused?.code == .unavailable)

    let again = try RPCServer(address: endpoint, services: [diagnostics])
    #expect(await client.reconnect(timeout: Self.patience))
    let answer = await Result(catching: { try await client.call(DiagnosticsMethods.describe, .init()) })
    await again.shutdown(gracePeriod: .zero)
    #expect(try answer.get().role == "test")
  }

  @Test func oversizeMessagesAreRefused() async throws {
    let small = TransportConfiguration(maxMessageBytes: 1 << 20)
    try await withServer([diagnostics], server: small) { _, client in
      let error = await #expect(throws: RPCError.self) {
        _ = try await client.call(DiagnosticsMethods.echo, echoRequest(Data(count: 2 << 20)))
      }
      #expect(error?.code == .resourceExhausted)
      // The server still answers messages under its limit.
      _ = try await client.call(DiagnosticsMethods.echo, echoRequest(Data(count: 1000)))
    }
    try await withServer([diagnostics], client: small) { _, client in
      var request = Pipemesh_V1_EchoRequest()
      request.responseSize = 2 << 20
      let error = await #expect(throws: RPCError.self) { _ = try await client.call(DiagnosticsMethods.echo, request) }
      #expect(error?.code == .resourceExhausted)
    }
  }

  @Test(arguments: TestTransport.allCases)
  func thousandConcurrentCalls(transport: TestTransport) async throws {
    try await withChannel(transport, [diagnostics]) { client in
      let payloads = try await withThrowingTaskGroup(of: (Int, Data).self) { group in
        for index in 0..<1000 {
          group.addTask {
            let response = try await client.call(DiagnosticsMethods.echo, echoRequest(Data("call \(index)".utf8)))
            return (index, response.payload)
          }
        }
        return try await group.reduce(into: [Int: Data]()) { $0[$1.0] = $1.1 }
      }
      #expect(payloads.count == 1000)
      #expect(payloads.allSatisfy { String(decoding: $0.value, as: UTF8.self) == "call \($0.key)" })
    }
  }

  @Test(arguments: TestTransport.allCases)
  func unknownMethodIsUnimplemented(transport: TestTransport) async throws {
    let nowhere = UnaryMethod<Pipemesh_V1_EchoRequest, Pipemesh_V1_EchoResponse>(
      service: "pipemesh.v1.Nothing", name: "Here")
    try await withChannel(transport, [diagnostics]) { client in
      let error = await #expect(throws: RPCError.self) { _ = try await client.call(nowhere, echoRequest(Data())) }
      #expect(error?.code == .unimplemented)
      #expect(error?.message.contains("/pipemesh.v1.Nothing/Here") == true)
    }
  }

  @Test(arguments: TestTransport.allCases)
  func gracefulShutdownLetsRunningCallsFinish(transport: TestTransport) async throws {
    let probe = ProbeService()
    let server = try TestServer(transport, [diagnostics, probe])
    let client = server.channel
    let running = Task { try await client.call(ProbeService.slow, echoRequest(Data("late".utf8))) }
    #expect(await eventually(timeout: Self.patience) { probe.seen.contains("slow started") })
    await server.shutdown(.seconds(10))
    #expect(try await running.value.payload == Data("late".utf8))
    let error = await #expect(throws: RPCError.self) {
      _ = try await client.call(DiagnosticsMethods.echo, echoRequest(Data()), options: .init(timeout: .seconds(2)))
    }
    #expect(error?.code == .unavailable || error?.code == .deadlineExceeded)
  }
}

/// A status message is cut to a size every peer accepts, so a handler that
/// quotes a huge input still reaches the client with its own code.
@Suite struct StatusMessageTests {
  @Test(arguments: [100_000, 1_000_000])
  func aLongMessageIsCutAndKeepsItsCode(length: Int) async throws {
    try await withServer([ProbeService()]) { _, client in
      // Three-byte characters: a cut in the middle of one would not be UTF-8.
      let payload = Data(String(repeating: "€", count: length / 3).utf8)
      let error = await #expect(throws: RPCError.self) {
        _ = try await client.call(ProbeService.refuseQuoting, .with { $0.payload = payload })
      }
      #expect(error?.code == .invalidArgument, "\(String(describing: error))")
      let message = error?.message ?? ""
      #expect(message.utf8.count <= RPCError.maxMessageBytes)
      #expect(message.hasPrefix("refused '€€€"))
      #expect(message.hasSuffix("… (message cut)"))
    }
  }

  @Test func echoedValuesAreShortAndSayHowLongTheyWere() {
    #expect("short".echoed == "short")
    let long = String(repeating: "a", count: 5_000)
    #expect(long.echoed == String(repeating: "a", count: String.maxEchoedCharacters) + "… (cut; 5000 bytes in all)")
  }
}

/// Echo is on every server, so it must not be a way to hold a task for days
/// or to make the process allocate without bound.
@Suite struct EchoBoundsTests {
  @Test func longDelaysAreRefused() async throws {
    try await withServer([DiagnosticsService(role: "test")]) { _, client in
      let delayed = await #expect(throws: RPCError.self) {
        _ = try await client.call(DiagnosticsMethods.echo, .with { $0.delayMs = .max })
      }
      #expect(delayed?.code == .invalidArgument)
      #expect(delayed?.message.contains("delay_ms") == true)
      let stream = client.stream(
        DiagnosticsMethods.echoStream,
        .with {
          $0.count = 2
          $0.intervalMs = 3_600_000
        })
      let interval = await #expect(throws: RPCError.self) { for try await _ in stream {} }
      #expect(interval?.code == .invalidArgument)
    }
  }

  @Test(arguments: TestTransport.allCases)
  func payloadsInFlightAreBounded(transport: TestTransport) async throws {
    let diagnostics = DiagnosticsService(role: "test", maxPayloadBytesInFlight: 1 << 20)
    #expect(DiagnosticsService(role: "default").maxPayloadBytesInFlight == 256 << 20)
    try await withChannel(transport, [diagnostics]) { client in
      let half = UInt64(diagnostics.maxPayloadBytesInFlight / 2)
      // Two streams that each hold half the bound between their messages.
      let streams = (0..<2).map { _ in
        client.stream(
          DiagnosticsMethods.echoStream,
          .with {
            $0.count = 2
            $0.responseSize = half
            $0.intervalMs = 60_000
          }
        )
        .makeAsyncIterator()
      }
      var held: [ResponseStream<Pipemesh_V1_EchoResponse>.Iterator] = []
      for var stream in streams {
        #expect(try await stream.next()?.payload.count == Int(half))
        held.append(stream)
      }
      let over = await #expect(throws: RPCError.self) {
        _ = try await client.call(DiagnosticsMethods.echo, .with { $0.responseSize = 1 })
      }
      #expect(over?.code == .resourceExhausted, "\(String(describing: over))")
      held.removeAll()  // cancels both streams, which give their bytes back
      var freed = false
      for _ in 0..<200 where !freed {
        freed = (try? await client.call(DiagnosticsMethods.echo, .with { $0.responseSize = 1 })) != nil
        if !freed { try await Task.sleep(for: .milliseconds(50)) }
      }
      #expect(freed, "the cancelled streams gave their bytes back")
    }
  }
}
