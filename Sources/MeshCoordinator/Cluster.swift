import MeshPSClient
import MeshRPC

/// The services a coordinator drives: ps tasks in shard order, and the
/// partitions it was started with, as a layout — for each stage the
/// partitions of its data-parallel replicas — that gives a job its shape
/// when the job names none (empty when partitions only join the pool).
public struct Cluster: Sendable {
  public let parameterServers: [String]
  /// `partitions[stage][replica]`.
  public let partitions: [[String]]
  /// How the coordinator reaches the ps tasks and partitions.
  public let dialer: any RPCDialer

  public init(parameterServers: [String], partitions: [[String]], dialer: any RPCDialer = GRPCDialer()) throws {
    guard !parameterServers.isEmpty else { throw CoordinatorError(.invalidRequest, "the cluster has no ps task") }
    guard partitions.allSatisfy({ !$0.isEmpty }) else {
      throw CoordinatorError(.invalidRequest, "every stage needs at least one partition")
    }
    guard Set(partitions.map(\.count)).count <= 1 else {
      throw CoordinatorError(
        .invalidRequest,
        "every stage needs the same number of replicas, got \(partitions.map(\.count))")
    }
    self.parameterServers = parameterServers
    self.partitions = partitions
    self.dialer = dialer
  }

  /// The layout's stages (0 without one).
  public var stages: Int { partitions.count }

  /// A client of the ps tasks.
  func parameterServerClient() throws -> ParameterServerClient {
    try ParameterServerClient(endpoints: parameterServers, dialer: dialer)
  }
  /// The layout's replicas (0 without one).
  public var replicas: Int { partitions.first?.count ?? 0 }

  /// Parses `HOST:PORT,HOST:PORT;HOST:PORT`: stages separated by `;`,
  /// replicas of a stage by `,`.
  public static func parsePartitions(_ text: String) -> [[String]] {
    text.split(separator: ";").map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
  }
}
