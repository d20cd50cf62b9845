// Losses: each returns a rank-0 tensor averaged over the batch.

/// Loss functions built from differentiable operations.
public enum Loss {
  /// Softmax cross-entropy of `logits` [..., classes] against integer `labels` (one per row,
  /// stored as Float in a tensor with the leading shape of `logits`), averaged over rows.
  public static func softmaxCrossEntropy(logits: Tensor, labels: Tensor) -> Tensor {
    let classes = logits.shape.last ?? 1
    let rows = logits.reshaped(to: [-1, classes])
    precondition(
      labels.scalarCount == rows.shape[0],
      "\(labels.scalarCount) labels for \(rows.shape[0]) rows of logits \(logits.shape)")
    let picked = Tensor.oneHot(labels.scalars.map { Int($0) }, classCount: classes)
    return -(rows.logSoftmax() * picked).sum() / Float(rows.shape[0])
  }

  /// Mean over all scalars of (predicted − expected)².
  public static func meanSquaredError(predicted: Tensor, expected: Tensor) -> Tensor {
    precondition(predicted.shape == expected.shape, "prediction \(predicted.shape) and target \(expected.shape) differ")
    return (predicted - expected).squared().mean()
  }

  /// (coefficient / 2) · Σ‖w‖² over `weights`.
  public static func l2Penalty(_ weights: [Tensor], coefficient: Float) -> Tensor {
    weights.reduce(Tensor(0)) { $0 + $1.squared().sum() } * (coefficient / 2)
  }

  /// Rows of `logits` [..., classes] whose largest logit is the row's integer label.
  public static func correctPredictions(logits: Tensor, labels: Tensor) -> Int {
    let classes = logits.shape.last ?? 1
    let scalars = logits.scalars
    return zip(stride(from: 0, to: scalars.count, by: classes), labels.scalars).filter { start, label in
      let row = scalars[start..<(start + classes)]
      return row.indices.max { row[$0] < row[$1] }! - start == Int(label)
    }.count
  }

  /// The loss named by `spec`.
  public static func apply(_ spec: LossSpec, output: Tensor, target: Tensor) -> Tensor {
    switch spec {
    case .softmaxCrossEntropy: return softmaxCrossEntropy(logits: output, labels: target)
    case .meanSquaredError: return meanSquaredError(predicted: output, expected: target)
    }
  }
}
