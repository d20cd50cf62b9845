import MeshRPC

/// What a peer is in the mesh, from the common name of its certificate
/// (mutual TLS): `coordinator`, `partition`, `ps`, or `client.NAME` and
/// `admin.NAME` for users. `pipemesh certs` issues certificates named this
/// way.
public enum MeshRole: Equatable, Sendable {
  case coordinator
  case partition
  case ps
  /// A user, by name.
  case client(String)
  /// A user who may use every user's jobs, by name.
  case admin(String)

  /// The role a certificate's common name gives; a service's name may carry
  /// an instance after a dot (`partition.host-a-1`). Nil for any other name.
  public init?(commonName: String) {
    let parts = commonName.split(separator: ".", maxSplits: 1).map(String.init)
    switch parts.first {
    case "coordinator": self = .coordinator
    case "partition": self = .partition
    case "ps": self = .ps
    case "client" where parts.count == 2 && !parts[1].isEmpty: self = .client(parts[1])
    case "admin" where parts.count == 2 && !parts[1].isEmpty: self = .admin(parts[1])
    default: return nil
    }
  }

  /// Whether the role serves in the mesh (not a user).
  public var isMember: Bool {
    switch self {
    case .coordinator, .partition, .ps: return true
    case .client, .admin: return false
    }
  }

  /// Refuses a call from a verified peer whose role is not a mesh member,
  /// with PERMISSION_DENIED naming `what` it asked for. A call without a
  /// verified certificate passes: the server then runs without mutual TLS,
  /// which refuses such peers itself when it is on.
  public static func requireMember(_ context: ServerContext, for what: String) throws {
    guard let identity = context.peerIdentity else { return }
    guard let role = MeshRole(commonName: identity), role.isMember else {
      throw RPCError(
        .permissionDenied,
        "\(what) is for the mesh's own services; the certificate '\(identity.echoed)' names no coordinator, partition or ps"
      )
    }
  }
}
