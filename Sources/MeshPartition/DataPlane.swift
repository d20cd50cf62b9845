import Foundation
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import Synchronization

/// The data plane of one partition: tensors this stage produced, held until
/// the neighbouring stage fetches them, and clients to fetch from neighbours.
/// Activations and gradients go partition to partition; the coordinator only
/// passes references along, often before the tensor exists: a fetch can
/// wait for it to be offered.
public final class DataPlane: Sendable {
  /// How long a stage's fetch waits for its neighbour to produce a tensor,
  /// at most: a bound for a coordinator that vanished mid-step. (A committed
  /// step or an unloaded job ends the wait at once; the coordinator unloads
  /// a failed job.)
  static let fetchWaitLimit = Duration.seconds(3600)

  /// How long a training step's tensor stays held after a fetch released
  /// it, at most: long enough for the fetcher's call to be sent again
  /// (`CallRetry`), not forever for a step that is never dropped.
  static let releasedTensorKept = Duration.seconds(60)

  /// How long a tensor that goes with its fetch (an inference's) stays held
  /// when no fetch takes it: the next stage fetches it as soon as the
  /// coordinator hears of it, unless the request was given up in between,
  /// which would otherwise leave it held until its job is unloaded. Ten
  /// minutes by default, past any inference's deadline, however loaded the
  /// host.
  let unfetchedKept: Duration

  private let advertised: Mutex<String>
  private let dialer: any RPCDialer
  /// Memory files for same-host fetches; nil when they are off.
  private let sharedBuffers: SharedBufferPool?
  private let held = Mutex(Held())
  private let peers = Mutex<[String: any RPCChannel]>([:])

  /// Tensors by key, the fetches waiting for keys not offered yet, and the
  /// steps and jobs dropped (whose tensors will never come).
  private struct Held {
    var tensors: [DataPlaneKey: Tensor] = [:]
    var waiting: [DataPlaneKey: [Waiter]] = [:]
    var nextWaiter = 0
    /// Training steps 1 through this one are committed here, by job.
    var committedThrough: [String: Int64] = [:]
    /// Unloaded jobs (one short name per job run).
    var droppedJobs: Set<String> = []
    /// When a fetch released each training tensor still held.
    var released: [DataPlaneKey: ContinuousClock.Instant] = [:]
    /// When each tensor that goes with its fetch, still held, was offered.
    var offered: [DataPlaneKey: ContinuousClock.Instant] = [:]

    /// Whether a fetch that releases the tensor under `key` takes it away: an
    /// inference's (its call is not sent again, and no commit drops it), and
    /// a ring reduction's part (fetched once: a ring whose fetch breaks off
    /// after the part went out fails its step, and the job runs it again). A training step's
    /// activation or gradient stays held until its step is dropped, or
    /// `releasedTensorKept` after the release (the last step of a job whose
    /// stages stay loaded to serve is never dropped), so that a fetch whose
    /// chunks were lost on the way (sent, then the connection broke) finds it
    /// when the fetcher's call is sent again.
    static func goesWithItsFetch(_ key: DataPlaneKey) -> Bool {
      key.kind == .inference || key.kind == .reduction || key.step < 1
    }

    /// Notes the release of a training tensor (the first one counts).
    mutating func noteRelease(of key: DataPlaneKey) {
      if released[key] == nil { released[key] = .now }
    }

    /// Drops the tensors dropped steps and jobs held, the released ones
    /// kept past `releasedTensorKept`, and those that go with their fetch
    /// offered more than `unfetchedKept` ago.
    mutating func sweep(unfetchedKept: Duration) {
      let now = ContinuousClock.now
      let (releasedBefore, offeredBefore) = (now - DataPlane.releasedTensorKept, now - unfetchedKept)
      for key in tensors.keys
      where isExpired(key) || released[key].map({ $0 < releasedBefore }) == true
        || offered[key].map({ $0 < offeredBefore }) == true
      {
        tensors[key] = nil
      }
      released = released.filter { tensors[$0.key] != nil }
      offered = offered.filter { tensors[$0.key] != nil }
    }

    /// Whether no tensor will be offered under `key` any more: its job is
    /// unloaded or its step committed (so a fetch waiting for it ends).
    func isDropped(_ key: DataPlaneKey) -> Bool { isCommitted(key, stepsBefore: 0) }

    /// Whether a held tensor under `key` is dropped: its job is unloaded or
    /// its step is older than the last committed one. The last committed
    /// step's tensors stay until the next commit, because a stage commits as
    /// soon as its own calls are answered, while a neighbour may still fetch
    /// what it produced.
    func isExpired(_ key: DataPlaneKey) -> Bool { isCommitted(key, stepsBefore: 1) }

    private func isCommitted(_ key: DataPlaneKey, stepsBefore: Int64) -> Bool {
      droppedJobs.contains(key.job)
        || (key.step >= 1 && key.step <= committedThrough[key.job, default: 0] - stepsBefore)
    }
  }

  private struct Waiter {
    let id: Int
    let release: Bool
    let continuation: CheckedContinuation<Tensor, any Error>
  }

  /// `endpoint` may be set later, once the server knows its port;
  /// `unfetchedKept` bounds how long an inference's tensor that no fetch
  /// takes stays held; with `sharedMemory`, tensors pass between partitions
  /// of one host through memory files (`SharedBuffer`) both ways: fetched
  /// from peers and served to them.
  public init(
    endpoint: String = "", dialer: any RPCDialer, unfetchedKept: Duration = .seconds(600), sharedMemory: Bool = true
  ) {
    advertised = Mutex(endpoint)
    self.dialer = dialer
    self.unfetchedKept = unfetchedKept
    sharedBuffers = sharedMemory ? SharedBufferPool() : nil
  }

  /// Whether a fetch's shared buffer is written into (else it is answered in chunks).
  var servesSharedBuffers: Bool { sharedBuffers != nil }

  /// `host:port` other partitions dial to fetch from this one.
  public var endpoint: String {
    get { advertised.withLock { $0 } }
    set { advertised.withLock { $0 = newValue } }
  }

  /// Keeps a tensor for a neighbour (or hands it to the fetches already
  /// waiting for it) and returns the reference to pass on.
  @discardableResult
  func offer(_ tensor: Tensor, key: DataPlaneKey) -> TensorReference {
    hold(tensor, key: key)
    return TensorReference(endpoint: endpoint, key: key)
  }

  private func hold(_ tensor: Tensor, key: DataPlaneKey) {
    let served = held.withLock { held -> [Waiter] in
      held.sweep(unfetchedKept: unfetchedKept)
      // Offered after its job was unloaded or its step dropped (a computation that ended late).
      guard !held.isExpired(key) else { return [] }
      let waiters = held.waiting.removeValue(forKey: key) ?? []
      guard Held.goesWithItsFetch(key) else {
        held.tensors[key] = tensor
        if waiters.contains(where: \.release) { held.noteRelease(of: key) }
        return waiters
      }
      // Every waiter that only reads gets it; the first that releases takes it.
      var served = waiters.filter { !$0.release }
      if let taker = waiters.first(where: \.release) {
        served.append(taker)
        let others = waiters.filter { $0.release && $0.id != taker.id }
        if !others.isEmpty { held.waiting[key] = others }
      } else {
        held.tensors[key] = tensor
        held.offered[key] = .now
      }
      return served
    }
    for waiter in served { waiter.continuation.resume(returning: tensor) }
  }

  /// Hands out a held tensor (FetchTensor). With `wait`, a tensor not offered
  /// yet is awaited until it is, the task is cancelled, or its step is
  /// dropped; without, NOT_FOUND names the key.
  func take(_ key: DataPlaneKey, release: Bool, wait: Bool = false) async throws -> Tensor {
    let id = held.withLock { held -> Int in
      held.nextWaiter += 1
      return held.nextWaiter
    }
    return try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Tensor, any Error>) in
        enum Outcome {
          case found(Tensor)
          case missing, dropped, cancelled, waiting
        }
        // Decided under the lock, which a cancellation also takes: a waiter
        // is either queued (and resumed by offer, drop or cancellation) or not.
        let outcome = held.withLock { held -> Outcome in
          held.sweep(unfetchedKept: unfetchedKept)
          let taken = release && Held.goesWithItsFetch(key)
          if let tensor = taken ? held.tensors.removeValue(forKey: key) : held.tensors[key] {
            if release, !taken { held.noteRelease(of: key) }
            return .found(tensor)
          }
          guard wait else { return .missing }
          guard !held.isDropped(key) else { return .dropped }
          guard !Task.isCancelled else { return .cancelled }
          held.waiting[key, default: []].append(Waiter(id: id, release: release, continuation: continuation))
          return .waiting
        }
        switch outcome {
        case .found(let tensor): continuation.resume(returning: tensor)
        case .missing:
          continuation.resume(
            throwing: StageError(
              .tensorNotHeld,
              "this partition holds no tensor \(key) (never produced, or fetched already)"))
        case .dropped: continuation.resume(throwing: Self.droppedError(key))
        case .cancelled: continuation.resume(throwing: CancellationError())
        case .waiting: break
        }
      }
    } onCancel: {
      let waiter = held.withLock { held -> Waiter? in
        guard let index = held.waiting[key]?.firstIndex(where: { $0.id == id }) else { return nil }
        defer { if held.waiting[key]?.isEmpty == true { held.waiting[key] = nil } }
        return held.waiting[key]!.remove(at: index)
      }
      waiter?.continuation.resume(throwing: CancellationError())
    }
  }

  /// Marks a job's training steps 1 through `step` committed: ends the
  /// fetches waiting for their tensors (none will be offered any more) and
  /// drops what is still held of the steps before `step`. Tensors of `step`
  /// itself stay fetchable until the next commit.
  func drop(job: String, throughStep step: Int64) {
    drop { held in
      held.committedThrough[job] = max(held.committedThrough[job, default: 0], step)
    }
  }

  /// Drops every tensor of a job (unloaded) and ends the fetches waiting for
  /// them; later fetches of them fail at once.
  func drop(job: String) {
    drop { held in
      held.droppedJobs.insert(job)
      held.committedThrough[job] = nil
    }
  }

  private func drop(_ mark: (inout Held) -> Void) {
    let ended = held.withLock { held -> [(DataPlaneKey, Waiter)] in
      mark(&held)
      held.sweep(unfetchedKept: unfetchedKept)
      var ended: [(DataPlaneKey, Waiter)] = []
      for (key, waiters) in held.waiting where held.isDropped(key) {
        ended += waiters.map { (key, $0) }
        held.waiting[key] = nil
      }
      return ended
    }
    for (key, waiter) in ended { waiter.continuation.resume(throwing: Self.droppedError(key)) }
  }

  private static func droppedError(_ key: DataPlaneKey) -> StageError {
    StageError(.stepEnded, "tensor \(key) will not be produced: its step was committed or its job unloaded")
  }

  /// Bytes of tensors waiting to be fetched.
  public var heldBytes: Int { held.withLock { $0.tensors.values.reduce(0) { $0 + $1.scalarCount * 4 } } }

  /// The tensor `reference` names: read locally when it is this
  /// partition's, else fetched from the peer (and released there), in
  /// `encoding` when one is given (rounded on the way). With `wait`, it may
  /// be a tensor the peer has not produced yet: the fetch waits for it.
  /// Other partitions are dialled only when `allowed` lists them.
  func fetch(
    _ reference: TensorReference, wait: Bool, what: String, peers allowed: Set<String>,
    encoding: HalfPrecision? = nil
  ) async throws -> Tensor {
    if reference.endpoint == endpoint {
      return try await take(reference.key, release: true, wait: wait)
    }
    guard allowed.contains(reference.endpoint) else {
      throw StageError(
        .strangerPeer,
        "\(what) is named at \(reference.endpoint.echoed), which is not one of the job's partitions: "
          + "a stage fetches only from the peers its LoadStage named")
    }
    let peer = try client(for: reference.endpoint)
    let buffer = sharedBuffers?.take()
    let offered = buffer?.offer()
    do {
      let tensor = try await Self.fetch(
        from: peer,
        .with {
          $0.key = reference.key.wire
          $0.release = true
          $0.wait = wait
          if let encoding { $0.encoding = encoding.wire }
          if let offered { $0.sharedBuffer = offered }
        }, what: what, options: CallOptions(timeout: wait ? Self.fetchWaitLimit : nil),
        sharedBuffer: offered == nil ? nil : buffer)
      if let buffer { sharedBuffers?.giveBack(buffer) }
      return tensor
    } catch let error as RPCError where error.code == .deadlineExceeded && wait {
      throw RPCError(
        .deadlineExceeded,
        "\(what) (\(reference.key.wire.echoed)) did not come from \(reference.endpoint) within \(Self.fetchWaitLimit)")
    } catch let error as RPCError where error.code == .unavailable {
      // This partition is up: say that it is the peer that is not.
      throw RPCError(.unavailable, "the partition at \(reference.endpoint) does not answer: \(error.message)")
    }
  }

  /// The most bytes of a tensor one FetchTensor message carries.
  static let chunkBytes = 4 << 20

  /// Sends a tensor as FetchTensor answers it: chunks of at most
  /// `chunkBytes`, straight from the tensor's storage, or rounded into
  /// `encoding` when one is given; or, when the fetcher offered a
  /// `sharedBuffer` that this process may write, the bytes in it and one
  /// chunk that says so. Returns what became of the shared buffer
  /// (`elsewhere` when none was offered).
  @discardableResult
  static func send(
    _ tensor: Tensor, encoding: HalfPrecision? = nil, sharedBuffer: Pipemesh_V1_SharedBuffer? = nil,
    to writer: ResponseWriter<Pipemesh_V1_TensorChunk>
  ) async throws -> SharedBuffer.Outcome {
    let chunkScalars = chunkBytes / (encoding == nil ? 4 : 2)
    let scaleExponent = encoding == .float16 ? tensor.float16ScaleExponent(elements: 0..<tensor.scalarCount) : 0
    func bytes(_ elements: Range<Int>) -> Data {
      if let encoding {
        tensor.littleEndianData(encoding, elements: elements, scaleExponent: scaleExponent)
      } else {
        tensor.sharedLittleEndianData(elements: elements)
      }
    }
    let outcome =
      sharedBuffer.map { SharedBuffer.write({ bytes(0..<tensor.scalarCount) }, into: $0) } ?? .elsewhere
    if outcome == .written {
      try await writer.writeLast(
        .with {
          $0.dtype = encoding?.wire ?? .float32
          $0.shape = tensor.shape.map { Int64($0) }
          $0.scaleExponent = Int32(scaleExponent)
          $0.inSharedBuffer = true
        })
      return outcome
    }
    var first = 0
    repeat {
      let elements = first..<min(tensor.scalarCount, first + chunkScalars)
      var chunk = Pipemesh_V1_TensorChunk()
      if first == 0 {
        chunk.dtype = encoding?.wire ?? .float32
        chunk.shape = tensor.shape.map { Int64($0) }
        chunk.scaleExponent = Int32(scaleExponent)
      }
      chunk.data = bytes(elements)
      first = elements.upperBound
      if first < tensor.scalarCount {
        try await writer.write(chunk)
      } else {
        try await writer.writeLast(chunk)
      }
    } while first < tensor.scalarCount
    return outcome
  }

  /// Fetches a tensor from a partition's data plane, putting its chunks
  /// together as they arrive (in the request's encoding, widened back to
  /// float32); DATA_LOSS when they do not make up the tensor their first one
  /// announced. It returns once it holds them, reading neither the stream's
  /// end (which comes with the last chunk) nor anything after it. Memory
  /// grows with the bytes received, never with the size a peer announces.
  public static func fetch(
    from partition: any RPCChannel, _ request: Pipemesh_V1_FetchTensorRequest, what: String = "fetched tensor",
    options: CallOptions = .init()
  ) async throws -> Tensor {
    try await fetch(from: partition, request, what: what, options: options, sharedBuffer: nil)
  }

  /// `fetch(from:_:what:options:)` with `request.shared_buffer` naming
  /// `sharedBuffer` (offered), in which the answer may then be.
  static func fetch(
    from partition: any RPCChannel, _ request: Pipemesh_V1_FetchTensorRequest, what: String = "fetched tensor",
    options: CallOptions = .init(), sharedBuffer: SharedBuffer? = nil
  ) async throws -> Tensor {
    let encoding = try HalfPrecision(transfer: request.encoding, field: "FetchTensorRequest.encoding")
    let width = encoding == nil ? 4 : 2
    // float16's scale brings a largest magnitude of 2^-149 … 2^127 into [2^14, 2^15).
    let scales = encoding == .float16 ? -113...163 : 0...0
    var announced: (shape: [Int64], bytes: Int, scaleExponent: Int)?
    // Kept as they came and copied once into the tensor (appending would copy them again).
    var chunks: [Data] = []
    var received = 0
    for try await chunk in partition.stream(PartitionMethods.fetchTensor, request, options: options) {
      if announced == nil {
        guard chunk.dtype == encoding?.wire ?? .float32, chunk.shape.allSatisfy({ $0 >= 0 && $0 <= Int32.max }),
          let count = Tensor.checkedCount(of: chunk.shape.map { Int($0) }), count <= Int.max / width,
          scales.contains(Int(chunk.scaleExponent))
        else {
          throw StageError(
            .peerAnswerDamaged,
            "\(what): \(partition.target) announced \(chunk.dtype) of shape \(chunk.shape), "
              + "scaled by 2^\(chunk.scaleExponent), where \(encoding?.rawValue ?? "float32") was asked")
        }
        announced = (chunk.shape, count * width, Int(chunk.scaleExponent))
        if chunk.inSharedBuffer {
          guard let sharedBuffer, request.hasSharedBuffer else {
            throw StageError(
              .peerAnswerDamaged,
              "\(what): \(partition.target) set TensorChunk.in_shared_buffer, but the fetch offered no "
                + "FetchTensorRequest.shared_buffer")
          }
          guard chunk.data.isEmpty else {
            throw StageError(
              .peerAnswerDamaged,
              "\(what): \(partition.target) set TensorChunk.in_shared_buffer and sent data beside it")
          }
          return try tensor(
            shape: chunk.shape, encoding: encoding, scaleExponent: Int(chunk.scaleExponent),
            in: sharedBuffer, offered: request.sharedBuffer, what: "\(what): \(partition.target)")
        }
      } else {
        guard chunk.shape.isEmpty, chunk.scaleExponent == 0 else {
          throw StageError(.peerAnswerDamaged, "\(what): \(partition.target) announced a second shape or scale")
        }
        guard !chunk.inSharedBuffer else {
          throw StageError(
            .peerAnswerDamaged, "\(what): \(partition.target) set TensorChunk.in_shared_buffer on a later chunk")
        }
      }
      chunks.append(chunk.data)
      received += chunk.data.count
      guard received <= announced!.bytes else {
        throw StageError(.peerAnswerDamaged, "\(what): \(partition.target) sent more than the tensor it announced")
      }
      // Whole: the stream's end, which a later read would wait for, adds nothing.
      if received == announced!.bytes { break }
    }
    guard let announced, received == announced.bytes else {
      throw StageError(
        .peerAnswerDamaged,
        "\(what): \(partition.target) ended the fetch after \(received) of \(announced?.bytes ?? 0) bytes")
    }
    do {
      let shape = announced.shape.map { Int($0) }
      guard let encoding else { return try Tensor(dtype: .float32, shape: shape, littleEndianChunks: chunks) }
      return try Tensor(
        shape: shape, encoding,
        littleEndianBytes: chunks.count == 1 ? chunks[0] : chunks.reduce(into: Data()) { $0.append($1) },
        scaleExponent: announced.scaleExponent)
    } catch let error as TensorError {
      throw StageError(.peerAnswerDamaged, "\(what): \(error.message)")
    }
  }

  /// The tensor a peer wrote into `buffer` (as `offered`): `shape`'s
  /// elements in `encoding` (float32 when nil), read straight into the
  /// tensor when they are float32. DATA_LOSS, with nothing allocated, when
  /// the buffer does not hold the answer (unmarked, or short of the bytes).
  private static func tensor(
    shape wireShape: [Int64], encoding: HalfPrecision?, scaleExponent: Int, in buffer: SharedBuffer,
    offered: Pipemesh_V1_SharedBuffer, what: String
  ) throws -> Tensor {
    let shape = wireShape.map { Int($0) }
    let count = Tensor.checkedCount(of: shape)!
    let missing = StageError(
      .peerAnswerDamaged,
      "\(what) set TensorChunk.in_shared_buffer, but the shared buffer does not hold the \(shape) tensor announced")
    guard buffer.holdsAnswer(to: offered, byteCount: count * (encoding == nil ? 4 : 2)) else { throw missing }
    do {
      guard let encoding else {
        return try Tensor(dtype: .float32, shape: shape) { if !buffer.read(into: $0) { throw missing } }
      }
      var bytes = Data(count: count * 2)
      guard bytes.withUnsafeMutableBytes({ buffer.read(into: $0) }) else { throw missing }
      return try Tensor(shape: shape, encoding, littleEndianBytes: bytes, scaleExponent: scaleExponent)
    } catch let error as TensorError {
      throw StageError(.peerAnswerDamaged, "\(what): \(error.message)")
    }
  }

  /// Reconnects the channels to `endpoints` at once, waiting up to
  /// `timeout` for them: a coordinator loads a stage only once its peers
  /// answer, so a channel still waiting out a failed connection (to a peer
  /// that restarted) would fail the job's first fetches for nothing.
  func reconnect(to endpoints: [String], timeout: Duration) async {
    let channels = peers.withLock { peers in Set(endpoints).compactMap { peers[$0] } }
    await withTaskGroup(of: Void.self) { group in
      for channel in channels { group.addTask { _ = await channel.reconnect(timeout: timeout) } }
    }
  }

  private func client(for endpoint: String) throws -> any RPCChannel {
    if let client = peers.withLock({ $0[endpoint] }) { return client }
    let client = try dialer.channel(to: endpoint)
    return peers.withLock { peers in
      if let existing = peers[endpoint] { return existing }
      peers[endpoint] = client
      return client
    }
  }
}
