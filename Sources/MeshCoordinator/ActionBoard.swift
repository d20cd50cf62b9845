import MeshPipeline
import MeshProto

/// Where the actions of one step post their results and wait for their
/// dependencies'.
actor ActionBoard {
  enum Result {
    case forward(Pipemesh_V1_ForwardResponse)
    case backward(Pipemesh_V1_BackwardResponse)
  }

  private var results: [PipelineAction: Result] = [:]
  private var waiting: [PipelineAction: [CheckedContinuation<Result?, Never>]] = [:]
  private var abandoned = false

  func post(_ action: PipelineAction, _ result: Result) {
    results[action] = result
    for continuation in waiting.removeValue(forKey: action) ?? [] { continuation.resume(returning: result) }
  }

  /// The result of `action` once it has one. Throws CancellationError when
  /// the step is abandoned (a failing action cancels the step's task group).
  func result(of action: PipelineAction) async throws -> Result {
    if let result = results[action] { return result }
    let result = await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<Result?, Never>) in
        if abandoned { continuation.resume(returning: nil) } else { waiting[action, default: []].append(continuation) }
      }
    } onCancel: {
      Task { await self.abandon() }
    }
    guard let result else { throw CancellationError() }
    return result
  }

  private func abandon() {
    abandoned = true
    for continuation in waiting.values.flatMap({ $0 }) { continuation.resume(returning: nil) }
    waiting = [:]
  }
}
