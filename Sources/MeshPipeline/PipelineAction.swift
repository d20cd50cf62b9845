/// One step of a stage's work: run micro-batch `microBatch` forward or
/// backward on stage `stage`. Prints and parses as `1F0` / `2B3`.
public struct PipelineAction: Hashable, Sendable, LosslessStringConvertible {
  public enum Kind: Character, Sendable {
    case forward = "F"
    case backward = "B"
  }

  public let stage: Int
  public let kind: Kind
  public let microBatch: Int

  public init(stage: Int, kind: Kind, microBatch: Int) {
    self.stage = stage
    self.kind = kind
    self.microBatch = microBatch
  }

  public static func forward(_ stage: Int, _ microBatch: Int) -> PipelineAction {
    PipelineAction(stage: stage, kind: .forward, microBatch: microBatch)
  }

  public static func backward(_ stage: Int, _ microBatch: Int) -> PipelineAction {
    PipelineAction(stage: stage, kind: .backward, microBatch: microBatch)
  }

  public var description: String { "\(stage)\(kind.rawValue)\(microBatch)" }

  public init?(_ text: String) {
    guard let index = text.firstIndex(where: { $0 == "F" || $0 == "B" }),
      let stage = Int(text[..<index]), let microBatch = Int(text[text.index(after: index)...]),
      let kind = Kind(rawValue: text[index]), stage >= 0, microBatch >= 0
    else { return nil }
    self.init(stage: stage, kind: kind, microBatch: microBatch)
  }

  /// The actions that must finish before this one can start: the previous
  /// stage's forward of the micro-batch; for a backward, its own forward and
  /// the next stage's backward.
  public func dependencies(stages: Int) -> [PipelineAction] {
    switch kind {
    case .forward:
      return stage > 0 ? [.forward(stage - 1, microBatch)] : []
    case .backward:
      return [.forward(stage, microBatch)] + (stage < stages - 1 ? [.backward(stage + 1, microBatch)] : [])
    }
  }
}
