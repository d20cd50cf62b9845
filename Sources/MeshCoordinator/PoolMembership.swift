import Foundation
import MeshPSClient
import MeshProto
import MeshRPC
import MeshWire
import Synchronization

/// The pool's RPCs: partitions join it and keep their lease, leave it when
/// they stop, and any user of the coordinator reads it (with the ps tasks,
/// which may keep a lease too).
extension CoordinatorService {
  /// How long a joined partition stays in the pool without another
  /// JoinPool; it renews every third of it.
  static let memberLease = Duration.seconds(15)

  func registerPool(with router: inout RPCRouter) {
    router.unary(CoordinatorMethods.joinPool) { [self] request, context in
      if request.parameterServer { return try await renewParameterServerLease(request, context) }
      try await checkMember(request.endpoint, context, as: .partition)
      let member = PartitionPool.Member(
        endpoint: request.endpoint, client: try cluster.dialer.channel(to: request.endpoint))
      if !pool.members.contains(where: { $0.endpoint == request.endpoint }) {
        // A member the coordinator cannot reach would only fail the jobs placed on it.
        if let error = await PartitionPool.ask(member, CallOptions(timeout: .seconds(2))).error {
          throw CoordinatorError(
            .unsuitableMesh,
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
      try await checkMember(request.endpoint, context, as: .partition)
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

  /// A ps task's lease renewed: one of the coordinator's tasks, asked for
  /// its Stats at once when it joins first or with a new incarnation (it
  /// restarted), rather than at the next round.
  private func renewParameterServerLease(_ request: Pipemesh_V1_JoinPoolRequest, _ context: ServerContext)
    async throws -> Pipemesh_V1_JoinPoolResponse
  {
    try await checkMember(request.endpoint, context, as: .ps)
    guard request.incarnation != 0 else {
      throw CoordinatorError(
        .invalidRequest, "incarnation is 0; give the ps task's incarnation (its Stats' incarnation)")
    }
    await parameterServerWatch.renew(request.endpoint, incarnation: request.incarnation, for: Self.memberLease)
    return .with { $0.leaseSeconds = Self.memberLease.seconds }
  }

  /// Admits a pool call about `endpoint` from a member of `role`: under
  /// mutual TLS from that role's certificate; otherwise from an admin (when
  /// the coordinator has tokens) or anyone (when it authenticates no one),
  /// and only about the caller's own address: a member joins and leaves
  /// only itself.
  private func checkMember(_ endpoint: String, _ context: ServerContext, as role: MeshRole) async throws {
    guard endpoint.utf8.count <= 255, let colon = endpoint.lastIndex(of: ":"), colon != endpoint.startIndex,
      let port = Int(endpoint[endpoint.index(after: colon)...]), (1...65535).contains(port)
    else {
      throw CoordinatorError(
        .invalidRequest,
        "endpoint is '\(endpoint.echoed)'; give the HOST:PORT the \(role) is dialled at (port 1 to 65535)")
    }
    if let identity = context.peerIdentity {
      guard MeshRole(commonName: identity) == role else {
        throw CoordinatorError(
          .notPermitted,
          "the certificate '\(identity.echoed)' is not a \(role)'s: only a \(role)'s certificate (\(role) or "
            + "\(role).NAME) may join or leave the pool as one")
      }
    } else if tokens != nil {
      let caller = try caller(context)
      guard caller.isAdmin else {
        throw CoordinatorError(
          .notPermitted,
          "\(caller.name) may not change the pool: only an admin's token or a \(role)'s certificate may")
      }
    }
    // Checked before any name the caller chose is looked up.
    if role == .ps, !cluster.parameterServers.contains(endpoint) {
      throw CoordinatorError(
        .unsuitableMesh,
        "\(endpoint.echoed) is not one of this coordinator's ps tasks "
          + "(\(cluster.parameterServers.joined(separator: ", "))): a coordinator's ps tasks are fixed, since "
          + "variables are placed by shard; give the task the --advertise address the coordinator's --ps lists")
    }
    guard context.peerIdentity == nil else { return }
    let host = String(endpoint[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
    guard let caller = Self.address(ofPeer: context.peer), await Self.resolve(host).contains(caller) else {
      throw CoordinatorError(
        .notPermitted,
        "endpoint \(endpoint.echoed) is not the caller's own address (\(context.peer.echoed)): "
          + "without mutual TLS a \(role) joins and leaves only itself")
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
/// hold up every reader of the pool. A task that keeps a lease (JoinPool
/// with parameter_server) is also silent once its lease lapses, and is
/// asked at once when its lease is news (see `renew`).
public final class ParameterServerWatch: Sendable {
  private let client: ParameterServerClient
  private let endpoints: [String]
  /// The least time between two asks of a task for its lease's sake, and
  /// how long such an ask waits for its answer.
  private let askInterval: Duration
  private let askTimeout: Duration
  /// Each task as last asked, and when that ask began: an answer replaces
  /// only one to an earlier ask (a round held up by a slow task must not
  /// undo what a later ask of one task found).
  private let tasks: Mutex<[String: (task: Pipemesh_V1_ParameterServerTask, asked: ContinuousClock.Instant)]>
  private let leases = Mutex<[String: Lease]>([:])

  /// A task's lease: until when, under which incarnation, and when the
  /// task was last asked because of it.
  struct Lease: Sendable {
    var expiry: ContinuousClock.Instant
    var incarnation: UInt64
    var askedAt: ContinuousClock.Instant?
  }

  /// The tasks of `client`, not asked yet: neither an error nor stats. A
  /// lease that is news asks its task at most once per `askInterval`, within
  /// `askTimeout`.
  public init(_ client: ParameterServerClient, askInterval: Duration = .seconds(1), askTimeout: Duration = .seconds(2))
  {
    self.client = client
    self.askInterval = askInterval
    self.askTimeout = askTimeout
    endpoints = client.endpoints
    tasks = Mutex(
      Dictionary(
        uniqueKeysWithValues: client.endpoints.map { endpoint in
          (endpoint, (Pipemesh_V1_ParameterServerTask.with { $0.endpoint = endpoint }, ContinuousClock.now))
        }))
  }

  /// The tasks in shard order, each with its lease when it keeps one.
  public var status: [Pipemesh_V1_ParameterServerTask] {
    let now = ContinuousClock.now
    let (tasks, leases) = (tasks.withLock { $0 }, leases.withLock { $0 })
    return endpoints.map { endpoint in
      var task = tasks[endpoint]!.task
      guard let lease = leases[endpoint] else { return task }
      task.joined = true
      task.joinedIncarnation = lease.incarnation
      task.leaseSecondsLeft = max(0, (lease.expiry - now).seconds)
      if lease.expiry <= now {
        task.silent = true
        let lapsed = "its lease lapsed \(Int((now - lease.expiry).seconds)) s ago"
        task.error = task.error.isEmpty ? lapsed : "\(lapsed); \(task.error)"
      }
      return task
    }
  }

  /// Renews the lease of the task at `endpoint` for `duration`; then asks
  /// the task for its Stats at once when the lease is news (the first, one
  /// under a new incarnation, or one renewed after it lapsed), at most once
  /// per `askInterval` for each task.
  public func renew(_ endpoint: String, incarnation: UInt64, for duration: Duration) async {
    let now = ContinuousClock.now
    let news = leases.withLock { leases in
      let previous = leases[endpoint]
      let isNews = previous.map { $0.incarnation != incarnation || $0.expiry <= now } ?? true
      let due = isNews && previous?.askedAt.map { now - $0 >= askInterval } ?? true
      leases[endpoint] = Lease(
        expiry: now + duration, incarnation: incarnation, askedAt: due ? now : previous?.askedAt)
      return due
    }
    if news { await ask(only: endpoint, within: askTimeout) }
  }

  /// Each `period` until the task is cancelled: asks every task for its
  /// Stats, each within `timeout`.
  public func watch(every period: Duration, timeout: Duration) async {
    while !Task.isCancelled {
      await ask(within: timeout)
      try? await Task.sleep(for: period)
    }
  }

  /// Asks every task (or only the one at `endpoint`) for its Stats, each
  /// within `timeout`. A lease that lapsed under another incarnation than
  /// the one that answers is dropped: the task came back without one.
  public func ask(only endpoint: String? = nil, within timeout: Duration) async {
    let asked = ContinuousClock.now
    let answers = await client.stats(of: endpoint, within: timeout).map { task in
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
    tasks.withLock { tasks in
      for answer in answers where tasks[answer.endpoint].map({ $0.asked <= asked }) ?? false {
        tasks[answer.endpoint] = (answer, asked)
      }
    }
    let now = ContinuousClock.now
    leases.withLock { leases in
      for answer in answers where answer.hasStats {
        if let lease = leases[answer.endpoint], lease.expiry <= now, lease.incarnation != answer.stats.incarnation {
          leases[answer.endpoint] = nil
        }
      }
    }
  }
}
