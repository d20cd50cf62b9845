import COpenBLAS

/// A fitted linear model y ≈ x · weights + bias.
public struct LinearModel: Sendable, Equatable {
  /// [features, outputs]
  public let weights: Tensor
  /// [outputs]
  public let bias: Tensor

  /// Predictions for x [samples, features].
  public func predict(_ x: Tensor) -> Tensor {
    Tensor.matmul(x.detached(), weights) + bias
  }
}

/// How gradient descent walks through the samples each epoch.
public enum GradientDescentMode: Sendable, Equatable {
  /// One step per epoch on all samples.
  case batch
  /// One step per sample, in a seeded shuffled order.
  case stochastic
  /// One step per mini-batch of `size` samples, in a seeded shuffled order.
  case miniBatch(size: Int)
}

/// Linear and ridge regression: closed form through OpenBLAS LAPACK and gradient descent.
/// The objective is ‖x·w + b − y‖² + λ‖w‖² (the bias is not penalised).
public enum LinearRegression {
  /// Solves the centred normal equations (XcᵀXc + λI) W = Xcᵀ Yc with Cholesky (`sposv_`), then
  /// b = ȳ − x̄·W. Throws when the system is not positive definite (collinear features, λ = 0).
  public static func closedForm(x: Tensor, y: Tensor, ridge: Float = 0) throws -> LinearModel {
    let (xc, yc, xMean, yMean) = centred(x: x, y: y)
    let features = x.shape[1]
    let outputs = y.shape[1]
    // Row-major [F, F] Gram matrix is symmetric, so it is also the column-major one.
    let gram = Tensor.matmulValues(xc, xc, transposeA: true)
    for i in 0..<features { gram.buffer.pointer[i * features + i] += ridge }
    // Right-hand side column-major [F, O] = row-major [O, F] = Ycᵀ Xc.
    let rhs = Tensor.matmulValues(yc, xc, transposeA: true)
    var n = Int32(features)
    var nrhs = Int32(outputs)
    var lda = Int32(features)
    var ldb = Int32(features)
    var info: Int32 = 0
    var uplo = CChar(UInt8(ascii: "U"))
    sposv_(&uplo, &n, &nrhs, gram.buffer.pointer, &lda, rhs.buffer.pointer, &ldb, &info, 1)
    guard info == 0 else {
      throw TensorError(
        message:
          "normal equations are not positive definite (LAPACK sposv info \(info)); add a ridge penalty or remove collinear features"
      )
    }
    let weights = rhs.reshapedValues(to: [outputs, features]).permuted([1, 0])
    return LinearModel(
      weights: weights, bias: (yMean - Tensor.matmul(xMean, weights)).reshapedValues(to: [outputs]))
  }

  /// Ordinary least squares through QR (`sgels_`), fitting the bias as an extra column of ones.
  public static func leastSquares(x: Tensor, y: Tensor) throws -> LinearModel {
    let samples = x.shape[0]
    let features = x.shape[1]
    let outputs = y.shape[1]
    precondition(y.shape[0] == samples, "x has \(samples) samples, y has \(y.shape[0])")
    guard samples > features else {
      throw TensorError(message: "least squares needs more samples (\(samples)) than features + 1 (\(features + 1))")
    }
    let columns = features + 1
    // Column-major A [samples, columns]: stored as row-major [columns, samples].
    let a = Tensor.concatenate([x.detached(), Tensor.ones([samples, 1])], alongAxis: 1).permuted([1, 0]).detached()
    let b = y.detached().permuted([1, 0]).detached()  // column-major [samples, outputs]
    var m = Int32(samples)
    var n = Int32(columns)
    var nrhs = Int32(outputs)
    var lda = Int32(samples)
    var ldb = Int32(samples)
    var info: Int32 = 0
    var lwork: Int32 = -1
    var query: Float = 0
    var trans = CChar(UInt8(ascii: "N"))
    sgels_(&trans, &m, &n, &nrhs, a.buffer.pointer, &lda, b.buffer.pointer, &ldb, &query, &lwork, &info, 1)
    lwork = Int32(query)
    var work = [Float](repeating: 0, count: Int(lwork))
    sgels_(&trans, &m, &n, &nrhs, a.buffer.pointer, &lda, b.buffer.pointer, &ldb, &work, &lwork, &info, 1)
    guard info == 0 else {
      throw TensorError(
        message: "least squares failed: the design matrix is rank deficient (LAPACK sgels info \(info))")
    }
    // The first `columns` rows of each column of b hold the solution.
    let solution = Tensor(uninitializedShape: [columns, outputs])
    for o in 0..<outputs {
      for row in 0..<columns { solution.buffer.pointer[row * outputs + o] = b.buffer.pointer[o * samples + row] }
    }
    return LinearModel(
      weights: solution.slice(axis: 0, range: 0..<features).detached(),
      bias: solution.slice(axis: 0, range: features..<columns).detached().reshapedValues(to: [outputs]))
  }

  /// Minimises (1/n)·(‖x·w + b − y‖² + λ‖w‖²) by gradient descent from zero, with gradients
  /// from the autodiff tape. Stochastic and mini-batch modes scale the penalty by the batch
  /// share so each epoch sees it once in expectation.
  public static func gradientDescent(
    x: Tensor, y: Tensor, ridge: Float = 0, mode: GradientDescentMode,
    learningRate: LearningRateSchedule, epochs: Int, seed: UInt64 = 0
  ) -> LinearModel {
    let samples = x.shape[0]
    let features = x.shape[1]
    let outputs = y.shape[1]
    let batchSize: Int
    switch mode {
    case .batch: batchSize = samples
    case .stochastic: batchSize = 1
    case .miniBatch(let size): batchSize = size
    }
    var weights = Tensor.zeros([features, outputs])
    var bias = Tensor.zeros([outputs])
    var step = 0
    for epoch in 0..<epochs {
      let order =
        mode == .batch
        ? Array(0..<samples) : PortableRandom.permutation(samples, seed: PortableRandom.epochSeed(seed, epoch: epoch))
      for start in stride(from: 0, to: samples, by: batchSize) {
        let rows = Array(order[start..<Swift.min(start + batchSize, samples)])
        let xb = x.gathering(indices: rows, indexShape: [rows.count]).detached()
        let yb = y.gathering(indices: rows, indexShape: [rows.count]).detached()
        let share = Float(rows.count) / Float(samples)
        let (_, grads) = Autodiff.valueWithGradient(at: [weights, bias]) { v in
          let residual = Tensor.matmul(xb, v[0]) + v[1] - yb
          return (residual.squared().sum() + v[0].squared().sum() * (ridge * share)) / Float(rows.count)
        }
        step += 1
        let lr = learningRate.rate(atStep: step)
        weights = weights - grads[0] * lr
        bias = bias - grads[1] * lr
      }
    }
    return LinearModel(weights: weights, bias: bias)
  }

  /// Column means and centred copies of x and y.
  private static func centred(x: Tensor, y: Tensor) -> (Tensor, Tensor, Tensor, Tensor) {
    precondition(
      x.rank == 2 && y.rank == 2 && x.shape[0] == y.shape[0], "x must be [samples, features] and y [samples, outputs]")
    let (x, y) = (x.detached(), y.detached())
    let xMean = x.mean(alongAxes: [0], keepingDims: true)
    let yMean = y.mean(alongAxes: [0], keepingDims: true)
    return (x - xMean, y - yMean, xMean, yMean)
  }
}
