/// A recorded operation: the nodes of its inputs and the rule that turns the gradient of its
/// result into gradients for those inputs. A leaf node (a tensor passed to `trackingGradients()`)
/// has no parents and no rule.
///
/// The fields are written only by `deinit`, on nodes nobody else references, which is why the
/// unchecked `Sendable` conformance is sound.
final class GradNode: @unchecked Sendable {
    private(set) var parents: [GradNode?]
    let parentShapes: [[Int]]
    private(set) var rule: (@Sendable (Tensor) -> [Tensor?])?

    init(parents: [GradNode?], parentShapes: [[Int]], rule: (@Sendable (Tensor) -> [Tensor?])?) {
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

/// Whether operations on tracked tensors are recorded in the current task.
enum GradientRecording {
    @TaskLocal static var isEnabled = true
}

/// Runs `body` without recording operations (inference, optimizer updates, gradient rules).
public func withoutGradients<R>(_ body: () throws -> R) rethrows -> R {
    try GradientRecording.$isEnabled.withValue(false) { try body() }
}

extension Tensor {
    /// Whether operations on this tensor are being recorded.
    public var isTrackingGradients: Bool { node != nil }

    /// The same values as a new leaf of the tape: gradients can be requested with respect to it.
    public func trackingGradients() -> Tensor {
        Tensor(shape: shape, buffer: buffer,
               node: GradNode(parents: [], parentShapes: [], rule: nil))
    }

    /// The same values without any recorded history.
    public func detached() -> Tensor {
        Tensor(shape: shape, buffer: buffer)
    }

    /// Attaches `rule` to `result` when recording is on and some input is tracked.
    /// `rule` receives the gradient of `result` and returns one gradient per input, either in
    /// the input's shape or in a shape that broadcasts to it (it is summed back in `backward`).
    static func recorded(
        _ result: Tensor, inputs: [Tensor], rule: @escaping @Sendable (Tensor) -> [Tensor?]
    ) -> Tensor {
        guard inputs.contains(where: { $0.node != nil }), GradientRecording.isEnabled else {
            return result
        }
        var tracked = result
        tracked.node = GradNode(parents: inputs.map(\.node), parentShapes: inputs.map(\.shape), rule: rule)
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
        precondition(upstream.shape == output.shape,
                     "upstream gradient shape \(upstream.shape) differs from output shape \(output.shape)")
        for variable in variables {
            precondition(variable.node != nil, "gradient requested for a tensor that is not tracking gradients")
        }
        guard let root = output.node else {
            return variables.map { Tensor.zeros($0.shape) }
        }
        let wanted = Set(variables.compactMap { $0.node.map(ObjectIdentifier.init) })
        var grads: [ObjectIdentifier: Tensor] = [ObjectIdentifier(root): upstream.detached()]
        withoutGradients {
            for node in reverseTopologicalOrder(from: root) {
                let id = ObjectIdentifier(node)
                guard let rule = node.rule, let gradient = grads[id] else { continue }
                if !wanted.contains(id) { grads[id] = nil }
                let parentGrads = rule(gradient)
                for (index, parent) in node.parents.enumerated() {
                    guard let parent, let parentGrad = parentGrads[index] else { continue }
                    // The one place where broadcast gradients are summed back to the input's shape.
                    let reduced = parentGrad.summedToShape(node.parentShapes[index])
                    let parentID = ObjectIdentifier(parent)
                    if var existing = grads[parentID] {
                        grads[parentID] = nil
                        existing.accumulate(reduced)
                        grads[parentID] = existing
                    } else {
                        grads[parentID] = reduced
                    }
                }
            }
        }
        return variables.map { grads[ObjectIdentifier($0.node!)] ?? Tensor.zeros($0.shape) }
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
                   visited.insert(ObjectIdentifier(parent)).inserted {
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

/// The recorded computation behind a forward result; call it (possibly much later, e.g. when a
/// pipeline stage receives its output gradient) to get the input gradients.
public struct Backpropagator: Sendable {
    let output: Tensor
    let inputs: [Tensor]

    /// Gradients with respect to the inputs, given the gradient with respect to the output.
    public func callAsFunction(_ upstream: Tensor) -> [Tensor] {
        Autodiff.backward(from: output, upstream: upstream, withRespectTo: inputs)
    }
}
