/// Long short-term memory over [batch, time, features] input. Gates are ordered input, forget,
/// cell, output in "kernel" [F, 4H], "recurrent_kernel" [H, 4H] and "bias" [4H].
/// Returns [batch, time, H] or, without `returnSequences`, the last state [batch, H].
public struct LSTM: GatedRecurrentLayer {
    public let name: String
    public let inputSize: Int
    public let hiddenSize: Int
    public let returnSequences: Bool

    public init(name: String, inputSize: Int, hiddenSize: Int, returnSequences: Bool = true) {
        self.name = name
        self.inputSize = inputSize
        self.hiddenSize = hiddenSize
        self.returnSequences = returnSequences
    }

    public static let gateCount = 4

    public func callAsFunction(_ input: Tensor, variables: [String: Tensor], context: ForwardContext) -> Tensor {
        let (batch, steps, h) = (input.shape[0], input.shape[1], hiddenSize)
        // All input projections in one product: [B, T, 4H].
        let projected = Tensor.matmul(input, variable("kernel", in: variables)) + variable("bias", in: variables)
        let recurrent = variable("recurrent_kernel", in: variables)
        var state = Tensor.zeros([batch, h]), cell = Tensor.zeros([batch, h])
        var outputs: [Tensor] = []
        for step in 0..<steps {
            let z = projected.slice(axis: 1, range: step..<(step + 1)).reshaped(to: [batch, 4 * h])
                + Tensor.matmul(state, recurrent)
            let inputGate = z.slice(axis: 1, range: 0..<h).sigmoid()
            let forgetGate = z.slice(axis: 1, range: h..<(2 * h)).sigmoid()
            let candidate = z.slice(axis: 1, range: (2 * h)..<(3 * h)).tanh()
            let outputGate = z.slice(axis: 1, range: (3 * h)..<(4 * h)).sigmoid()
            cell = forgetGate * cell + inputGate * candidate
            state = outputGate * cell.tanh()
            if returnSequences { outputs.append(state.reshaped(to: [batch, 1, h])) }
        }
        return returnSequences ? Tensor.concatenate(outputs, alongAxis: 1) : state
    }
}

/// Gated recurrent unit over [batch, time, features] input. Gates are ordered update, reset,
/// candidate in "kernel" [F, 3H], "recurrent_kernel" [H, 3H] and "bias" [3H]; the reset gate
/// multiplies the recurrent projection of the candidate (the cuDNN / PyTorch variant).
public struct GRU: GatedRecurrentLayer {
    public let name: String
    public let inputSize: Int
    public let hiddenSize: Int
    public let returnSequences: Bool

    public init(name: String, inputSize: Int, hiddenSize: Int, returnSequences: Bool = true) {
        self.name = name
        self.inputSize = inputSize
        self.hiddenSize = hiddenSize
        self.returnSequences = returnSequences
    }

    public static let gateCount = 3

    public func callAsFunction(_ input: Tensor, variables: [String: Tensor], context: ForwardContext) -> Tensor {
        let (batch, steps, h) = (input.shape[0], input.shape[1], hiddenSize)
        let projected = Tensor.matmul(input, variable("kernel", in: variables)) + variable("bias", in: variables)
        let recurrent = variable("recurrent_kernel", in: variables)
        var state = Tensor.zeros([batch, h])
        var outputs: [Tensor] = []
        for step in 0..<steps {
            let x = projected.slice(axis: 1, range: step..<(step + 1)).reshaped(to: [batch, 3 * h])
            let r = Tensor.matmul(state, recurrent)
            let update = (x.slice(axis: 1, range: 0..<h) + r.slice(axis: 1, range: 0..<h)).sigmoid()
            let reset = (x.slice(axis: 1, range: h..<(2 * h)) + r.slice(axis: 1, range: h..<(2 * h))).sigmoid()
            let candidate = (x.slice(axis: 1, range: (2 * h)..<(3 * h))
                + reset * r.slice(axis: 1, range: (2 * h)..<(3 * h))).tanh()
            state = candidate + update * (state - candidate)
            if returnSequences { outputs.append(state.reshaped(to: [batch, 1, h])) }
        }
        return returnSequences ? Tensor.concatenate(outputs, alongAxis: 1) : state
    }
}

/// What LSTM and GRU share: [batch, time, features] in, [batch, time, hidden] (or the last
/// state) out, and "kernel" [F, G·H], "recurrent_kernel" [H, G·H], "bias" [G·H] for G gates.
public protocol GatedRecurrentLayer: Layer {
    var inputSize: Int { get }
    var hiddenSize: Int { get }
    var returnSequences: Bool { get }
    /// Gates per hidden unit: 4 for LSTM, 3 for GRU.
    static var gateCount: Int { get }
}

extension GatedRecurrentLayer {
    public var variableDeclarations: [VariableDeclaration] {
        let width = Self.gateCount * hiddenSize
        return [declare("kernel", [inputSize, width], .glorotUniform(fanIn: inputSize, fanOut: width), regularized: true),
                declare("recurrent_kernel", [hiddenSize, width], .glorotUniform(fanIn: hiddenSize, fanOut: width), regularized: true),
                declare("bias", [width], .zeros, regularized: false)]
    }

    public func outputShape(forInput inputShape: [Int]) throws(ModelSpecError) -> [Int] {
        try require(inputShape, rank: 2, last: inputSize)
        guard inputShape[0] > 0 else { throw ModelSpecError("layer \(name) needs at least one time step, got \(inputShape)") }
        return returnSequences ? [inputShape[0], hiddenSize] : [hiddenSize]
    }

    public func flops(forInput inputShape: [Int]) -> Int {
        (inputShape.first ?? 0) * Self.gateCount * hiddenSize * (2 * (inputSize + hiddenSize) + 8)
    }
}
