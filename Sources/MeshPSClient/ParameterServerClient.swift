import Foundation
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import Synchronization

/// The client partitions use to reach a cluster of ps tasks. It routes each
/// variable to its task by `Placement`, cuts large variables into parts and
/// joins them again, so callers see whole variables.
///
/// No message grows with the model: every call is sent as requests that
/// carry at most `transferBytes` of tensors (or one part, when a part is
/// larger), one request at a time per task, the tasks concurrently. A pulled
/// variable is assembled in place as its parts arrive, and a pushed one is
/// sent from its own storage, so a transfer holds one request's bytes beyond
/// the tensors themselves.
///
/// Each task applies each request atomically; a push that spans requests is
/// applied per variable part (the ps takes each part's gradient of a step
/// once). Requests go out in part-name order, so pushers that share a
/// variable under sync consistency wait for one another in the same order.
/// Pulls and pushes find a variable's parts by the layout its registration
/// gave: register (idempotent) before using a variable from a new client.
public final class ParameterServerClient: Sendable {
  public let placement: Placement
  /// The most bytes of tensors one request or answer carries.
  public let transferBytes: Int
  private let tasks: [any RPCChannel]
  /// The parts of each variable registered through this client.
  private let layout = Mutex<[String: VariableLayout]>([:])

  private struct VariableLayout: Sendable {
    let shape: [Int]
    let parts: [VariablePart]
  }

  /// A variable as pulled: its value (nil when not newer than asked) and version.
  public struct Pulled: Sendable {
    public let value: Tensor?
    public let version: Int64
    /// The optimizer's slots beside the value, by slot name, when asked for
    /// them (`pull(…withSlots:)`) and all of the variable's parts are at one
    /// version; nil otherwise.
    public let slots: [String: Tensor]?
  }

  /// A variable as registered: its version, and whether its writer keeps its
  /// values (the ps holds none; see `register(…writerKeepsValues:)`).
  public struct Registered: Sendable, Equatable {
    public let version: Int64
    public let keptByWriter: Bool
  }

  public init(
    endpoints: [String], dialer: any RPCDialer = GRPCDialer(), blockBytes: Int = Placement.defaultBlockBytes,
    transferBytes: Int = Placement.defaultBlockBytes
  ) throws {
    guard !endpoints.isEmpty else { throw RPCError(.invalidArgument, "no ps endpoints given") }
    placement = Placement(tasks: endpoints.count, blockBytes: blockBytes)
    self.transferBytes = transferBytes
    tasks = try endpoints.map { try dialer.channel(to: $0) }
  }

  /// A job's first call to a ps task waits for a task that is (re)starting,
  /// a while, instead of failing at once while the channel backs off.
  static let firstCallOptions = CallOptions(timeout: .seconds(120), waitForReady: true)

  /// The parts of a variable registered through this client; an unknown one
  /// is taken to be whole, of unknown size.
  private func parts(of name: String) -> [VariablePart] {
    layout.withLock { $0[name]?.parts } ?? [VariablePart(name: name, elements: 0..<0, shape: [])]
  }

  /// One item of a call to a task and the bytes of tensors it carries (or,
  /// for a pull, that its answer will).
  private struct Item<Payload: Sendable>: Sendable {
    let payload: Payload
    let bytes: Int
  }

  /// Sends each task's items in requests of at most `transferBytes` (an
  /// item larger than that goes alone), in name order, one request at a time
  /// per task and the tasks concurrently; returns every answer.
  private func send<Payload: Sendable, Answer: Sendable>(
    _ work: [Int: [(name: String, item: Item<Payload>)]],
    _ call: @escaping @Sendable (any RPCChannel, [Payload]) async throws -> Answer
  ) async throws -> [Answer] {
    try await withThrowingTaskGroup(of: [Answer].self) { group in
      for (task, items) in work {
        let batches = batch(items.sorted { $0.name < $1.name }.map(\.item))
        group.addTask {
          let client = self.tasks[task]
          var answers: [Answer] = []
          for batch in batches {
            do {
              answers.append(try await call(client, batch))
            } catch let error as RPCError where error.code == .unavailable {
              // The caller is up: say that it is this ps task that is not.
              throw RPCError(.unavailable, "the ps at \(client.target) does not answer: \(error.message)")
            }
          }
          return answers
        }
      }
      return try await group.reduce(into: []) { $0 += $1 }
    }
  }

  private func batch<Payload>(_ items: [Item<Payload>]) -> [[Payload]] {
    var batches: [[Payload]] = []
    var current: [Payload] = []
    var bytes = 0
    for item in items {
      if !current.isEmpty, bytes + item.bytes > transferBytes {
        batches.append(current)
        (current, bytes) = ([], 0)
      }
      current.append(item.payload)
      bytes += item.bytes
    }
    if !current.isEmpty { batches.append(current) }
    return batches
  }

  /// Registers variables for `user` (a stage); returns their versions.
  ///
  /// A partitioned variable's parts are defined with the whole one's
  /// initializer and their offsets in its draw, so each task draws its
  /// parts itself and they start exactly as the whole would; an initial
  /// value is cut into the parts' bytes without a copy. With
  /// `writerKeepsValues`, `user` is the variables' only writer and keeps
  /// their master copy: the variables this creates hold no value on the ps
  /// until `assign` sends one.
  @discardableResult
  public func register(
    job: String, variables: [Pipemesh_V1_VariableDefinition], consistency: Pipemesh_V1_Consistency, user: String,
    writerKeepsValues: Bool = false
  ) async throws -> [String: Registered] {
    var work: [Int: [(name: String, item: Item<Pipemesh_V1_VariableDefinition>)]] = [:]
    var registered: [String: VariableLayout] = [:]
    for definition in variables {
      guard definition.shape.allSatisfy({ $0 > 0 && $0 <= Int32.max }),
        let count = Tensor.checkedCount(of: definition.shape.map { Int($0) }), count <= Int.max / 4
      else {
        throw RPCError(
          .invalidArgument,
          "variable \(definition.name) has shape \(definition.shape); every extent must be 1 to 2^31-1")
      }
      let shape = definition.shape.map { Int($0) }
      let parts = placement.parts(of: definition.name, shape: shape)
      registered[definition.name] = VariableLayout(shape: shape, parts: parts)
      if definition.hasInitialValue, parts.count > 1, definition.initialValue.data.count != count * 4 {
        throw RPCError(
          .invalidArgument,
          "initial value of \(definition.name) has \(definition.initialValue.data.count) bytes, "
            + "its shape \(shape) needs \(count * 4)")
      }
      for part in parts {
        var partDefinition = definition
        if parts.count > 1 {
          partDefinition.name = part.name
          partDefinition.shape = part.shape.map { Int64($0) }
          if definition.hasInitialValue {
            let bytes = (part.elements.lowerBound * 4)..<(part.elements.upperBound * 4)
            partDefinition.initialValue.shape = partDefinition.shape
            partDefinition.initialValue.data = definition.initialValue.data[bytes]
          } else {
            partDefinition.initializerOffset = definition.initializerOffset + Int64(part.elements.lowerBound)
          }
        }
        work[placement.task(of: part.name), default: []].append(
          (part.name, Item(payload: partDefinition, bytes: partDefinition.initialValue.data.count)))
      }
    }
    layout.withLock { $0.merge(registered) { $1 } }
    let answers = try await send(work) { client, definitions in
      try await client.call(
        ParameterServerMethods.register,
        .with {
          $0.job = job
          $0.consistency = consistency
          $0.user = user
          $0.variables = definitions
          $0.writerKeepsValues = writerKeepsValues
        }, options: Self.firstCallOptions)
    }
    let answered = Dictionary(answers.flatMap(\.variables).map { ($0.name, $0) }) { $1 }
    return registered.mapValues { layout in
      let parts = layout.parts.compactMap { answered[$0.name] }
      return Registered(
        version: parts.map(\.version).min() ?? 0,
        keptByWriter: parts.count == layout.parts.count && parts.allSatisfy(\.keptByWriter))
    }
  }

  /// Learns where the parts of variables registered elsewhere lie (their
  /// placement follows from their names and shapes), so that this client
  /// can pull them whole without registering.
  public func expect(variables: [(name: String, shape: [Int])]) {
    let layouts = variables.map {
      ($0.name, VariableLayout(shape: $0.shape, parts: placement.parts(of: $0.name, shape: $0.shape)))
    }
    layout.withLock { $0.merge(layouts) { $1 } }
  }

  /// How long a task may take to answer DropJob: a ps that hangs (stopped,
  /// or stuck on its disk) fails a DeleteJob rather than holding it forever.
  public static let dropTimeout = Duration.seconds(30)

  /// Forgets a job on every task that holds it; returns the bytes freed.
  /// Every task is asked to the end whatever the others answer, so a task
  /// that fails leaves the job's variables on itself alone; the error then
  /// names each task that failed. DEADLINE_EXCEEDED names a task that did
  /// not answer within `timeout`.
  public func drop(job: String, timeout: Duration = dropTimeout) async throws -> Int64 {
    let answers = await withTaskGroup(of: Result<Int64, RPCError>.self) { group in
      for task in tasks {
        group.addTask {
          do {
            return .success(
              try await task.call(
                ParameterServerMethods.dropJob, .with { $0.job = job }, options: CallOptions(timeout: timeout)
              ).bytes)
          } catch let error as RPCError where error.code == .notFound {
            return .success(0)
          } catch let error as RPCError where error.code == .deadlineExceeded {
            return .failure(
              RPCError(.deadlineExceeded, "ps task \(task.target) did not answer DropJob for \(job) within \(timeout)"))
          } catch let error as RPCError {
            return .failure(RPCError(error.code, "ps task \(task.target): \(error.message)"))
          } catch is CancellationError {
            return .failure(RPCError(.cancelled, "the drop of \(job) was cancelled"))
          } catch {
            return .failure(RPCError(.internal, "ps task \(task.target): \(error)"))
          }
        }
      }
      return await group.reduce(into: []) { $0.append($1) }
    }
    var freed: Int64 = 0
    var failures: [RPCError] = []
    for answer in answers {
      switch answer {
      case .success(let bytes): freed += bytes
      case .failure(let error): failures.append(error)
      }
    }
    // Sorted: the same failures give the same error, whichever task answered first.
    failures.sort { $0.message < $1.message }
    guard let first = failures.first else { return freed }
    guard failures.count > 1 else { throw first }
    throw RPCError(
      first.code,
      "\(failures.count) of \(tasks.count) ps tasks failed to drop \(job): "
        + failures.map(\.message).joined(separator: "; "))
  }

  /// Sends the state of variables `user` kept (see `register`): each value,
  /// its optimizer slots and its version, part by part from their storage.
  @discardableResult
  public func assign(
    job: String, user: String, states: [String: (value: Tensor, slots: [String: Tensor], version: Int64)]
  ) async throws -> [String: Int64] {
    var work: [Int: [(name: String, item: Item<Pipemesh_V1_VariableState>)]] = [:]
    for (name, state) in states {
      let parts = parts(of: name)
      for part in parts {
        func wire(_ tensor: Tensor) -> Pipemesh_V1_Tensor {
          parts.count == 1 ? Pipemesh_V1_Tensor(sharing: tensor) : Pipemesh_V1_Tensor(sharing: tensor, part: part)
        }
        let item = Pipemesh_V1_VariableState.with {
          $0.name = part.name
          $0.version = state.version
          $0.value = wire(state.value)
          $0.slots = state.slots.keys.sorted().map { slot in
            .with {
              $0.name = slot
              $0.tensor = wire(state.slots[slot]!)
            }
          }
        }
        let bytes = item.value.data.count * (1 + state.slots.count)
        work[placement.task(of: part.name), default: []].append((part.name, Item(payload: item, bytes: bytes)))
      }
    }
    let answers = try await send(work) { client, items in
      try await client.call(
        ParameterServerMethods.assign,
        .with {
          $0.job = job
          $0.user = user
          $0.variables = items
        })
    }
    return versions(of: Array(states.keys), answered: answers.flatMap(\.variables))
  }

  /// Each variable's version: the lowest of its parts' (0 for a part not answered).
  private func versions(of names: [String], answered: [Pipemesh_V1_VariableVersion]) -> [String: Int64] {
    let versions = Dictionary(answered.map { ($0.name, $0.version) }) { $1 }
    return Dictionary(
      uniqueKeysWithValues: names.map { name in (name, parts(of: name).map { versions[$0.name] ?? 0 }.min() ?? 0) })
  }

  /// Pulls variables; `newerThan` leaves out values not newer than a version.
  /// A partitioned variable is always read whole and assembled in place, its
  /// slots too when `withSlots` asks for them.
  public func pull(
    job: String, names: [String], newerThan: [String: Int64] = [:], withSlots: Bool = false
  ) async throws -> [String: Pulled] {
    // An answer with slots weighs a part and as many again per slot, at most.
    let (work, wanted) = pullRequests(
      names: names, newerThan: newerThan, weight: withSlots ? 1 + StageMemory.mostSlots.slots : 1)
    let assembled = Mutex(Assembly(withSlots: withSlots))
    // Made inside the lock, so that no other reference makes the first part's write copy them.
    for name in names {
      guard let layout = layout.withLock({ $0[name] }), layout.parts.count > 1 else { continue }
      assembled.withLock { $0.values[name] = .zeros(layout.shape) }
    }
    try await sendPulls(work, job: job, includeSlots: withSlots) { answered in
      do {
        try assembled.withLock { try $0.add(answered, wanted: wanted) }
      } catch let error as WireError {
        throw error.answered(by: "a ps task")
      }
    }
    return try assembled.withLock { try $0.pulled(names, parts: { self.parts(of: $0) }) }
  }

  /// Pulls the current values of variables without putting them together:
  /// `receive(name, element, bytes)` gets each part's little-endian scalars
  /// from row-major element `element` of variable `name` as it arrives (from
  /// any task), so no more than a request's answer is held at once. The
  /// variables' layouts must be known (`register` or `expect` first;
  /// FAILED_PRECONDITION otherwise). Throws DATA_LOSS when the ps holds no
  /// value of a part, or answers one not of its float32 shape and bytes, or
  /// twice, or not at all. A task named in `incarnations` that restarted
  /// since (its incarnation is another) answers ABORTED; a task not named
  /// there is not checked.
  public func pull(
    job: String, names: [String], incarnations: [String: UInt64] = [:],
    into receive: @escaping @Sendable (_ name: String, _ element: Int, _ bytes: Data) throws -> Void
  ) async throws {
    if let unknown = layout.withLock({ layout in names.first { layout[$0] == nil } }) {
      throw RPCError(.failedPrecondition, "variable \(unknown) has no known layout: register or expect it first")
    }
    let (work, wanted) = pullRequests(names: names, newerThan: [:])
    let received = Mutex(Set<String>())
    try await sendPulls(work, job: job, incarnations: incarnations) { answered in
      for value in answered {
        guard let (whole, part) = wanted[value.name] else {
          throw RPCError(.dataLoss, "a ps task answered a pull with \(value.name), which was not asked for")
        }
        guard received.withLock({ $0.insert(value.name).inserted }) else {
          throw RPCError(.dataLoss, "a ps task answered a pull with \(value.name) twice")
        }
        guard value.hasValue else { throw RPCError(.dataLoss, "the ps holds no value of \(value.name)") }
        guard value.value.dtype == .float32, value.value.shape == part.shape.map(Int64.init),
          value.value.data.count == part.byteCount
        else {
          throw RPCError(
            .dataLoss,
            "a ps task answered \(value.name) with shape \(value.value.shape) and \(value.value.data.count) bytes")
        }
        try receive(whole, part.elements.lowerBound, value.value.data)
      }
    }
    let missing = Set(wanted.keys).subtracting(received.withLock { $0 })
    guard missing.isEmpty else {
      throw RPCError(
        .dataLoss, "a ps task answered a pull without \(missing.sorted().prefix(3).joined(separator: ", "))")
    }
  }

  /// Sends `work`'s Pull requests of `job`, each naming its task's
  /// incarnation in `incarnations` (when there), and hands each answer's
  /// values to `take`.
  private func sendPulls(
    _ work: [Int: [(name: String, item: Item<Pipemesh_V1_VariableVersion>)]], job: String,
    incarnations: [String: UInt64] = [:], includeSlots: Bool = false,
    _ take: @escaping @Sendable ([Pipemesh_V1_VariableValue]) throws -> Void
  ) async throws {
    _ = try await send(work) { client, requests in
      try take(
        try await client.call(
          ParameterServerMethods.pull,
          .with {
            $0.job = job
            $0.variables = requests
            $0.includeSlots = includeSlots
            $0.incarnation = incarnations[client.target] ?? 0
          }
        ).variables)
    }
  }

  /// The Pull requests of `names`' parts, by ps task, and which variable
  /// and part each requested name is.
  private func pullRequests(names: [String], newerThan: [String: Int64], weight: Int = 1) -> (
    work: [Int: [(name: String, item: Item<Pipemesh_V1_VariableVersion>)]],
    wanted: [String: (whole: String, part: VariablePart)]
  ) {
    var work: [Int: [(name: String, item: Item<Pipemesh_V1_VariableVersion>)]] = [:]
    var wanted: [String: (whole: String, part: VariablePart)] = [:]
    for name in names {
      let layout = layout.withLock { $0[name] }
      let parts = layout?.parts ?? parts(of: name)
      for part in parts {
        wanted[part.name] = (name, part)
        let version = parts.count == 1 ? newerThan[name] ?? 0 : 0
        let request = Pipemesh_V1_VariableVersion.with {
          $0.name = part.name
          $0.version = version
        }
        work[placement.task(of: part.name), default: []].append(
          (part.name, Item(payload: request, bytes: layout == nil ? transferBytes : part.byteCount * weight)))
      }
    }
    return (work, wanted)
  }

  /// Pulled parts put together: whole values of partitioned variables filled
  /// in as their parts arrive, and every part's version.
  private struct Assembly: Sendable {
    let withSlots: Bool
    var values: [String: Tensor] = [:]
    var slots: [String: [String: Tensor]] = [:]
    var versions: [String: Int64] = [:]
    var missingValue: Set<String> = []
    /// The slot names each part of a variable was answered with, by variable.
    var slotNames: [String: Set<[String]>] = [:]

    mutating func add(
      _ answered: [Pipemesh_V1_VariableValue], wanted: [String: (whole: String, part: VariablePart)]
    ) throws {
      for value in answered {
        guard let (whole, part) = wanted[value.name] else {
          throw RPCError(.dataLoss, "a ps task answered a pull with \(value.name), which was not asked for")
        }
        guard versions.updateValue(value.version, forKey: part.name) == nil else {
          throw RPCError(.dataLoss, "a ps task answered a pull with \(value.name) twice")
        }
        if withSlots {
          guard Set(value.slots.map(\.name)).count == value.slots.count else {
            throw RPCError(.dataLoss, "a ps task answered a slot of \(value.name) twice")
          }
          slotNames[whole, default: []].insert(value.slots.map(\.name).sorted())
        }
        guard value.hasValue else {
          missingValue.insert(whole)
          continue
        }
        guard part.name != whole else {
          values[whole] = try Tensor(wire: value.value, what: "pulled \(value.name)")
          if withSlots {
            let shape = values[whole]!.shape
            for slot in value.slots {
              let tensor = try Tensor(wire: slot.tensor, what: "slot \(slot.name) of \(value.name)")
              guard tensor.shape == shape else {
                throw RPCError(
                  .dataLoss, "a ps task answered slot \(slot.name) of \(value.name) with shape \(tensor.shape)")
              }
              slots[whole, default: [:]][slot.name] = tensor
            }
          }
          continue
        }
        guard let shape = values[whole]?.shape else {
          throw RPCError(.dataLoss, "a ps task answered \(value.name), a part of \(whole), which was not asked for")
        }
        try Self.overwrite(&values[whole]!, with: value.value, at: part, what: value.name)
        guard withSlots else { continue }
        for slot in value.slots {
          try Self.overwrite(
            &slots[whole, default: [:]][slot.name, default: .zeros(shape)], with: slot.tensor, at: part,
            what: "slot \(slot.name) of \(value.name)")
        }
      }
    }

    /// Writes a part's answered values into the whole they are part of.
    private static func overwrite(
      _ whole: inout Tensor, with answered: Pipemesh_V1_Tensor, at part: VariablePart, what: String
    ) throws {
      guard answered.shape == part.shape.map({ Int64($0) }) else {
        throw RPCError(.dataLoss, "a ps task answered \(what) with shape \(answered.shape)")
      }
      do {
        try whole.overwrite(fromElement: part.elements.lowerBound, littleEndianBytes: answered.data)
      } catch {
        throw RPCError(.dataLoss, "a ps task answered \(what) with \(answered.data.count) bytes")
      }
    }

    func pulled(_ names: [String], parts: (String) -> [VariablePart]) throws -> [String: Pulled] {
      var pulled: [String: Pulled] = [:]
      for name in names {
        let parts = parts(name)
        let partVersions = try parts.map { part in
          guard let version = versions[part.name] else {
            throw RPCError(.dataLoss, "a ps task answered a pull without \(part.name)")
          }
          return version
        }
        // Slots stand only when every part is at one version with the same slots.
        let consistent = Set(partVersions).count <= 1 && (slotNames[name]?.count ?? 0) <= 1
        pulled[name] = Pulled(
          value: missingValue.contains(name) ? nil : values[name], version: partVersions.min() ?? 0,
          slots: withSlots && consistent ? slots[name, default: [:]] : nil)
      }
      return pulled
    }
  }

  /// Pushes the gradients of one step; returns the variables' new versions.
  /// Each part's gradient is sent from the gradient's own storage.
  @discardableResult
  public func push(
    job: String, step: Int64, user: String, replica: Int32 = 0, clientID: String,
    gradients: [String: (gradient: Tensor, baseVersion: Int64)]
  ) async throws -> [String: Int64] {
    var work: [Int: [(name: String, item: Item<Pipemesh_V1_Gradient>)]] = [:]
    for (name, (gradient, baseVersion)) in gradients {
      let parts = parts(of: name)
      for part in parts {
        let wire =
          parts.count == 1
          ? Pipemesh_V1_Tensor(sharing: gradient) : Pipemesh_V1_Tensor(sharing: gradient, part: part)
        let item = Pipemesh_V1_Gradient.with {
          $0.name = part.name
          $0.baseVersion = baseVersion
          $0.gradient = wire
        }
        work[placement.task(of: part.name), default: []].append(
          (part.name, Item(payload: item, bytes: wire.data.count)))
      }
    }
    let answers = try await send(work) { client, items in
      try await client.call(
        ParameterServerMethods.push,
        .with {
          $0.job = job
          $0.step = step
          $0.user = user
          $0.replica = replica
          $0.clientID = clientID
          $0.gradients = items
        })
    }
    return versions(of: Array(gradients.keys), answered: answers.flatMap(\.variables))
  }

  /// Runs one call on every task, concurrently.
  private func onEveryTask<Answer: Sendable>(
    _ call: @escaping @Sendable (any RPCChannel) async throws -> Answer
  ) async throws -> [Answer] {
    let work = Dictionary(
      uniqueKeysWithValues: tasks.indices.map { ($0, [(name: "", item: Item(payload: 0, bytes: 0))]) })
    return try await send(work) { client, _ in try await call(client) }
  }

  /// What a task says of itself.
  public struct TaskState: Sendable, Equatable {
    public let endpoint: String
    /// Whether it writes checkpoints (it was started with a checkpoint directory).
    public let checkpointsEnabled: Bool
    /// Drawn when its process started: another one means it restarted.
    public let incarnation: UInt64
  }

  /// Every task's state, one per task (in the order they answered).
  public func taskStates() async throws -> [TaskState] {
    try await onEveryTask { client in
      let stats = try await client.call(ParameterServerMethods.stats, .init())
      return TaskState(
        endpoint: client.target, checkpointsEnabled: stats.checkpointsEnabled, incarnation: stats.incarnation)
    }
  }

  /// The tasks' endpoints, in shard order.
  public var endpoints: [String] { tasks.map(\.target) }

  /// Every task's Stats (or only the one at `endpoint`), in shard order, or
  /// why it did not answer within `timeout`.
  public func stats(of endpoint: String? = nil, within timeout: Duration) async -> [(
    endpoint: String, stats: Result<Pipemesh_V1_StatsResponse, any Error>
  )] {
    let tasks = tasks.filter { endpoint == nil || $0.target == endpoint }
    return await withTaskGroup(of: (Int, Result<Pipemesh_V1_StatsResponse, any Error>).self) { group in
      for (index, task) in tasks.enumerated() {
        group.addTask {
          do {
            return (
              index,
              .success(try await task.call(ParameterServerMethods.stats, .init(), options: .init(timeout: timeout)))
            )
          } catch {
            return (index, .failure(error))
          }
        }
      }
      var answers = [(endpoint: String, stats: Result<Pipemesh_V1_StatsResponse, any Error>)](
        tasks.map { ($0.target, .failure(CancellationError())) })
      for await (index, answer) in group { answers[index].stats = answer }
      return answers
    }
  }

  /// The endpoints of the tasks that write no checkpoints (started
  /// without a checkpoint directory).
  public func tasksWithoutCheckpoints() async throws -> [String] {
    try await taskStates().filter { !$0.checkpointsEnabled }.map(\.endpoint).sorted()
  }

  /// Asks every task to write a checkpoint now; returns the files written.
  public func checkpoint() async throws -> [String] {
    try await onEveryTask { client in try await client.call(ParameterServerMethods.checkpoint, .init()).path }
  }

  /// Asks every task to write a checkpoint of `job` after its step `step`
  /// (call it at a step boundary, when the job's updates are all applied);
  /// returns the files written. A task named in `incarnations` that
  /// restarted since (its incarnation is another) writes nothing and
  /// answers ABORTED; a task not named there is not checked. With
  /// `exactStep`, of the state after exactly `step`, not flushed (see
  /// CheckpointRequest.exact_step).
  public func checkpoint(
    job: String, step: Int64, incarnations: [String: UInt64] = [:], exactStep: Bool = false
  ) async throws -> [String] {
    try await onEveryTask { client in
      try await client.call(
        ParameterServerMethods.checkpoint,
        .with {
          $0.job = job
          $0.step = step
          $0.incarnation = incarnations[client.target] ?? 0
          $0.exactStep = exactStep
        }
      ).path
    }
  }

  /// Puts `job` on every task as the checkpoint of `source` (an earlier run
  /// of it) at `step` holds it, run by `replicas` data-parallel replicas
  /// (0: as many as the checkpoint's).
  public func restore(job: String, from source: String, step: Int64, replicas: Int32 = 0) async throws {
    _ = try await onEveryTask { client in
      try await client.call(
        ParameterServerMethods.restoreJob,
        .with {
          $0.job = job
          $0.fromJob = source
          $0.step = step
          $0.replicas = replicas
        })
    }
  }
}

extension Pipemesh_V1_Tensor {
  /// The wire form of one part of a tensor, sharing the tensor's storage.
  init(sharing tensor: Tensor, part: VariablePart) {
    self.init()
    dtype = .float32
    shape = part.shape.map { Int64($0) }
    data = tensor.sharedLittleEndianData(elements: part.elements)
  }
}
