/// Embedding lookup: integer token ids (stored as Float) of any shape map to rows of "table".
public struct Embedding: Layer {
    public let name: String
    public let vocabularySize: Int
    public let embeddingSize: Int

    public init(name: String, vocabularySize: Int, embeddingSize: Int) {
        self.name = name
        self.vocabularySize = vocabularySize
        self.embeddingSize = embeddingSize
    }

    public var variableDeclarations: [VariableDeclaration] {
        [declare("table", [vocabularySize, embeddingSize], .normal(standardDeviation: 0.02), regularized: true)]
    }

    public func outputShape(forInput inputShape: [Int]) throws(ModelSpecError) -> [Int] { inputShape + [embeddingSize] }

    public func flops(forInput inputShape: [Int]) -> Int { inputShape.reduce(1, *) * embeddingSize }

    public func callAsFunction(_ input: Tensor, variables: [String: Tensor], context: ForwardContext) -> Tensor {
        let ids = input.scalars.map { Int($0) }
        return variable("table", in: variables).gathering(indices: ids, indexShape: input.shape)
    }
}
