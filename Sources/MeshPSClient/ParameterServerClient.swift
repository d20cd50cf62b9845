import Foundation
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import Synchronization

/// The client partitions use to reach a cluster of ps tasks. It routes each
/// variable to its task by `Placement`, cuts large variables into row blocks
/// and joins them again, so callers see whole variables.
///
/// Calls to different tasks run concurrently; a push that spans tasks is
/// applied per task (each task applies its part atomically). Pulls and
/// pushes find a variable's row blocks by the layout its registration gave:
/// register (idempotent) before using a variable from a new client.
public final class ParameterServerClient: Sendable {
  public let placement: Placement
  private let tasks: [any RPCChannel]
  /// The parts of each variable registered through this client.
  private let layout = Mutex<[String: [(name: String, rows: Range<Int>)]]>([:])

  /// A variable as pulled: its value (nil when not newer than asked) and version.
  public struct Pulled: Sendable {
    public let value: Tensor?
    public let version: Int64
  }

  public init(
    endpoints: [String], dialer: any RPCDialer = GRPCDialer(),
    rowBlockBytes: Int = Placement.defaultRowBlockBytes
  ) throws {
    guard !endpoints.isEmpty else { throw RPCError(.invalidArgument, "no ps endpoints given") }
    placement = Placement(tasks: endpoints.count, rowBlockBytes: rowBlockBytes)
    tasks = try endpoints.map { try dialer.channel(to: $0) }
  }

  private func parts(of name: String) -> [(name: String, rows: Range<Int>)] {
    layout.withLock { $0[name] } ?? [(name, 0..<0)]
  }

  /// Runs one call per task that has work, concurrently.
  private func onTasks<Work: Sendable, Result: Sendable>(
    _ work: [Int: Work], _ call: @escaping @Sendable (any RPCChannel, Work) async throws -> Result
  ) async throws -> [Result] {
    try await withThrowingTaskGroup(of: Result.self) { group in
      for (task, item) in work {
        group.addTask {
          let client = self.tasks[task]
          do {
            return try await call(client, item)
          } catch let error as RPCError where error.code == .unavailable {
            // The caller is up: say that it is this ps task that is not.
            throw RPCError(.unavailable, "the ps at \(client.target) does not answer: \(error.message)")
          }
        }
      }
      return try await group.reduce(into: []) { $0.append($1) }
    }
  }

  /// Registers variables for `user` (a stage); returns their versions.
  @discardableResult
  public func register(
    job: String, variables: [Pipemesh_V1_VariableDefinition], consistency: Pipemesh_V1_Consistency, user: String
  ) async throws -> [String: Int64] {
    var requests: [Int: Pipemesh_V1_RegisterRequest] = [:]
    var registered: [String: [(name: String, rows: Range<Int>)]] = [:]
    for definition in variables {
      let shape = definition.shape.map { Int($0) }
      let parts = placement.parts(of: definition.name, shape: shape)
      registered[definition.name] = parts
      var partDefinitions = [definition]
      if parts.count > 1 {
        // Row blocks get slices of the whole initial value, so that the
        // variable starts the same however it is cut.
        let whole =
          definition.hasInitialValue
          ? try Tensor(wire: definition.initialValue, what: "initial value of \(definition.name)")
          : try definition.initializer.makeTensor(shape)
        partDefinitions = parts.map { part in
          var partDefinition = definition
          partDefinition.name = part.name
          partDefinition.shape[0] = Int64(part.rows.count)
          partDefinition.clearInitializer()
          partDefinition.initialValue = Pipemesh_V1_Tensor(whole.slice(axis: 0, range: part.rows))
          return partDefinition
        }
      }
      for partDefinition in partDefinitions {
        let task = placement.task(of: partDefinition.name)
        requests[
          task,
          default: .with {
            $0.job = job
            $0.consistency = consistency
            $0.user = user
          }
        ].variables.append(partDefinition)
      }
    }
    layout.withLock { $0.merge(registered) { $1 } }
    let responses = try await onTasks(requests) { client, request in
      try await client.call(ParameterServerMethods.register, request)
    }
    let versions = Dictionary(responses.flatMap(\.variables).map { ($0.name, $0.version) }) { $1 }
    return registered.mapValues { parts in parts.map { versions[$0.name] ?? 0 }.min() ?? 0 }
  }

  /// Pulls variables; `newerThan` leaves out values not newer than a version.
  public func pull(job: String, names: [String], newerThan: [String: Int64] = [:]) async throws -> [String: Pulled] {
    var requests: [Int: Pipemesh_V1_PullRequest] = [:]
    for name in names {
      let parts = parts(of: name)
      for part in parts {
        requests[placement.task(of: part.name), default: .with { $0.job = job }].variables.append(
          .with {
            $0.name = part.name
            // Row blocks are always read whole, so the variable can be joined.
            $0.version = parts.count == 1 ? newerThan[name] ?? 0 : 0
          })
      }
    }
    let responses = try await onTasks(requests) { client, request in
      try await client.call(ParameterServerMethods.pull, request)
    }
    let values = Dictionary(responses.flatMap(\.variables).map { ($0.name, $0) }) { $1 }
    var pulled: [String: Pulled] = [:]
    for name in names {
      let parts = try parts(of: name).map { part in
        guard let value = values[part.name] else {
          throw RPCError(.dataLoss, "a ps task answered a pull without \(part.name)")
        }
        return value
      }
      let tensors = try parts.map { $0.hasValue ? try Tensor(wire: $0.value, what: "pulled \($0.name)") : nil }
      let whole =
        tensors.allSatisfy { $0 != nil }
        ? (tensors.count == 1 ? tensors[0] : Tensor.concatenate(tensors.map { $0! })) : nil
      pulled[name] = Pulled(value: whole, version: parts.map(\.version).min() ?? 0)
    }
    return pulled
  }

  /// Pushes the gradients of one step; returns the variables' new versions.
  @discardableResult
  public func push(
    job: String, step: Int64, user: String, replica: Int32 = 0, clientID: String,
    gradients: [String: (gradient: Tensor, baseVersion: Int64)]
  ) async throws -> [String: Int64] {
    var requests: [Int: Pipemesh_V1_PushRequest] = [:]
    for (name, (gradient, baseVersion)) in gradients {
      let parts = parts(of: name)
      for part in parts {
        let slice = parts.count == 1 ? gradient : gradient.slice(axis: 0, range: part.rows)
        requests[
          placement.task(of: part.name),
          default: .with {
            $0.job = job
            $0.step = step
            $0.user = user
            $0.replica = replica
            $0.clientID = clientID
          }
        ].gradients.append(
          .with {
            $0.name = part.name
            $0.baseVersion = baseVersion
            $0.gradient = Pipemesh_V1_Tensor(sharing: slice)
          })
      }
    }
    let responses = try await onTasks(requests) { client, request in
      try await client.call(ParameterServerMethods.push, request)
    }
    let versions = Dictionary(responses.flatMap(\.variables).map { ($0.name, $0.version) }) { $1 }
    return Dictionary(
      uniqueKeysWithValues: gradients.keys.map { name in
        (name, parts(of: name).map { versions[$0.name] ?? 0 }.min() ?? 0)
      })
  }

  /// The endpoints of the tasks that write no checkpoints (started
  /// without a checkpoint directory).
  public func tasksWithoutCheckpoints() async throws -> [String] {
    let work = Dictionary(uniqueKeysWithValues: tasks.indices.map { ($0, ()) })
    return try await onTasks(work) { client, _ in
      try await client.call(ParameterServerMethods.stats, .init()).checkpointsEnabled ? nil : client.target
    }.compactMap { $0 }.sorted()
  }

  /// Asks every task to write a checkpoint now; returns the files written.
  public func checkpoint() async throws -> [String] {
    let work = Dictionary(uniqueKeysWithValues: tasks.indices.map { ($0, ()) })
    return try await onTasks(work) { client, _ in
      try await client.call(ParameterServerMethods.checkpoint, .init()).path
    }
  }
}
