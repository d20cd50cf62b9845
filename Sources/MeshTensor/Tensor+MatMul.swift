import COpenBLAS

// Matrix products. Every product goes through cblas_sgemm (cblas_sgemv for a single row);
// transposes are passed as flags.

/// Process-wide OpenBLAS settings.
public enum BLAS {
  /// Sets the number of threads OpenBLAS uses (each partition sets its own).
  public static func setThreadCount(_ count: Int) {
    openblas_set_num_threads(Int32(count))
  }

  /// C = alpha · op(A) · op(B) + beta · C for row-major matrices, where op(A) is m×k and op(B) is k×n.
  /// A and B may be blocks of wider matrices: `aRowStride` and `bRowStride` are their rows'
  /// distance (by default, the block's own width).
  ///
  /// A single row (m = 1, a one-example inference) is a matrix-vector product: sgemm would copy
  /// all of B into its packed layout for it, which costs as much as the product.
  @inline(__always)
  static func sgemm(
    transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
    alpha: Float = 1, a: UnsafePointer<Float>, aRowStride: Int? = nil, b: UnsafePointer<Float>, bRowStride: Int? = nil,
    beta: Float = 0, c: UnsafeMutablePointer<Float>
  ) {
    if m == 1 {
      // c = alpha · op(B)ᵀ · a + beta · c, with a's k values spaced by its row stride when transposed.
      let bRows = transposeB ? n : k
      let bColumns = transposeB ? k : n
      cblas_sgemv(
        CblasRowMajor, transposeB ? CblasNoTrans : CblasTrans, Int32(bRows), Int32(bColumns), alpha,
        b, Int32(bRowStride ?? bColumns), a, Int32(transposeA ? (aRowStride ?? 1) : 1), beta, c, 1)
      return
    }
    cblas_sgemm(
      CblasRowMajor,
      transposeA ? CblasTrans : CblasNoTrans,
      transposeB ? CblasTrans : CblasNoTrans,
      Int32(m), Int32(n), Int32(k), alpha,
      a, Int32(aRowStride ?? (transposeA ? m : k)),
      b, Int32(bRowStride ?? (transposeB ? k : n)),
      beta, c, Int32(n))
  }
}

extension Tensor {
  /// Matrix product op(a) · op(b) where op transposes the last two axes when its flag is set.
  ///
  /// Rank 2 × rank 2 is one product. A rank ≥ 3 left side times a rank-2 right side is one
  /// product over the flattened leading axes (when `a` is not transposed) or a product per
  /// batch entry. Two batched operands must have equal leading axes.
  public static func matmul(_ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false) -> Tensor {
    let result = matmulValues(a, b, transposeA: transposeA, transposeB: transposeB)
    return recorded(
      result, inputs: [a, b],
      passRule: { g, pass in
        let flattenB = b.rank == 2 && a.rank > 2
        // Each gradient as op(x) · op(y); added straight into its sum when one is set.
        func leftGrad() -> Tensor? {
          switch (transposeA, transposeB) {
          case (false, false): return product(g, b, false, true, gradientOf: a, in: pass)
          case (false, true): return product(g, b, false, false, gradientOf: a, in: pass)
          case (true, false): return product(b, g, false, true, gradientOf: a, in: pass)
          case (true, true): return product(b, g, true, true, gradientOf: a, in: pass)
          }
        }
        func rightGrad() -> Tensor? {
          // With a shared 2-D right operand, flatten the batch so one sgemm sums over it.
          let (lhs, grad): (Tensor, Tensor) =
            flattenB && !transposeA
            ? (
              a.reshapedValues(to: [count(of: Array(a.shape.dropLast())), a.shape[a.rank - 1]]),
              g.reshapedValues(to: [count(of: Array(g.shape.dropLast())), g.shape[g.rank - 1]])
            )
            : (a, g)
          switch (transposeA, transposeB) {
          case (false, false): return product(lhs, grad, true, false, gradientOf: b, in: pass)
          case (false, true): return product(grad, lhs, true, false, gradientOf: b, in: pass)
          case (true, false): return product(lhs, grad, false, false, gradientOf: b, in: pass)
          case (true, true): return product(grad, lhs, true, true, gradientOf: b, in: pass)
          }
        }
        return [a.isTrackingGradients ? leftGrad() : nil, b.isTrackingGradients ? rightGrad() : nil]
      })
  }

  /// op(x) · op(y), the gradient of `operand`: added into the operand's gradient sum and nil
  /// when the backward pass is summing it (see `GradientSink`) and the shapes allow one sgemm.
  private static func product(
    _ x: Tensor, _ y: Tensor, _ transposeX: Bool, _ transposeY: Bool, gradientOf operand: Tensor, in pass: BackwardPass
  ) -> Tensor? {
    if let sink = pass.sink(of: operand), x.rank == 2, y.rank == 2 {
      let (m, k) = transposeX ? (x.shape[1], x.shape[0]) : (x.shape[0], x.shape[1])
      let n = transposeY ? y.shape[0] : y.shape[1]
      if sink.shape == [m, n] {
        let addProduct: @Sendable () -> Void = {
          BLAS.sgemm(
            transposeA: transposeX, transposeB: transposeY, m: m, n: n, k: k,
            a: x.buffer.pointer, b: y.buffer.pointer, beta: 1, c: sink.pointer)
        }
        pass.addIntoSum(addProduct)
        return nil
      }
    }
    return matmulValues(x, y, transposeA: transposeX, transposeB: transposeY)
  }

  /// The product without recording.
  static func matmulValues(_ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false) -> Tensor {
    precondition(a.rank >= 2 && b.rank >= 2, "matmul needs rank >= 2, got \(a.shape) and \(b.shape)")
    let (m, k) = transposeA ? (a.shape[a.rank - 1], a.shape[a.rank - 2]) : (a.shape[a.rank - 2], a.shape[a.rank - 1])
    let (kb, n) = transposeB ? (b.shape[b.rank - 1], b.shape[b.rank - 2]) : (b.shape[b.rank - 2], b.shape[b.rank - 1])
    precondition(
      k == kb, "matmul inner dimensions differ: \(a.shape)\(transposeA ? "ᵀ" : "") × \(b.shape)\(transposeB ? "ᵀ" : "")"
    )
    let batchA = Array(a.shape.dropLast(2))
    let batchB = Array(b.shape.dropLast(2))
    precondition(
      batchA.isEmpty || batchB.isEmpty || batchA == batchB,
      "matmul batch axes differ: \(a.shape) and \(b.shape)")
    let batchShape = batchA.isEmpty ? batchB : batchA
    if b.rank == 2 && !transposeA {
      // One product over all leading rows of `a`.
      let rows = count(of: Array(a.shape.dropLast()))
      let out = Tensor(uninitializedShape: batchShape + [m, n])
      BLAS.sgemm(
        transposeA: false, transposeB: transposeB, m: rows, n: n, k: k,
        a: a.buffer.pointer, b: b.buffer.pointer, c: out.buffer.pointer)
      return out
    }
    let batch = count(of: batchShape)
    let out = Tensor(uninitializedShape: batchShape + [m, n])
    let strideA = batchA.isEmpty ? 0 : m * k
    let strideB = batchB.isEmpty ? 0 : k * n
    for index in 0..<batch {
      BLAS.sgemm(
        transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k,
        a: a.buffer.pointer + index * strideA, b: b.buffer.pointer + index * strideB,
        c: out.buffer.pointer + index * m * n)
    }
    return out
  }
}
