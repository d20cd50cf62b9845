import Foundation
import MeshPSClient
import MeshProto
import MeshRPC
import MeshWire
import Synchronization

/// The pool's RPCs: partitions join it and keep their lease, leave it when
/// they stop, and any user of the coordinator reads it (with the ps tasks).
extension CoordinatorService {
  /// How long a joined partition stays in the pool without another
  /// JoinPool; it renews every third of it.
  static let memberLease = Duration.seconds(15)

  func registerPool(with router: inout RPCRouter) {
    router.unary(CoordinatorMethods.joinPool) { [self] request, context in
      try await checkMember(request.endpoint, context)
      let member = PartitionPool.Member(
        endpoint: request.endpoint, client: try cluster.dialer.channel(to: request.endpoint))
      if !pool.members.contains(where: { $0.endpoint == request.endpoint }) {
        // A member the coordinator cannot reach would only fail the jobs placed on it.
        if let error = await PartitionPool.ask(member, CallOptions(timeout: .seconds(2))).error {
          throw RPCError(
            .failedPrecondition,
            "the coordinator cannot reach the partition at \(request.endpoint.echoed) (\(error)): "
              + "give the partition the --advertise address others dial it at")
        }
        try await store.addPoolMember(request.endpoint, at: Date().timeIntervalSince1970)
      }
      if pool.join(member, lease: Self.memberLease) {
        _ = await pool.ask(CallOptions(timeout: .seconds(2)), only: [request.endpoint])
      }
      return .with { $0.leaseSeconds = Self.memberLease.seconds }
    }
    router.unary(CoordinatorMethods.leavePool) { [self] request, context in
      try await checkMember(request.endpoint, context)
      let run = try pool.leave(request.endpoint)
      return .with { $0.job = run.map { PartitionPool.jobName(ofRun: $0) } ?? "" }
    }
    router.unary(CoordinatorMethods.getPool) { [self] _, context in
      _ = try caller(context)
      return .with {
        $0.members = pool.status
        $0.parameterServers = parameterServerWatch.status
      }
    }
  }

  /// Admits a pool call about `endpoint`: under mutual TLS from a
  /// partition's certificate; otherwise from an admin (when the coordinator
  /// has tokens) or anyone (when it authenticates no one), and only about
  /// the caller's own address: a partition joins and leaves only itself.
  private func checkMember(_ endpoint: String, _ context: ServerContext) async throws {
    guard endpoint.utf8.count <= 255, let colon = endpoint.lastIndex(of: ":"), colon != endpoint.startIndex,
      let port = Int(endpoint[endpoint.index(after: colon)...]), (1...65535).contains(port)
    else {
      throw RPCError(
        .invalidArgument,
        "endpoint is '\(endpoint.echoed)'; give the HOST:PORT the partition is dialled at (port 1 to 65535)")
    }
    if let identity = context.peerIdentity {
      guard MeshRole(commonName: identity) == .partition else {
        throw RPCError(
          .permissionDenied,
          "the certificate '\(identity.echoed)' is not a partition's: only partitions (partition or partition.NAME) "
            + "join or leave the pool")
      }
      return
    }
    if tokens != nil {
      let caller = try caller(context)
      guard caller.isAdmin else {
        throw RPCError(
          .permissionDenied,
          "\(caller.name) may not change the pool: only an admin's token or a partition's certificate may")
      }
    }
    let host = String(endpoint[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
    guard let caller = Self.address(ofPeer: context.peer), await Self.resolve(host).contains(caller) else {
      throw RPCError(
        .permissionDenied,
        "endpoint \(endpoint.echoed) is not the caller's own address (\(context.peer.echoed)): "
          + "without mutual TLS a partition joins and leaves only itself")
    }
  }

  /// The IP address in a gRPC peer (`ipv4:10.0.0.7:40312`, `ipv6:[::1]:40312`).
  static func address(ofPeer peer: String) -> String? {
    let parts = peer.split(separator: ":", maxSplits: 1)
    guard parts.count == 2, ["ipv4", "ipv6"].contains(parts[0]), let colon = parts[1].lastIndex(of: ":") else {
      return nil
    }
    return canonical(parts[1][..<colon].trimmingCharacters(in: CharacterSet(charactersIn: "[]")))
  }

  /// `addresses(of:)` on a thread of its own: a name lookup may block for
  /// seconds, which no executor thread of the service should.
  static func resolve(_ host: String) async -> Set<String> {
    await withCheckedContinuation { continuation in
      Thread.detachNewThread { continuation.resume(returning: addresses(of: host)) }
    }
  }

  /// The numeric addresses `host` names (a literal, or resolved).
  static func addresses(of host: String) -> Set<String> {
    var hints = addrinfo()
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    var found: UnsafeMutablePointer<addrinfo>?
    guard getaddrinfo(host, nil, &hints, &found) == 0 else { return [] }
    defer { freeaddrinfo(found) }
    var addresses: Set<String> = []
    var next = found
    while let entry = next {
      var text = [CChar](repeating: 0, count: Int(NI_MAXHOST))
      if getnameinfo(
        entry.pointee.ai_addr, entry.pointee.ai_addrlen, &text, socklen_t(text.count), nil, 0, NI_NUMERICHOST)
        == 0, let address = canonical(String(cString: text))
      {
        addresses.insert(address)
      }
      next = entry.pointee.ai_next
    }
    return addresses
  }

  /// An address as one spelling: IPv4-mapped IPv6 as IPv4.
  private static func canonical(_ address: String) -> String? {
    address.hasPrefix("::ffff:") && address.contains(".") ? String(address.dropFirst(7)) : address
  }
}

/// The ps tasks as the coordinator last asked them for their Stats (every
/// few seconds), for GetPool: asked there, a task that does not answer would
/// hold up every reader of the pool.
final class ParameterServerWatch: Sendable {
  private let tasks: Mutex<[Pipemesh_V1_ParameterServerTask]>

  /// Tasks not asked yet: neither an error nor stats.
  init(endpoints: [String]) {
    tasks = Mutex(endpoints.map { endpoint in .with { $0.endpoint = endpoint } })
  }

  var status: [Pipemesh_V1_ParameterServerTask] { tasks.withLock { $0 } }

  /// Each `period` until the task is cancelled: asks every task of `client`
  /// for its Stats, each within `timeout`.
  func watch(_ client: ParameterServerClient, every period: Duration, timeout: Duration) async {
    while !Task.isCancelled {
      let answers = await client.stats(within: timeout).map { task in
        Pipemesh_V1_ParameterServerTask.with {
          $0.endpoint = task.endpoint
          switch task.stats {
          case .success(let stats): $0.stats = stats
          case .failure(let error):
            $0.error = "\(error)"
            $0.silent = (error as? RPCError).map { [.deadlineExceeded, .unavailable].contains($0.code) } ?? false
          }
        }
      }
      tasks.withLock { $0 = answers }
      try? await Task.sleep(for: period)
    }
  }
}
