/// One step of a stage's work on micro-batch `microBatch` of stage `stage`:
/// forward, backward, or the backward's weight-gradient half. Prints and
/// parses as `1F0` / `2B3` / `2W3`.
///
/// A backward whose micro-batch has a `W` action in the stage's list
/// computes the input gradient only (B); the `W` action computes the weight
/// gradients later, where the schedule places it (zero-bubble schedules fill
/// the pipeline's idle time with them). Without a `W`, a backward computes
/// both.
public struct PipelineAction: Hashable, Sendable, LosslessStringConvertible {
  public enum Kind: Character, Sendable, CaseIterable {
    case forward = "F"
    case backward = "B"
    case weights = "W"
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

  public static func weights(_ stage: Int, _ microBatch: Int) -> PipelineAction {
    PipelineAction(stage: stage, kind: .weights, microBatch: microBatch)
  }

  public var description: String { "\(stage)\(kind.rawValue)\(microBatch)" }

  public init?(_ text: String) {
    guard let index = text.firstIndex(where: { Kind(rawValue: $0) != nil }),
      let stage = Int(text[..<index]), let microBatch = Int(text[text.index(after: index)...]),
      let kind = Kind(rawValue: text[index]), stage >= 0, microBatch >= 0
    else { return nil }
    self.init(stage: stage, kind: kind, microBatch: microBatch)
  }

  /// The actions that must finish before this one can start: the previous
  /// stage's forward of the micro-batch; for a backward, its own forward and
  /// the next stage's backward; for the weights, its own backward.
  public func dependencies(stages: Int) -> [PipelineAction] {
    switch kind {
    case .forward:
      return stage > 0 ? [.forward(stage - 1, microBatch)] : []
    case .backward:
      return [.forward(stage, microBatch)] + (stage < stages - 1 ? [.backward(stage + 1, microBatch)] : [])
    case .weights:
      return [.backward(stage, microBatch)]
    }
  }
}
