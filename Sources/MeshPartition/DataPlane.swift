import Foundation
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import Synchronization

/// The data plane of one partition: tensors this stage produced, held until
/// the neighbouring stage fetches them, and clients to fetch from neighbours.
/// Activations and gradients go partition to partition; the coordinator only
/// passes references along.
public final class DataPlane: Sendable {
  private let advertised: Mutex<String>
  private let transport: TransportConfiguration
  private let held = Mutex<[String: Tensor]>([:])
  private let peers = Mutex<[String: RPCClient]>([:])

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

  /// Keeps a tensor for a neighbour and returns the reference to pass on.
  func offer(_ tensor: Tensor, key: String) -> Pipemesh_V1_TensorReference {
    held.withLock { $0[key] = tensor }
    return .with {
      $0.endpoint = endpoint
      $0.key = key
    }
  }

  /// Hands out a held tensor (FetchTensor); NOT_FOUND names the key.
  func take(_ key: String, release: Bool) throws -> Tensor {
    let tensor = held.withLock { release ? $0.removeValue(forKey: key) : $0[key] }
    guard let tensor else {
      throw RPCError(.notFound, "this partition holds no tensor \(key) (never produced, or fetched already)")
    }
    return tensor
  }

  /// Drops every held tensor whose key starts with `prefix` (a job or a step).
  func drop(prefix: String) {
    held.withLock { held in
      for key in held.keys where key.hasPrefix(prefix) { held[key] = nil }
    }
  }

  /// Bytes of tensors waiting to be fetched.
  public var heldBytes: Int { held.withLock { $0.values.reduce(0) { $0 + $1.scalarCount * 4 } } }

  /// A tensor given inline or by reference; references to this partition are
  /// read locally, others fetched from the peer (and released there).
  func resolve(_ source: Pipemesh_V1_TensorSource, what: String) async throws -> Tensor {
    switch source.source {
    case .inline(let wire):
      return try Tensor(wire: wire, what: what)
    case .reference(let reference):
      if reference.endpoint == endpoint { return try take(reference.key, release: true) }
      let peer = try client(for: reference.endpoint)
      let wire = try await peer.call(PartitionMethods.fetchTensor, .with {
        $0.key = reference.key
        $0.release = true
      })
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
