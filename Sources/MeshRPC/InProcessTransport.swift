import CGRPCShim
import Foundation
import SwiftProtobuf
import Synchronization

/// Servers and their clients in one process, without sockets: the transport
/// of logic tests and of `pipemesh up --in-process`. A call goes through the
/// same router, admission checks and handlers as over gRPC, with its
/// messages serialized both ways, so that a handler sees what a remote
/// caller would send and caller and server share no state by reference.
///
/// Endpoints are names in `host:port` form that only this network resolves
/// (`ps-0.in-process:1`): services check and pass them like real ones.
public final class InProcessNetwork: RPCDialer {
  private let servers = Mutex<[String: InProcessServer]>([:])

  public init() {}

  /// Serves `services` at `endpoint`, which must be free in this network.
  /// `observer` sees every finished call, as a gRPC server's does.
  @discardableResult
  public func serve(
    _ services: [any RPCService], at endpoint: String, observer: (any RPCObserver)? = nil
  ) throws -> InProcessServer {
    var router = RPCRouter()
    for service in services { service.register(with: &router) }
    let server = InProcessServer(endpoint: endpoint, methods: router.methods, observer: observer, network: self)
    try servers.withLock { servers in
      guard servers[endpoint] == nil else { throw RPCError(.alreadyExists, "\(endpoint) is served already") }
      servers[endpoint] = server
    }
    return server
  }

  /// A channel to `target` whose calls carry no peer identity.
  public func channel(to target: String) throws -> any RPCChannel {
    channel(to: target, identity: nil)
  }

  /// A channel to `target` whose calls carry `identity` as the peer's
  /// verified name (what mutual TLS would give: `coordinator`,
  /// `client.alice`) and `metadata` before each call's own headers.
  public func channel(to target: String, identity: String?, metadata: Metadata = Metadata()) -> InProcessChannel {
    InProcessChannel(target: target, identity: identity, metadata: metadata, network: self)
  }

  /// A dialer whose channels all carry `identity`: what a service of that
  /// role uses to reach its peers.
  public func dialer(identity: String?) -> any RPCDialer {
    IdentifiedDialer(network: self, identity: identity)
  }

  func server(at endpoint: String) -> InProcessServer? { servers.withLock { $0[endpoint] } }

  func remove(_ server: InProcessServer) {
    servers.withLock { servers in
      if servers[server.endpoint] === server { servers[server.endpoint] = nil }
    }
  }

  private struct IdentifiedDialer: RPCDialer {
    let network: InProcessNetwork
    let identity: String?

    func channel(to target: String) throws -> any RPCChannel {
      network.channel(to: target, identity: identity)
    }
  }
}

/// Services served in an `InProcessNetwork` under one endpoint.
public final class InProcessServer: Sendable {
  public let endpoint: String
  private let methods: [String: RegisteredMethod]
  private let observer: (any RPCObserver)?
  private weak let network: InProcessNetwork?
  private let state = Mutex(State())

  private struct State {
    var accepting = true
    var nextCall = 0
    var running: [Int: InProcessCall] = [:]
  }

  init(endpoint: String, methods: [RegisteredMethod], observer: (any RPCObserver)?, network: InProcessNetwork) {
    self.endpoint = endpoint
    self.methods = Dictionary(methods.map { ($0.path, $0) }) { first, _ in first }
    self.observer = observer
    self.network = network
  }

  /// Stops taking calls (new ones are UNAVAILABLE), gives running calls
  /// `gracePeriod` to finish, then cancels the rest; as `RPCServer`'s.
  public func shutdown(gracePeriod: Duration = .seconds(5)) async {
    state.withLock { $0.accepting = false }
    network?.remove(self)
    let deadline = ContinuousClock.now + gracePeriod
    while ContinuousClock.now < deadline, !state.withLock({ $0.running.isEmpty }) {
      try? await Task.sleep(for: .milliseconds(5))
    }
    for call in state.withLock({ Array($0.running.values) }) {
      call.cancelHandler()
      call.finish(with: RPCError(.cancelled, "the server shut down"))
    }
  }

  /// Runs `call`'s handler, as the shim's entry point does for a gRPC call.
  func start(_ call: InProcessCall, path: String, streaming: Bool) {
    let id = state.withLock { state -> Int? in
      guard state.accepting else { return nil }
      state.nextCall += 1
      state.running[state.nextCall] = call
      return state.nextCall
    }
    guard let id else {
      return call.finish(with: RPCError(.unavailable, "\(endpoint) is shutting down"))
    }
    call.observe(path: path, by: observer) { [weak self] in
      _ = self?.state.withLock { $0.running.removeValue(forKey: id) }
    }
    guard let method = methods[path] else {
      return call.finish(with: RPCError(.unimplemented, "\(endpoint) serves no method \(path)"))
    }
    guard (method.kind == PM_METHOD_SERVER_STREAMING) == streaming else {
      return call.finish(
        with: RPCError(.internal, "\(path) is \(streaming ? "unary" : "server-streaming"); it was called as the other"))
    }
    if let inline = method.inline {
      if let rest = inline(call) { call.runHandler { await rest() } }
    } else if let run = method.run {
      call.runHandler { await run(call) }
    }
  }
}

/// A channel to a server in an `InProcessNetwork`; the server is looked up
/// at each call, so a channel may be made before its server exists (calls
/// until then are UNAVAILABLE, as over gRPC).
public struct InProcessChannel: RPCChannel {
  public let target: String
  /// The peer name the server sees (`ServerContext.peerIdentity`).
  public let identity: String?
  /// Headers sent with every call, before each call's own.
  public let metadata: Metadata
  private let network: InProcessNetwork

  init(target: String, identity: String?, metadata: Metadata, network: InProcessNetwork) {
    self.target = target
    self.identity = identity
    self.metadata = metadata
    self.network = network
  }

  public func call<Request, Response>(
    _ method: UnaryMethod<Request, Response>, _ request: Request, options: CallOptions
  ) async throws -> Response {
    let call = try makeCall(request, options: options)
    start(call, path: method.path, streaming: false)
    let bytes = try await withTaskCancellationHandler {
      try await call.next()
    } onCancel: {
      call.cancelFromClient()
    }
    guard let bytes else { throw RPCError(.internal, "\(method.path) ended without an answer") }
    return try Response(wireBytes: bytes)
  }

  /// True at once: an in-process channel has no connection to retry.
  public func reconnect(timeout: Duration) async -> Bool { true }

  public func stream<Request, Response>(
    _ method: ServerStreamingMethod<Request, Response>, _ request: Request, options: CallOptions
  ) -> ResponseStream<Response> {
    ResponseStream(inProcess: {
      let call: InProcessCall
      do {
        call = try makeCall(request, options: options)
      } catch {
        return InProcessStreamReader(failed: error)
      }
      start(call, path: method.path, streaming: true)
      return InProcessStreamReader(call: call)
    })
  }

  private func makeCall(_ request: some Message, options: CallOptions) throws -> InProcessCall {
    var headers = metadata
    for (key, value) in options.metadata { headers.append(value, forKey: key) }
    return InProcessCall(
      request: try request.serializedData(), metadata: headers, identity: identity,
      deadline: options.timeout.map { .now + $0 })
  }

  private func start(_ call: InProcessCall, path: String, streaming: Bool) {
    guard let server = network.server(at: target) else {
      return call.finish(with: RPCError(.unavailable, "nothing serves \(target) in this process"))
    }
    call.expireAtDeadline()
    server.start(call, path: path, streaming: streaming)
  }
}

/// Reads a server stream of an in-process call; dropping it cancels the call.
final class InProcessStreamReader: Sendable {
  private let call: InProcessCall?
  private let failure: (any Error)?

  init(call: InProcessCall) {
    self.call = call
    failure = nil
  }

  init(failed error: any Error) {
    call = nil
    failure = error
  }

  func next() async throws -> Data? {
    if let failure { throw failure }
    guard let call else { return nil }
    return try await withTaskCancellationHandler {
      try await call.next()
    } onCancel: {
      call.cancelFromClient()
    }
  }

  deinit { call?.cancelFromClient() }
}

/// One in-process call: the server's side (`ServerCall`) and the client's,
/// which reads the answer or the stream's messages with `next()`. A stream
/// hands over one message at a time: a write waits until the client took
/// the one before, as gRPC's flow control makes it. The first ending wins:
/// the handler's, the client's cancellation, the deadline, or a shutdown.
final class InProcessCall: ServerCall {
  let request: Data
  private let metadata: Metadata
  private let identity: String?
  private let deadline: ContinuousClock.Instant?
  private let started = ContinuousClock.now
  private let state = Mutex(State())

  private struct State {
    /// How the call ended (an answer, nil for a stream's OK, or an error).
    var ending: Result<Data?, RPCError>?
    /// A message written and not yet read.
    var message: Data?
    var writer: CheckedContinuation<Bool, Never>?
    var reader: CheckedContinuation<Data?, any Error>?
    var handler: Task<Void, Never>?
    var cancelledBeforeHandler = false
    var streamedBytes = 0
    var observer: (any RPCObserver)?
    var path = ""
    var onEnd: (@Sendable () -> Void)?
  }

  init(request: Data, metadata: Metadata, identity: String?, deadline: ContinuousClock.Instant?) {
    self.request = request
    self.metadata = metadata
    self.identity = identity
    self.deadline = deadline
  }

  var context: ServerContext {
    ServerContext(
      metadata: metadata, peer: "in-process", peerIdentity: identity, deadline: deadline,
      cancel: { [weak self] in
        self?.cancelHandler()
        self?.finish(with: RPCError(.cancelled, "the server cancelled the call"))
      })
  }

  /// Reports the call's end to `observer` and runs `onEnd` when it ends.
  func observe(path: String, by observer: (any RPCObserver)?, onEnd: @escaping @Sendable () -> Void) {
    let endedAlready = state.withLock { state in
      state.path = path
      state.observer = observer
      if state.ending == nil { state.onEnd = onEnd }
      return state.ending != nil
    }
    if endedAlready { onEnd() }
  }

  /// The client's side: the next message of a stream, or a unary call's
  /// answer; nil once a stream ended with OK; throws the call's error.
  func next() async throws -> Data? {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Data?, any Error>) in
      let (taken, writer, ending) = state.withLock {
        state -> (Data?, CheckedContinuation<Bool, Never>?, Result<Data?, RPCError>?) in
        if let message = state.message {
          state.message = nil
          defer { state.writer = nil }
          return (message, state.writer, nil)
        }
        if let ending = state.ending {
          // A unary answer is read once; after it the call reads as ended.
          if case .success(let answer?) = ending {
            state.ending = .success(nil)
            return (nil, nil, .success(answer))
          }
          return (nil, nil, ending)
        }
        state.reader = continuation
        return (nil, nil, nil)
      }
      if let taken {
        writer?.resume(returning: true)
        continuation.resume(returning: taken)
      } else if let ending {
        continuation.resume(with: ending.mapError { $0 as any Error })
      }
    }
  }

  /// Runs the handler as a task the call's cancellation cancels.
  func runHandler(_ body: @escaping @Sendable () async -> Void) {
    let task = Task { await body() }
    let cancelNow = state.withLock { state -> Bool in
      state.handler = task
      return state.cancelledBeforeHandler
    }
    if cancelNow { task.cancel() }
  }

  func cancelHandler() {
    let task = state.withLock { state -> Task<Void, Never>? in
      if state.handler == nil { state.cancelledBeforeHandler = true }
      return state.handler
    }
    task?.cancel()
  }

  func cancelFromClient() {
    cancelHandler()
    finish(with: RPCError(.cancelled, "the client cancelled the call"))
  }

  /// Ends the call with DEADLINE_EXCEEDED when its deadline passes first.
  func expireAtDeadline() {
    guard let deadline else { return }
    Task { [weak self] in
      try? await Task.sleep(until: deadline)
      guard let self else { return }
      self.cancelHandler()
      self.finish(with: RPCError(.deadlineExceeded, "the call's deadline passed"))
    }
  }

  func finish(with response: some Message) {
    do {
      let bytes = try response.serializedData()
      end(.success(bytes), responseBytes: bytes.count)
    } catch {
      finish(with: RPCError(answering: error))
    }
  }

  func finish(with error: RPCError) {
    end(.failure(RPCError(error.code, error.message.cut(toUTF8Bytes: RPCError.maxMessageBytes))), responseBytes: nil)
  }

  func finishStream() {
    end(.success(nil), responseBytes: nil)
  }

  func write(_ response: some Message) async throws -> Bool {
    let bytes = try response.serializedData()
    return await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
      let (reader, accepted) = state.withLock { state -> (CheckedContinuation<Data?, any Error>?, Bool) in
        guard state.ending == nil else { return (nil, false) }
        state.streamedBytes += bytes.count
        if let reader = state.reader {
          state.reader = nil
          return (reader, true)
        }
        state.message = bytes
        state.writer = continuation
        return (nil, true)
      }
      if let reader {
        reader.resume(returning: bytes)
        continuation.resume(returning: true)
      } else if !accepted {
        continuation.resume(returning: false)
      }
    }
  }

  /// Ends the call once: wakes the reader and a waiting writer, and reports
  /// the outcome.
  private func end(_ ending: Result<Data?, RPCError>, responseBytes: Int?) {
    let ended = state.withLock { state -> State? in
      guard state.ending == nil else { return nil }
      state.ending = ending
      let ended = state
      state.reader = nil
      state.writer = nil
      state.onEnd = nil
      if state.message != nil, case .failure = ending { state.message = nil }
      return ended
    }
    guard let ended else { return }
    ended.writer?.resume(returning: false)
    if let reader = ended.reader {
      // The reader waits only when no message is queued.
      if case .success(let answer?) = ending {
        state.withLock { $0.ending = .success(nil) }
        reader.resume(returning: answer)
      } else {
        reader.resume(with: ending.mapError { $0 as any Error })
      }
    }
    let code: RPCError.Code? = if case .failure(let error) = ending { error.code } else { nil }
    ended.observer?.callFinished(
      path: ended.path, code: code, duration: .now - started, requestBytes: request.count,
      responseBytes: responseBytes ?? ended.streamedBytes)
    ended.onEnd?()
  }
}
