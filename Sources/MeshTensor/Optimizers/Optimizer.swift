/// An update rule: a pure function from (variable, gradient, slots, step) to the new variable
/// and new slots. Slots are named tensors shaped like the variable ("m", "v", …) so a parameter
/// server can store them next to the variable; missing slots start at their initial value.
public protocol Optimizer: Sendable {
  /// Names of the slots this rule keeps per variable.
  var slotNames: [String] { get }
  /// The learning rate schedule.
  var learningRate: LearningRateSchedule { get }
  /// Applies step `step` (1-based) of the rule to one variable.
  func update(variable: Tensor, gradient: Tensor, slots: [String: Tensor], step: Int) -> (
    variable: Tensor, slots: [String: Tensor]
  )
}

extension Optimizer {
  /// Applies the rule to every variable that has a gradient, in place.
  public func update(
    _ variables: inout [String: Tensor], along gradients: [String: Tensor],
    slots: inout [String: [String: Tensor]], step: Int
  ) {
    for (name, gradient) in gradients {
      guard let variable = variables[name] else { preconditionFailure("gradient for unknown variable \(name)") }
      let result = update(variable: variable, gradient: gradient, slots: slots[name] ?? [:], step: step)
      variables[name] = result.variable
      slots[name] = result.slots
    }
  }

  /// The slot `name` from `slots`, or `initial` repeated in the variable's shape.
  func slot(_ name: String, _ slots: [String: Tensor], like variable: Tensor, initial: Float = 0) -> Tensor {
    if let existing = slots[name] {
      precondition(
        existing.shape == variable.shape, "slot \(name) has shape \(existing.shape), variable \(variable.shape)")
      return existing.detached()
    }
    return Tensor(shape: variable.shape, repeating: initial)
  }
}

/// Pointers for one out-of-place update: read the old variable, gradient and slots; write the
/// new variable and slots (fresh buffers, so the inputs keep their values).
struct UpdateStreams {
  let w: UnsafePointer<Float>
  let g: UnsafePointer<Float>
  let slots: [UnsafePointer<Float>]
  let newW: UnsafeMutablePointer<Float>
  let newSlots: [UnsafeMutablePointer<Float>]
  let count: Int
}

/// Allocates the new variable and slots and lets `body` fill them in one pass.
func elementwiseUpdate(variable: Tensor, gradient: Tensor, slots: [Tensor], _ body: (UpdateStreams) -> Void) -> (
  Tensor, [Tensor]
) {
  precondition(
    variable.shape == gradient.shape, "gradient shape \(gradient.shape) differs from variable \(variable.shape)")
  let newVariable = Tensor(uninitializedShape: variable.shape)
  let newSlots = slots.map { Tensor(uninitializedShape: $0.shape) }
  body(
    UpdateStreams(
      w: variable.buffer.pointer, g: gradient.buffer.pointer, slots: slots.map { UnsafePointer($0.buffer.pointer) },
      newW: newVariable.buffer.pointer, newSlots: newSlots.map(\.buffer.pointer), count: variable.scalarCount))
  return (newVariable, newSlots)
}
