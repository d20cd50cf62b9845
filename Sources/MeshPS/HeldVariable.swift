import Foundation
import MeshOps
import MeshPSClient
import MeshProto
import MeshTensor
import MeshWire

/// A variable as the ps holds it: its definition, update rule, value,
/// optimizer slots and version (the number of updates applied).
struct HeldVariable: Sendable {
  /// The definition without its initial value's bytes (see `initialValueHash`).
  private(set) var definition: Pipemesh_V1_VariableDefinition
  /// FNV-1a of the initial value's bytes: re-registering must give the same.
  let initialValueHash: UInt64
  let optimizer: any Optimizer
  let shape: [Int]
  /// Nil while the variable's writer keeps its values (see
  /// `RegisterRequest.writer_keeps_values`), until it assigns them.
  var value: Tensor?
  var slots: [String: Tensor]
  var version: Int64
  /// Sync consistency: the last step applied (a push of it again is a retry).
  var syncStep: Int64 = 0
  /// Async and bounded: the last step each pusher had applied to this
  /// variable; a push of it at or below that is a retry. (Per variable, since
  /// one step's push may come in several requests.)
  var lastSteps: [Pusher: Int64] = [:]
  /// The stages that registered it; more than one for tied weights.
  var users: Set<String>
  /// Bytes this variable takes from its ps's memory budget: its value and
  /// every slot its optimizer keeps.
  let reservedBytes: Int

  /// Validates a definition, reserves its bytes (value and optimizer slots)
  /// in `budget`, and draws the initial value, unless its writer keeps it.
  /// Throws before allocating anything when the definition is invalid or
  /// does not fit; the caller releases `reservedBytes` when it drops the
  /// variable.
  init(
    defining definition: Pipemesh_V1_VariableDefinition, user: String, keptByWriter: Bool, budget: MemoryBudget
  ) throws {
    try MeshNames.checkVariable(definition.name)
    guard definition.dtype == .float32 || definition.dtype == .unspecified else {
      throw ParameterServerError(
        .invalidRequest,
        "variable \(definition.name) has dtype \(definition.dtype); only DTYPE_FLOAT32 is held")
    }
    guard definition.shape.allSatisfy({ $0 > 0 && $0 <= Int32.max }) else {
      throw ParameterServerError(
        .invalidRequest,
        "variable \(definition.name) has shape \(definition.shape.description.echoed); every extent must be 1 to 2^31-1"
      )
    }
    let shape = definition.shape.map { Int($0) }
    let valueBytes = Tensor.checkedCount(of: shape).flatMap {
      $0.multipliedReportingOverflow(by: 4).overflow ? nil : $0 * 4
    }
    guard let valueBytes, valueBytes <= budget.variableLimit else {
      throw ParameterServerError(
        .overBudget,
        "variable \(definition.name) of shape \(definition.shape) is larger than this ps's limit of "
          + "\(HostMemory.describe(budget.variableLimit)) for one variable (--max-variable-mib)")
    }
    let optimizer = try makeOptimizer(definition.optimizer)
    let reserved = valueBytes * (1 + optimizer.slotNames.count)
    try budget.reserve(
      reserved, for: "variable \(definition.name) of shape \(definition.shape) with its optimizer slots")
    do {
      try self.init(
        validated: definition, shape: shape, optimizer: optimizer, user: user, keptByWriter: keptByWriter,
        reservedBytes: reserved)
    } catch {
      budget.release(reserved)
      throw error
    }
  }

  private init(
    validated definition: Pipemesh_V1_VariableDefinition, shape: [Int], optimizer: any Optimizer, user: String,
    keptByWriter: Bool, reservedBytes: Int
  ) throws {
    self.optimizer = optimizer
    self.shape = shape
    self.reservedBytes = reservedBytes
    if definition.hasInitialValue, definition.hasInitializer {
      throw ParameterServerError(
        .invalidRequest,
        "variable \(definition.name) gives both an initializer and an initial value")
    }
    if keptByWriter {
      value = nil
    } else if definition.hasInitialValue {
      let value = try Tensor(wire: definition.initialValue, what: "initial value of \(definition.name)")
      guard value.shape == shape else {
        throw ParameterServerError(
          .invalidRequest,
          "initial value of \(definition.name) has shape \(value.shape), the variable \(shape)")
      }
      guard value.allFinite else {
        throw ParameterServerError(.invalidRequest, "initial value of \(definition.name) holds NaN or infinity")
      }
      self.value = value
    } else {
      guard definition.initializerOffset >= 0, definition.initializerOffset <= 1 << 53 else {
        throw ParameterServerError(
          .invalidRequest,
          "variable \(definition.name) gives initializer_offset \(definition.initializerOffset); it must be 0 to 2^53")
      }
      value = try definition.initializer.makeTensor(shape, elementOffset: Int(definition.initializerOffset))
    }
    (self.definition, initialValueHash) = Self.split(definition)
    slots = [:]
    version = 0
    users = [user]
  }

  /// Restores a variable from a checkpoint.
  init(
    definition: Pipemesh_V1_VariableDefinition, initialValueHash: UInt64, value: Tensor?, slots: [String: Tensor],
    version: Int64, syncStep: Int64, lastSteps: [Pusher: Int64], users: Set<String>
  ) throws {
    self.syncStep = syncStep
    self.lastSteps = lastSteps
    self.definition = definition
    self.initialValueHash = initialValueHash
    optimizer = try makeOptimizer(definition.optimizer)
    shape = definition.shape.map { Int($0) }
    guard value == nil || value?.shape == shape else {
      throw ParameterServerError(
        .damaged,
        "variable \(definition.name) has a value of shape \(value!.shape), not \(shape)")
    }
    self.value = value
    self.slots = slots
    self.version = version
    self.users = users
    reservedBytes = shape.reduce(4, *) * (1 + optimizer.slotNames.count)
  }

  /// A definition without its initial value's bytes, and their hash.
  static func split(_ definition: Pipemesh_V1_VariableDefinition) -> (Pipemesh_V1_VariableDefinition, UInt64) {
    var stripped = definition
    stripped.initialValue.data = Data()
    return (stripped, fnv1a64(definition.initialValue.data))
  }

  /// Whether `other` defines this variable again (registration is
  /// idempotent), or the same without clipping (see `takeClipping(of:)`).
  func isDefined(by other: Pipemesh_V1_VariableDefinition) -> Bool {
    var (definition, hash) = Self.split(other)
    if definition.optimizer.clipGlobalNorm == 0 {
      definition.optimizer.clipGlobalNorm = self.definition.optimizer.clipGlobalNorm
    }
    return definition == self.definition && hash == initialValueHash
  }

  /// Takes a registration's clipping norm when it turns clipping off: a job
  /// checkpointed while the ps clipped its stages' pushes registers again
  /// without, as the coordinator clips them now.
  mutating func takeClipping(of other: Pipemesh_V1_VariableDefinition) {
    if other.optimizer.clipGlobalNorm == 0 { definition.optimizer.clipGlobalNorm = 0 }
  }

  /// Applies one gradient through the optimizer (to a variable this task
  /// holds: `decodeGradient` refuses the others).
  mutating func apply(_ gradient: Tensor) {
    optimizer.update(variable: &value!, gradient: gradient, slots: &slots, step: Int(version + 1))
    version += 1
  }

  /// The highest version an assignment may give (far beyond any number of
  /// steps, and far from overflowing the step arithmetic).
  static let maxVersion: Int64 = 1 << 53

  /// Takes the state its writer kept: checked whole before anything changes.
  mutating func assign(_ state: Pipemesh_V1_VariableState, user: String, job: String) throws {
    let name = definition.name
    guard users == [user] else {
      throw ParameterServerError(
        .conflict,
        "variable \(name) of job \(job) is registered by \(users.sorted()); only its sole writer assigns it")
    }
    guard state.version >= 0, state.version <= Self.maxVersion else {
      throw ParameterServerError(
        .invalidRequest,
        "assignment of \(name) gives version \(state.version); versions are 0 to 2^53")
    }
    guard state.version >= version else {
      throw ParameterServerError(
        .conflict,
        "assignment of \(name) at version \(state.version) is older than the version held, \(version)")
    }
    if state.version == version, value != nil { return }  // A retry.
    let assigned = try Tensor(wire: state.value, what: "value of \(name)")
    guard assigned.shape == shape, assigned.allFinite else {
      throw ParameterServerError(
        .invalidRequest,
        "value of \(name) must be finite and of shape \(shape); it is of shape \(assigned.shape)")
    }
    // No slots: they start fresh, as an optimizer's missing slots do.
    guard
      state.slots.isEmpty
        || (Set(state.slots.map(\.name)) == Set(optimizer.slotNames) && state.slots.count == optimizer.slotNames.count)
    else {
      throw ParameterServerError(
        .invalidRequest,
        "slots of \(name) are \(state.slots.map(\.name).sorted()); its optimizer keeps \(optimizer.slotNames.sorted())")
    }
    var slots: [String: Tensor] = [:]
    for slot in state.slots {
      let tensor = try Tensor(wire: slot.tensor, what: "slot \(slot.name) of \(name)")
      guard tensor.shape == shape, tensor.allFinite else {
        throw ParameterServerError(.invalidRequest, "slot \(slot.name) of \(name) must be finite and of shape \(shape)")
      }
      slots[slot.name] = tensor
    }
    (value, self.slots, version, syncStep) = (assigned, slots, state.version, max(syncStep, state.version))
  }

  var snapshot: VariableSnapshot { VariableSnapshot(value: value, slots: slots, version: version) }
}

/// What pulls read: a variable's latest applied state (no value while its
/// writer keeps it).
struct VariableSnapshot: Sendable {
  let value: Tensor?
  let slots: [String: Tensor]
  let version: Int64
}

/// Checks a pushed gradient against its variable: present, float32, same
/// shape, finite.
func decodeGradient(_ gradient: Pipemesh_V1_Gradient, for variable: HeldVariable?, job: String) throws -> Tensor {
  guard let variable else {
    throw ParameterServerError(.notHeld, "job \(job) has no variable \(gradient.name): register it first")
  }
  guard variable.value != nil else {
    throw ParameterServerError(
      .conflict,
      "variable \(gradient.name) of job \(job) is kept by its writer, \(variable.users.sorted().joined()): "
        + "it applies its own updates and assigns the values")
  }
  guard gradient.baseVersion >= 0 else {
    throw ParameterServerError(
      .invalidRequest,
      "gradient of \(gradient.name) gives base_version \(gradient.baseVersion); versions start at 0")
  }
  let tensor = try Tensor(wire: gradient.gradient, what: "gradient of \(gradient.name)")
  guard tensor.shape == variable.shape else {
    throw ParameterServerError(
      .invalidRequest,
      "gradient of \(gradient.name) has shape \(tensor.shape), the variable \(variable.shape)")
  }
  guard tensor.allFinite else {
    throw ParameterServerError(
      .nonFiniteGradient, "gradient of \(gradient.name) holds NaN or infinity; nothing was applied")
  }
  return tensor
}
