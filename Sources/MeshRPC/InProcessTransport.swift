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
  private let faults = Mutex<[Fault]>([])
  /// Calls in the order they were sent (and unary ones answered), once `logCalls()` was called.
  private let log = Mutex<[CallEvent]?>(nil)

  /// A call sent, or a unary call answered (with any status), as the network logs it.
  public struct CallEvent: Sendable {
    public enum Kind: Sendable { case sent, answered }
    public let kind: Kind
    public let path: String
    public let endpoint: String
    /// The serialized request.
    public let request: Data
  }

  /// What a fault a test placed loses of a call.
  public enum Loss: Sendable {
    /// The request never reaches the server.
    case request
    /// The server handles the request; its answer never reaches the caller:
    /// a unary call's answer, or every message of a server stream, which the
    /// server sent in full (as when a connection breaks with them buffered).
    case answer
  }

  /// What a placed fault does to a call, once.
  struct Fault {
    enum Effect {
      /// Fails the call with the error, losing its request or its answer.
      case lose(Loss, RPCError)
      /// Holds the call's answer this long before the caller gets it.
      case delay(Duration)
    }
    let path: String
    let endpoint: String
    let effect: Effect
    let matches: @Sendable (Data) -> Bool
  }

  public init() {}

  /// Fails the next call of method `path` to `endpoint` whose serialized
  /// request `matches` accepts with `error`, losing its request or its
  /// answer, as a dropped connection would: a fault for a logic test to
  /// place exactly.
  public func failNextCall(
    _ path: String, to endpoint: String, losing loss: Loss, with error: RPCError,
    where matches: @escaping @Sendable (Data) -> Bool = { _ in true }
  ) {
    faults.withLock { $0.append(Fault(path: path, endpoint: endpoint, effect: .lose(loss, error), matches: matches)) }
  }

  /// Holds the answer of the next unary call of method `path` to `endpoint`
  /// whose serialized request `matches` accepts for `delay` before its caller
  /// gets it, as a slow server or a stalled link would.
  public func delayNextCall(
    _ path: String, to endpoint: String, by delay: Duration,
    where matches: @escaping @Sendable (Data) -> Bool = { _ in true }
  ) {
    faults.withLock { $0.append(Fault(path: path, endpoint: endpoint, effect: .delay(delay), matches: matches)) }
  }

  /// Faults placed that no call has met yet.
  public var unfiredFaults: Int { faults.withLock { $0.count } }

  /// Logs every call from now on as it is sent, and every unary call as it
  /// is answered: for a logic test to check the order of a protocol's calls
  /// and what they asked.
  public func logCalls() { log.withLock { $0 = $0 ?? [] } }

  /// The calls logged so far, oldest first.
  public var loggedCalls: [CallEvent] { log.withLock { $0 ?? [] } }

  func note(_ kind: CallEvent.Kind, path: String, to endpoint: String, request: Data) {
    log.withLock { $0?.append(CallEvent(kind: kind, path: path, endpoint: endpoint, request: request)) }
  }

  /// Takes the fault placed for this call, if any.
  func takeFault(for path: String, to endpoint: String, request: Data) -> Fault? {
    faults.withLock { faults in
      guard let index = faults.firstIndex(where: { $0.path == path && $0.endpoint == endpoint && $0.matches(request) })
      else { return nil }
      return faults.remove(at: index)
    }
  }

  /// Serves `services` at `endpoint`, which must be free in this network,
  /// and health checks of them, as a gRPC server does. `observer` sees every
  /// finished call, as a gRPC server's does.
  @discardableResult
  public func serve(
    _ services: [any RPCService], at endpoint: String, observer: (any RPCObserver)? = nil
  ) throws -> InProcessServer {
    var router = RPCRouter()
    for service in services + [HealthService(serving: services.map(\.serviceName))] {
      service.register(with: &router)
    }
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
  func start(_ call: InProcessCall, path: String, kind: pm_method_kind) {
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
    guard method.kind == kind else {
      return call.finish(
        with: RPCError(
          .internal, "\(path) is \(Self.describe(method.kind)); it was called as \(Self.describe(kind))"))
    }
    if let inline = method.inline {
      if let rest = inline(call) { call.runHandler { await rest() } }
    } else if let run = method.run {
      call.runHandler { await run(call) }
    }
  }
}

extension InProcessServer {
  static func describe(_ kind: pm_method_kind) -> String {
    switch kind {
    case PM_METHOD_SERVER_STREAMING: "server-streaming"
    case PM_METHOD_CLIENT_STREAMING: "client-streaming"
    case PM_METHOD_BIDI_STREAMING: "bidirectional-streaming"
    default: "unary"
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
    let began = ContinuousClock.now
    let call = try makeCall(request, options: options)
    network.note(.sent, path: method.path, to: target, request: call.request)
    defer { network.note(.answered, path: method.path, to: target, request: call.request) }
    let fault = start(call, path: method.path, kind: PM_METHOD_UNARY)
    let answer: Result<Data?, any Error>
    do {
      answer = .success(
        try await withTaskCancellationHandler {
          try await call.next()
        } onCancel: {
          call.cancelFromClient()
        })
    } catch {
      answer = .failure(error)
    }
    switch fault?.effect {
    case .lose(_, let error):
      _ = try answer.get()
      throw error
    case .delay(let delay):
      // Held past the caller's deadline, the answer never comes.
      let deadline = options.timeout.map { began + $0 }
      do {
        if let deadline, deadline < .now + delay {
          try await Task.sleep(until: deadline)
          throw RPCError(.deadlineExceeded, "\(method.path) was not answered within \(options.timeout!)")
        }
        try await Task.sleep(for: delay)
      } catch is CancellationError {
        throw RPCError(.cancelled, "\(method.path) was cancelled")
      }
    case nil: break
    }
    guard let bytes = try answer.get() else { throw RPCError(.internal, "\(method.path) ended without an answer") }
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
      network.note(.sent, path: method.path, to: target, request: call.request)
      let fault = start(call, path: method.path, kind: PM_METHOD_SERVER_STREAMING)
      guard case .lose(.answer, let error) = fault?.effect else { return InProcessStreamReader(call: call) }
      return InProcessStreamReader(call: call, losingEveryMessageWith: error)
    })
  }

  /// The call starts with the first request written; each later one waits
  /// until the handler takes it.
  public func clientStream<Request, Response>(
    _ method: ClientStreamingMethod<Request, Response>, options: CallOptions,
    requests: @Sendable (RequestWriter<Request>) async throws -> Void
  ) async throws -> Response {
    let answer = OneAnswer()
    let started = Mutex<InProcessCall?>(nil)
    let writer = RequestWriter<Request> { bytes in
      if let call = started.withLock({ $0 }) { return await call.send(bytes) }
      let call = makeCall(bytes: bytes, options: options)
      started.withLock { $0 = call }
      start(call, path: method.path, kind: PM_METHOD_CLIENT_STREAMING)
      // The call always ends (answered, cancelled, past its deadline or shut down).
      Task {
        do {
          let bytes = try await call.next()
          answer.deliver(
            bytes.map { .success($0) } ?? .failure(RPCError(.internal, "\(method.path) ended without an answer")))
        } catch {
          answer.deliver(.failure(RPCError(answering: error)))
        }
      }
      return true
    }
    let bytes = try await withTaskCancellationHandler {
      try await runClientStream(
        requests, writer: writer,
        endRequests: {
          guard let call = started.withLock({ $0 }) else {
            return answer.deliver(.failure(RPCError(.invalidArgument, "the call carried no request message")))
          }
          call.endRequests()
        },
        cancel: {
          started.withLock { $0 }?.cancelFromClient()
          answer.deliver(.failure(RPCError(.cancelled, "the client cancelled the call")))
        }, answer: answer)
    } onCancel: {
      started.withLock { $0 }?.cancelFromClient()
    }
    return try Response(wireBytes: bytes)
  }

  private func makeCall(_ request: some Message, options: CallOptions) throws -> InProcessCall {
    makeCall(bytes: try request.serializedData(), options: options)
  }

  private func makeCall(bytes: Data, options: CallOptions) -> InProcessCall {
    var headers = metadata
    for (key, value) in options.metadata { headers.append(value, forKey: key) }
    return InProcessCall(
      request: bytes, metadata: headers, identity: identity, deadline: options.timeout.map { .now + $0 })
  }

  /// Starts `call` on its server; returns the fault that loses or holds its answer, if one was placed.
  @discardableResult
  private func start(_ call: InProcessCall, path: String, kind: pm_method_kind) -> InProcessNetwork.Fault? {
    guard let server = network.server(at: target) else {
      call.finish(with: RPCError(.unavailable, "nothing serves \(target) in this process"))
      return nil
    }
    let fault = network.takeFault(for: path, to: target, request: call.request)
    if case .lose(.request, let error) = fault?.effect {
      call.finish(with: error)
      return nil
    }
    switch (fault?.effect, kind) {
    case (nil, _), (_, PM_METHOD_UNARY), (.lose(.answer, _), PM_METHOD_SERVER_STREAMING): break
    default:
      preconditionFailure("a placed fault holds only a unary call's answer, and loses only a unary or server stream's")
    }
    call.expireAtDeadline()
    server.start(call, path: path, kind: kind)
    return fault
  }
}

/// Reads a server stream of an in-process call; dropping it cancels the call.
final class InProcessStreamReader: Sendable {
  private let call: InProcessCall?
  private let failure: (any Error)?
  /// The error the stream ends with once the server sent every message,
  /// none of which the reader gets (a placed fault).
  private let lostAnswer: (any Error)?

  init(call: InProcessCall, losingEveryMessageWith lostAnswer: (any Error)? = nil) {
    self.call = call
    failure = nil
    self.lostAnswer = lostAnswer
  }

  init(failed error: any Error) {
    call = nil
    failure = error
    lostAnswer = nil
  }

  func next() async throws -> Data? {
    if let failure { throw failure }
    guard let call else { return nil }
    return try await withTaskCancellationHandler {
      guard let lostAnswer else { return try await call.next() }
      while try await call.next() != nil {}
      throw lostAnswer
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
    /// The server's stream of responses to the client.
    var responses = Handoff()
    var handler: Task<Void, Never>?
    var cancelledBeforeHandler = false
    var observer: (any RPCObserver)?
    var path = ""
    var onEnd: (@Sendable () -> Void)?
    /// A client stream's requests after the first, to the handler.
    var requests = Handoff()
    var requestsEnded = false
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
        if let message = state.responses.message.take() {
          return (message, state.responses.writer.take(), nil)
        }
        if let ending = state.ending {
          // A unary answer is read once; after it the call reads as ended.
          if case .success(let answer?) = ending {
            state.ending = .success(nil)
            return (nil, nil, .success(answer))
          }
          return (nil, nil, ending)
        }
        state.responses.reader = continuation
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

  /// The client's side of a client stream: hands one request to the
  /// handler and returns once it took it (as gRPC's flow control would make
  /// a sender wait); false when the call is over.
  func send(_ bytes: Data) async -> Bool {
    await hand(bytes, through: \.requests) { $0.ending == nil && !$0.requestsEnded }
  }

  /// Hands `bytes` through one of the call's handoffs while `open` holds:
  /// to its reader if one waits, else it waits for one; false when the call
  /// (or that direction) is over.
  private func hand(
    _ bytes: Data, through handoff: WritableKeyPath<State, Handoff>, while open: (State) -> Bool
  ) async -> Bool {
    await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
      let (reader, accepted) = state.withLock { state -> (CheckedContinuation<Data?, any Error>?, Bool) in
        guard open(state), state[keyPath: handoff].message == nil else { return (nil, false) }
        return (state[keyPath: handoff].offer(bytes, from: continuation), true)
      }
      if let reader {
        reader.resume(returning: bytes)
        continuation.resume(returning: true)
      } else if !accepted {
        continuation.resume(returning: false)
      }
    }
  }

  /// The client's side: it sends no more requests.
  func endRequests() {
    let reader = state.withLock { state in
      state.requestsEnded = true
      return state.requests.reader.take()
    }
    reader?.resume(returning: nil)
  }

  func readRequest() async -> Data? {
    // Never thrown: the reader of requests is resumed with a message or nil.
    try? await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Data?, any Error>) in
      let (ready, sender, over) = state.withLock { state -> (Data?, CheckedContinuation<Bool, Never>?, Bool) in
        if let request = state.requests.message.take() { return (request, state.requests.writer.take(), false) }
        if state.requestsEnded || state.ending != nil { return (nil, nil, true) }
        state.requests.reader = continuation
        return (nil, nil, false)
      }
      sender?.resume(returning: true)
      if ready != nil || over { continuation.resume(returning: ready) }
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
    await hand(try response.serializedData(), through: \.responses) { $0.ending == nil }
  }

  func writeLast(_ response: some Message) async throws -> Bool {
    end(.success(nil), responseBytes: nil, last: try response.serializedData())
  }

  /// Ends the call once: wakes the reader and a waiting writer, and reports
  /// the outcome; whether it ended it. A stream's `last` response goes with
  /// its end, to the waiting reader or queued for the next read (not while
  /// another waits to be read).
  @discardableResult
  private func end(_ ending: Result<Data?, RPCError>, responseBytes: Int?, last: Data? = nil) -> Bool {
    let ended = state.withLock { state -> State? in
      guard state.ending == nil, last == nil || state.responses.message == nil else { return nil }
      state.ending = ending
      if let last {
        state.responses.bytes += last.count
        if state.responses.reader == nil { state.responses.message = last }
      }
      let ended = state
      state.responses.reader = nil
      state.responses.writer = nil
      state.onEnd = nil
      state.requests = Handoff(bytes: state.requests.bytes)
      if case .failure = ending { state.responses.message = nil }
      return ended
    }
    guard let ended else { return false }
    ended.responses.writer?.resume(returning: false)
    ended.requests.reader?.resume(returning: nil)
    ended.requests.writer?.resume(returning: false)
    if let reader = ended.responses.reader {
      // The reader waits only when no message is queued.
      if let last {
        reader.resume(returning: last)
      } else if case .success(let answer?) = ending {
        state.withLock { $0.ending = .success(nil) }
        reader.resume(returning: answer)
      } else {
        reader.resume(with: ending.mapError { $0 as any Error })
      }
    }
    let code: RPCError.Code? = if case .failure(let error) = ending { error.code } else { nil }
    ended.observer?.callFinished(
      path: ended.path, code: code, duration: .now - started, requestBytes: request.count + ended.requests.bytes,
      responseBytes: responseBytes ?? ended.responses.bytes)
    ended.onEnd?()
    return true
  }
}

/// One direction of an in-process stream: at most one message in flight,
/// its writer waiting until the reader takes it (as gRPC's flow control
/// makes a sender wait).
struct Handoff {
  var message: Data?
  var writer: CheckedContinuation<Bool, Never>?
  var reader: CheckedContinuation<Data?, any Error>?
  /// Bytes handed over so far.
  var bytes = 0

  /// Takes `bytes` from `writer`: returns the waiting reader to give them
  /// to (the writer goes on), or keeps both until a reader comes.
  mutating func offer(_ bytes: Data, from writer: CheckedContinuation<Bool, Never>)
    -> CheckedContinuation<Data?, any Error>?
  {
    self.bytes += bytes.count
    if let reader = reader.take() { return reader }
    message = bytes
    self.writer = writer
    return nil
  }
}
