/// A recorded operation: the nodes of its inputs and the rule that turns the gradient of its
/// result into gradients for those inputs. A leaf node (a tensor passed to `trackingGradients()`)
/// has no parents and no rule.
///
/// The fields are written only by `deinit`, on nodes nobody else references, which is why the
/// unchecked `Sendable` conformance is sound.
final class GradNode: @unchecked Sendable {
  private(set) var parents: [GradNode?]
  let parentShapes: [[Int]]
  private(set) var rule: (@Sendable (Tensor, BackwardPass) -> [Tensor?])?

  init(parents: [GradNode?], parentShapes: [[Int]], rule: (@Sendable (Tensor, BackwardPass) -> [Tensor?])?) {
    self.parents = parents
    self.parentShapes = parentShapes
    self.rule = rule
  }

  /// Tears the graph down iteratively: releasing a long chain recursively (one frame per node)
  /// overflowed the stack at about 10⁵ nodes. Rules only capture parent tensors, so dropping a
  /// rule while its parents are held here frees nothing deep.
  deinit {
    var pending = parents.compactMap { $0 }
    rule = nil
    parents = []
    while var node = pending.popLast() {
      if isKnownUniquelyReferenced(&node) {
        node.rule = nil
        pending.append(contentsOf: node.parents.compactMap { $0 })
        node.parents = []
      }
    }
  }
}

extension Tensor {
  /// Whether operations on this tensor are being recorded.
  public var isTrackingGradients: Bool { node != nil }

  /// The same values as a new leaf of the tape: gradients can be requested with respect to it.
  public func trackingGradients() -> Tensor {
    Tensor(
      shape: shape, buffer: buffer,
      node: GradNode(parents: [], parentShapes: [], rule: nil))
  }

  /// The same values without any recorded history: operations on it record nothing. Nothing
  /// switches recording off; inference and gradient rules compute on detached tensors.
  public func detached() -> Tensor {
    Tensor(shape: shape, buffer: buffer)
  }

  /// Attaches `rule` to `result` when some input is tracked.
  /// `rule` receives the gradient of `result` and returns one gradient per input, either in
  /// the input's shape or in a shape that broadcasts to it (it is summed back in `backward`).
  /// A rule never passes a tracked tensor to a recorded operation: it computes on raw kernels
  /// or detached copies (the gradient it receives is untracked), so that the backward pass
  /// records nothing. `splitBackward` checks each rule's results.
  static func recorded(
    _ result: Tensor, inputs: [Tensor], rule: @escaping @Sendable (Tensor) -> [Tensor?]
  ) -> Tensor {
    recorded(result, inputs: inputs, passRule: { gradient, _ in rule(gradient) })
  }

  /// `recorded(_:inputs:rule:)` for a rule that adds into the pass's gradient sums itself
  /// (a matrix product's, a convolution's): it also receives the `BackwardPass`.
  static func recorded(
    _ result: Tensor, inputs: [Tensor], passRule: @escaping @Sendable (Tensor, BackwardPass) -> [Tensor?]
  ) -> Tensor {
    guard inputs.contains(where: { $0.node != nil }) else { return result }
    var tracked = result
    tracked.node = GradNode(parents: inputs.map(\.node), parentShapes: inputs.map(\.shape), rule: passRule)
    return tracked
  }
}

/// Reverse-mode differentiation over the recorded operations.
public enum Autodiff {
  /// Gradients of the scalar `loss` with respect to each of `variables` (zeros for a variable
  /// the loss does not depend on). Every variable must be tracking gradients.
  public static func gradients(of loss: Tensor, withRespectTo variables: [Tensor]) -> [Tensor] {
    precondition(loss.scalarCount == 1, "loss must have one scalar, has shape \(loss.shape)")
    return backward(from: loss, upstream: Tensor(shape: loss.shape, repeating: 1), withRespectTo: variables)
  }

  /// Vector-Jacobian product: given `upstream`, the gradient of some later quantity with respect
  /// to `output`, returns the gradient of that quantity with respect to each of `variables`.
  /// This is the backward step of a pipeline stage.
  public static func backward(
    from output: Tensor, upstream: Tensor, withRespectTo variables: [Tensor]
  ) -> [Tensor] {
    var none = [Tensor?](repeating: nil, count: variables.count)
    return zip(backward(from: output, upstream: upstream, withRespectTo: variables, addingInto: &none), variables)
      .map { $0 ?? Tensor.zeros($1.shape) }
  }

  /// Like `backward(from:upstream:withRespectTo:)`, but the gradient of each variable whose
  /// entry in `sums` is set (to a tensor of its shape) is added into that entry instead of
  /// being returned: a matrix product that yields it adds straight into the sum (sgemm with
  /// beta = 1), which saves a pass over it and the product's own zeroing. This is how a stage
  /// sums its weight gradients over micro-batches. Returns the other variables' gradients (nil
  /// for one the output does not depend on) and nil for the summed ones.
  public static func backward(
    from output: Tensor, upstream: Tensor, withRespectTo variables: [Tensor], addingInto sums: inout [Tensor?]
  ) -> [Tensor?] {
    let (gradients, weights) = splitBackward(
      from: output, upstream: upstream, withRespectTo: variables, addingInto: &sums, holdingBack: false)
    weights.compute()
    return gradients
  }

  /// The backward pass in two halves, as zero-bubble schedules place them: returns the
  /// gradients `backward(…addingInto:)` returns (the input gradient among them: the B half)
  /// and, held back, the products that add into the sums (a matrix product's or a
  /// convolution's gradient of a summed variable, a convolution's bias with its filter: the
  /// W half), to compute later. Other additions into the sums (a dense layer's bias row sums)
  /// happen in the B half. The arithmetic is the
  /// same as in one pass; each held product keeps the output gradient it multiplies alive.
  public static func splitBackward(
    from output: Tensor, upstream: Tensor, withRespectTo variables: [Tensor], addingInto sums: inout [Tensor?]
  ) -> (gradients: [Tensor?], weights: WeightGradients) {
    splitBackward(from: output, upstream: upstream, withRespectTo: variables, addingInto: &sums, holdingBack: true)
  }

  private static func splitBackward(
    from output: Tensor, upstream: Tensor, withRespectTo variables: [Tensor], addingInto sums: inout [Tensor?],
    holdingBack: Bool
  ) -> (gradients: [Tensor?], weights: WeightGradients) {
    precondition(
      upstream.shape == output.shape,
      "upstream gradient shape \(upstream.shape) differs from output shape \(output.shape)")
    precondition(sums.count == variables.count, "one sum (or nil) per variable")
    var sinks: [ObjectIdentifier: GradientSink] = [:]
    for (index, variable) in variables.enumerated() {
      precondition(variable.node != nil, "gradient requested for a tensor that is not tracking gradients")
      guard sums[index] != nil else { continue }
      precondition(
        sums[index]!.shape == variable.shape,
        "sum of shape \(sums[index]!.shape) for a variable of shape \(variable.shape)")
      // Owned by `sums` alone from here, so that writing through its pointer is safe.
      sums[index]!.withUnsafeMutableBufferPointer { _ in }
      sinks[ObjectIdentifier(variable.node!)] = GradientSink(sums[index]!)
    }
    guard let root = output.node else {
      return (variables.map { _ -> Tensor? in nil }, WeightGradients(products: []))
    }
    let wanted = Set(variables.compactMap { $0.node.map(ObjectIdentifier.init) })
    var grads: [ObjectIdentifier: Tensor] = [ObjectIdentifier(root): upstream.detached()]
    let pass = BackwardPass(sinks: sinks, holdingBack: holdingBack)
    for node in reverseTopologicalOrder(from: root) {
      let id = ObjectIdentifier(node)
      guard let rule = node.rule, let gradient = grads[id] else { continue }
      if !wanted.contains(id) { grads[id] = nil }
      let parentGrads = rule(gradient, pass)
      precondition(
        parentGrads.allSatisfy { $0?.isTrackingGradients != true },
        "a gradient rule passed a tracked tensor to a recorded operation")
      for (index, parent) in node.parents.enumerated() {
        guard let parent, let parentGrad = parentGrads[index] else { continue }
        // The one place where broadcast gradients are summed back to the input's shape.
        let reduced = parentGrad.summedToShape(node.parentShapes[index])
        let parentID = ObjectIdentifier(parent)
        if let sink = sinks[parentID] {
          sink.add(reduced)
        } else if var existing = grads[parentID] {
          grads[parentID] = nil
          existing.accumulate(reduced)
          grads[parentID] = existing
        } else {
          grads[parentID] = reduced
        }
      }
    }
    let gradients = variables.map { sinks[ObjectIdentifier($0.node!)] == nil ? grads[ObjectIdentifier($0.node!)] : nil }
    return (gradients, WeightGradients(products: pass.heldProducts))
  }

  /// Evaluates `body` at tracked copies of `inputs` and returns the result with a
  /// backpropagator that maps an upstream gradient to gradients for `inputs`.
  public static func valueWithBackpropagator(
    at inputs: [Tensor], _ body: ([Tensor]) -> Tensor
  ) -> (value: Tensor, backpropagator: Backpropagator) {
    let tracked = inputs.map { $0.trackingGradients() }
    let output = body(tracked)
    return (output.detached(), Backpropagator(output: output, inputs: tracked))
  }

  /// Evaluates the scalar `body` and its gradients with respect to `inputs`.
  public static func valueWithGradient(
    at inputs: [Tensor], _ body: ([Tensor]) -> Tensor
  ) -> (value: Tensor, gradients: [Tensor]) {
    let tracked = inputs.map { $0.trackingGradients() }
    let output = body(tracked)
    return (output.detached(), gradients(of: output, withRespectTo: tracked))
  }

  /// Nodes reachable from `root`, each after every node that consumes it.
  static func reverseTopologicalOrder(from root: GradNode) -> [GradNode] {
    var order: [GradNode] = []
    var visited: Set<ObjectIdentifier> = [ObjectIdentifier(root)]
    var stack: [(node: GradNode, nextParent: Int)] = [(root, 0)]
    while let top = stack.last {
      if top.nextParent < top.node.parents.count {
        stack[stack.count - 1].nextParent += 1
        if let parent = top.node.parents[top.nextParent],
          visited.insert(ObjectIdentifier(parent)).inserted
        {
          stack.append((parent, 0))
        }
      } else {
        order.append(top.node)
        stack.removeLast()
      }
    }
    return order.reversed()
  }
}

/// A sum that gradients of one leaf are added into during `Autodiff.backward(…addingInto:)`,
/// by the engine or, for a matrix product, by the product itself. Valid while the sum's tensor
/// is owned by the caller's `sums` alone: during that call, and until its `WeightGradients` ran.
struct GradientSink: @unchecked Sendable {
  let pointer: UnsafeMutablePointer<Float>
  let shape: [Int]

  init(_ sum: Tensor) {
    pointer = sum.buffer.pointer
    shape = sum.shape
  }

  func add(_ gradient: Tensor) {
    precondition(gradient.shape == shape, "adding a gradient of shape \(gradient.shape) into \(shape)")
    gradient.add(into: pointer)
  }
}

/// What the gradient rules of one backward pass share, passed to each rule: the sums some
/// leaves' gradients are added into, and the products into them that the pass holds back for
/// its weight-gradient half. Used by that pass alone, on its task.
final class BackwardPass: @unchecked Sendable {
  private let sinks: [ObjectIdentifier: GradientSink]
  private let holdingBack: Bool
  private(set) var heldProducts: [@Sendable () -> Void] = []

  init(sinks: [ObjectIdentifier: GradientSink], holdingBack: Bool) {
    self.sinks = sinks
    self.holdingBack = holdingBack
  }

  /// The sum `tensor`'s gradient is added into, if it is a leaf being summed.
  func sink(of tensor: Tensor) -> GradientSink? {
    tensor.node.flatMap { sinks[ObjectIdentifier($0)] }
  }

  /// Runs a product that adds into a sum now, or holds it for the weight-gradient half.
  func addIntoSum(_ product: @escaping @Sendable () -> Void) {
    if holdingBack { heldProducts.append(product) } else { product() }
  }
}

/// The weight-gradient half of a backward pass (W in a zero-bubble schedule): the products
/// into the gradient sums that `Autodiff.splitBackward` held back. Compute it once, while the
/// sums it adds into are still owned by the caller alone.
public struct WeightGradients: @unchecked Sendable {
  private let products: [@Sendable () -> Void]

  init(products: [@Sendable () -> Void]) { self.products = products }

  /// Whether there is nothing to compute.
  public var isEmpty: Bool { products.isEmpty }

  /// Adds the held products into their sums, in the order the pass reached them.
  public func compute() {
    for product in products { product() }
  }

  /// These products, then `more`.
  func followed(by more: [@Sendable () -> Void]) -> WeightGradients {
    WeightGradients(products: products + more)
  }
}

/// The recorded computation behind a forward result; call it (possibly much later, e.g. when a
/// pipeline stage receives its output gradient) to get the input gradients.
public struct Backpropagator: Sendable {
  let output: Tensor
  let inputs: [Tensor]

  /// Gradients with respect to the inputs, given the gradient with respect to the output.
  public func callAsFunction(_ upstream: Tensor) -> [Tensor] {
    Autodiff.backward(from: output, upstream: upstream, withRespectTo: inputs)
  }

  /// Adds the gradients of the inputs whose `sums` entry is set into it; returns the others'.
  public func callAsFunction(_ upstream: Tensor, addingInto sums: inout [Tensor?]) -> [Tensor?] {
    Autodiff.backward(from: output, upstream: upstream, withRespectTo: inputs, addingInto: &sums)
  }

  /// The two halves of `callAsFunction(_:addingInto:)`: the gradients now, the products into
  /// the sums held back (see `Autodiff.splitBackward`).
  public func split(_ upstream: Tensor, addingInto sums: inout [Tensor?]) -> (
    gradients: [Tensor?], weights: WeightGradients
  ) {
    Autodiff.splitBackward(from: output, upstream: upstream, withRespectTo: inputs, addingInto: &sums)
  }
}
