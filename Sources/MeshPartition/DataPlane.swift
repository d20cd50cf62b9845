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
  /// at most: a bound for a coordinator that vanished mid-step (a failed
  /// step is dropped, which ends the wait at once).
  static let fetchWaitLimit = Duration.seconds(600)

  private let advertised: Mutex<String>
  private let transport: TransportConfiguration
  private let held = Mutex(Held())
  private let peers = Mutex<[String: RPCClient]>([:])

  /// Tensors by key, and the fetches waiting for keys not offered yet.
  private struct Held {
    var tensors: [String: Tensor] = [:]
    var waiting: [String: [Waiter]] = [:]
    var nextWaiter = 0
  }

  private struct Waiter {
    let id: Int
    let release: Bool
    let continuation: CheckedContinuation<Tensor, any Error>
  }

  /// `endpoint` may be set later, once the server knows its port.
  public init(endpoint: String = "", transport: TransportConfiguration) {
    advertised = Mutex(endpoint)
    self.transport = transport
  }

  /// `host:port` other partitions dial to fetch from this one.
  public var endpoint: String {
    get { advertised.withLock { $0 } }
    set { advertised.withLock { $0 = newValue } }
  }

  /// Keeps a tensor for a neighbour (or hands it to the fetches already
  /// waiting for it) and returns the reference to pass on.
  func offer(_ tensor: Tensor, key: String) -> Pipemesh_V1_TensorReference {
    let served = held.withLock { held -> [Waiter] in
      let waiters = held.waiting.removeValue(forKey: key) ?? []
      // Every waiter that only reads gets it; the first that releases takes it.
      var served = waiters.filter { !$0.release }
      if let taker = waiters.first(where: \.release) {
        served.append(taker)
        let others = waiters.filter { $0.release && $0.id != taker.id }
        if !others.isEmpty { held.waiting[key] = others }
      } else {
        held.tensors[key] = tensor
      }
      return served
    }
    for waiter in served { waiter.continuation.resume(returning: tensor) }
    return .with {
      $0.endpoint = endpoint
      $0.key = key
    }
  }

  /// Hands out a held tensor (FetchTensor). With `wait`, a tensor not offered
  /// yet is awaited until it is, the task is cancelled, or its step is
  /// dropped; without, NOT_FOUND names the key.
  func take(_ key: String, release: Bool, wait: Bool = false) async throws -> Tensor {
    let id = held.withLock { held -> Int in
      held.nextWaiter += 1
      return held.nextWaiter
    }
    return try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Tensor, any Error>) in
        enum Outcome { case found(Tensor), missing, cancelled, waiting }
        // Decided under the lock, which a cancellation also takes: a waiter
        // is either queued (and resumed by offer, drop or cancellation) or not.
        let outcome = held.withLock { held -> Outcome in
          if let tensor = release ? held.tensors.removeValue(forKey: key) : held.tensors[key] { return .found(tensor) }
          guard wait else { return .missing }
          guard !Task.isCancelled else { return .cancelled }
          held.waiting[key, default: []].append(Waiter(id: id, release: release, continuation: continuation))
          return .waiting
        }
        switch outcome {
        case .found(let tensor): continuation.resume(returning: tensor)
        case .missing:
          continuation.resume(throwing: RPCError(.notFound, "this partition holds no tensor \(key) (never produced, or fetched already)"))
        case .cancelled: continuation.resume(throwing: CancellationError())
        case .waiting: break
        }
      }
    } onCancel: {
      let waiter = held.withLock { held -> Waiter? in
        guard let index = held.waiting[key]?.firstIndex(where: { $0.id == id }) else { return nil }
        return held.waiting[key]!.remove(at: index)
      }
      waiter?.continuation.resume(throwing: CancellationError())
    }
  }

  /// Drops every held tensor whose key starts with `prefix` (a job or a
  /// step), and ends the fetches waiting for such keys.
  func drop(prefix: String) {
    let ended = held.withLock { held -> [(String, Waiter)] in
      for key in held.tensors.keys where key.hasPrefix(prefix) { held.tensors[key] = nil }
      var ended: [(String, Waiter)] = []
      for (key, waiters) in held.waiting where key.hasPrefix(prefix) {
        ended += waiters.map { (key, $0) }
        held.waiting[key] = nil
      }
      return ended
    }
    for (key, waiter) in ended {
      waiter.continuation.resume(throwing: RPCError(.aborted, "tensor \(key) will not be produced: its step or job was dropped"))
    }
  }

  /// Bytes of tensors waiting to be fetched.
  public var heldBytes: Int { held.withLock { $0.tensors.values.reduce(0) { $0 + $1.scalarCount * 4 } } }

  /// A tensor given inline or by reference; references to this partition are
  /// read locally, others fetched from the peer (and released there). With
  /// `wait`, a reference may name a tensor the peer has not produced yet:
  /// the fetch waits for it.
  func resolve(_ source: Pipemesh_V1_TensorSource, wait: Bool, what: String) async throws -> Tensor {
    switch source.source {
    case .inline(let wire):
      return try Tensor(wire: wire, what: what)
    case .reference(let reference):
      if reference.endpoint == endpoint { return try await take(reference.key, release: true, wait: wait) }
      let peer = try client(for: reference.endpoint)
      let wire = try await peer.call(
        PartitionMethods.fetchTensor,
        .with {
          $0.key = reference.key
          $0.release = true
          $0.wait = wait
        }, options: CallOptions(timeout: wait ? Self.fetchWaitLimit : nil))
      return try Tensor(wire: wire, what: what)
    case nil:
      throw RPCError(.invalidArgument, "\(what) is missing")
    }
  }

  private func client(for endpoint: String) throws -> RPCClient {
    if let client = peers.withLock({ $0[endpoint] }) { return client }
    let client = try RPCClient(target: endpoint, transport: transport)
    return peers.withLock { peers in
      if let existing = peers[endpoint] { return existing }
      peers[endpoint] = client
      return client
    }
  }
}
