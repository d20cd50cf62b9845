/// An update rule: from (variable, gradient, slots, step) to the new variable and new slots.
/// Slots are named tensors shaped like the variable ("m", "v", …) so a parameter server can
/// store them next to the variable; missing slots start at their initial value.
///
/// Rules update in place: a variable (or slot) whose storage no other tensor shares is written
/// where it is, so updating a 1 GiB variable takes no second GiB; a shared one is copied first
/// (copy-on-write), so other holders keep their values.
public protocol Optimizer: Sendable {
  /// Names of the slots this rule keeps per variable.
  var slotNames: [String] { get }
  /// The learning rate schedule.
  var learningRate: LearningRateSchedule { get }
  /// Applies step `step` (1-based) of the rule to one variable and its slots, in place.
  func update(variable: inout Tensor, gradient: Tensor, slots: inout [String: Tensor], step: Int)
}

extension Optimizer {
  /// Applies step `step` of the rule to a copy of the variable and slots and returns them.
  public func update(variable: Tensor, gradient: Tensor, slots: [String: Tensor], step: Int) -> (
    variable: Tensor, slots: [String: Tensor]
  ) {
    var (variable, slots) = (variable, slots)
    update(variable: &variable, gradient: gradient, slots: &slots, step: step)
    return (variable, slots)
  }

  /// Applies the rule to every variable that has a gradient, in place.
  public func update(
    _ variables: inout [String: Tensor], along gradients: [String: Tensor],
    slots: inout [String: [String: Tensor]], step: Int
  ) {
    for (name, gradient) in gradients {
      guard variables[name] != nil else { preconditionFailure("gradient for unknown variable \(name)") }
      var variableSlots = slots.removeValue(forKey: name) ?? [:]
      update(variable: &variables[name]!, gradient: gradient, slots: &variableSlots, step: step)
      slots[name] = variableSlots
    }
  }

  /// Runs `body` over the variable, the gradient and the slots `names` (a missing one starts
  /// at `initial` everywhere) in one pass; `body` writes the variable and the slots in place.
  func elementwiseUpdate(
    _ variable: inout Tensor, gradient: Tensor, slots: inout [String: Tensor], names: [String], initial: Float = 0,
    _ body: (UpdateStreams) -> Void
  ) {
    precondition(
      variable.shape == gradient.shape, "gradient shape \(gradient.shape) differs from variable \(variable.shape)")
    var current = names.map { name in
      // Out of the dictionary, so the dictionary's reference does not force a copy.
      let existing = slots.removeValue(forKey: name) ?? Tensor(shape: variable.shape, repeating: initial)
      precondition(
        existing.shape == variable.shape, "slot \(name) has shape \(existing.shape), variable \(variable.shape)")
      return existing
    }
    let w = variable.uniqueStorage()
    let slotPointers = current.indices.map { current[$0].uniqueStorage() }
    body(
      UpdateStreams(
        w: w, g: gradient.buffer.pointer, slots: slotPointers.map { UnsafePointer($0) }, newW: w,
        newSlots: slotPointers, count: variable.scalarCount))
    for (name, slot) in zip(names, current) { slots[name] = slot }
  }
}

/// Pointers for one in-place update. Each rule reads element i of the variable, gradient and
/// slots, then writes element i of the variable and slots: `newW` is `w` and `newSlots` are
/// `slots`, read before written at every index.
struct UpdateStreams {
  let w: UnsafePointer<Float>
  let g: UnsafePointer<Float>
  let slots: [UnsafePointer<Float>]
  let newW: UnsafeMutablePointer<Float>
  let newSlots: [UnsafeMutablePointer<Float>]
  let count: Int
}
