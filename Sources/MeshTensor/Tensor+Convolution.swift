// 2-D convolution (im2col + sgemm) and pooling, NCHW layout.

/// Geometry of a 2-D window sliding over an NCHW input.
struct WindowGeometry {
  let channels, height, width: Int
  let kernelHeight, kernelWidth: Int
  let stride, padding: Int

  var outputHeight: Int { (height + 2 * padding - kernelHeight) / stride + 1 }
  var outputWidth: Int { (width + 2 * padding - kernelWidth) / stride + 1 }
  var patchSize: Int { channels * kernelHeight * kernelWidth }
  var positions: Int { outputHeight * outputWidth }

  /// Fills `columns` ([patchSize, positions], rows `rowStride` apart) with one image's patches.
  func im2col(_ image: UnsafePointer<Float>, into columns: UnsafeMutablePointer<Float>, rowStride: Int) {
    let oh = outputHeight
    let ow = outputWidth
    for c in 0..<channels {
      for kh in 0..<kernelHeight {
        for kw in 0..<kernelWidth {
          let row = columns + ((c * kernelHeight + kh) * kernelWidth + kw) * rowStride
          let valid = validColumns(kernelOffset: kw)
          for y in 0..<oh {
            let iy = y * stride - padding + kh
            let dst = row + y * ow
            guard iy >= 0 && iy < height else {
              dst.update(repeating: 0, count: ow)
              continue
            }
            let src = image + (c * height + iy) * width - padding + kw
            dst.update(repeating: 0, count: valid.lowerBound)
            if stride == 1 {
              (dst + valid.lowerBound).update(from: src + valid.lowerBound, count: valid.count)
            } else {
              for x in valid { dst[x] = src[x * stride] }
            }
            (dst + valid.upperBound).update(repeating: 0, count: ow - valid.upperBound)
          }
        }
      }
    }
  }

  /// Output columns x whose input column x·stride − padding + kernelOffset lies inside the image.
  private func validColumns(kernelOffset: Int) -> Range<Int> {
    func ceilingDivision(_ a: Int, _ b: Int) -> Int { a <= 0 ? -((-a) / b) : (a + b - 1) / b }
    let lower = Swift.max(0, ceilingDivision(padding - kernelOffset, stride))
    let upper = Swift.min(outputWidth, ceilingDivision(width + padding - kernelOffset, stride))
    return lower..<Swift.max(lower, upper)
  }

  /// Adds `columns` ([patchSize, positions], rows `rowStride` apart) back onto one image (the
  /// adjoint of im2col).
  func col2imAdd(_ columns: UnsafePointer<Float>, into image: UnsafeMutablePointer<Float>, rowStride: Int) {
    let oh = outputHeight
    let ow = outputWidth
    for c in 0..<channels {
      for kh in 0..<kernelHeight {
        for kw in 0..<kernelWidth {
          let row = columns + ((c * kernelHeight + kh) * kernelWidth + kw) * rowStride
          let valid = validColumns(kernelOffset: kw)
          for y in 0..<oh {
            let iy = y * stride - padding + kh
            guard iy >= 0 && iy < height else { continue }
            let dst = image + (c * height + iy) * width - padding + kw
            let src = row + y * ow
            for x in valid { dst[x * stride] += src[x] }
          }
        }
      }
    }
  }
}

extension Tensor {
  /// Cross-correlation of an NCHW input with filters [outChannels, inChannels, kh, kw] using
  /// zero `padding` on each side and the same `stride` on both axes. No bias.
  public static func conv2d(_ input: Tensor, filter: Tensor, stride: Int = 1, padding: Int = 0) -> Tensor {
    precondition(
      input.rank == 4 && filter.rank == 4 && input.shape[1] == filter.shape[1],
      "conv2d needs NCHW input and [O, C, kh, kw] filter with matching C, got \(input.shape) and \(filter.shape)")
    let batch = input.shape[0]
    let outChannels = filter.shape[0]
    let geometry = WindowGeometry(
      channels: input.shape[1], height: input.shape[2], width: input.shape[3],
      kernelHeight: filter.shape[2], kernelWidth: filter.shape[3],
      stride: stride, padding: padding)
    precondition(
      stride > 0 && geometry.outputHeight > 0 && geometry.outputWidth > 0,
      "conv2d window does not fit input \(input.shape)")
    let imageSize = geometry.channels * geometry.height * geometry.width
    let positions = geometry.positions
    let patchSize = geometry.patchSize
    let outSize = outChannels * positions
    // Images are processed in chunks so each sgemm is wide while scratch memory stays bounded:
    // forward batches up to 4 Mi patch scalars into one product (backward: `Conv2DBackward`).
    func chunkSize(limit: Int) -> Int { Swift.max(1, Swift.min(batch, limit / Swift.max(1, patchSize * positions))) }
    let chunk = chunkSize(limit: 1 << 22)
    let out = Tensor(uninitializedShape: [batch, outChannels, geometry.outputHeight, geometry.outputWidth])
    let columns = UnsafeMutablePointer<Float>.allocate(capacity: patchSize * chunk * positions)
    let product = UnsafeMutablePointer<Float>.allocate(capacity: outChannels * chunk * positions)
    defer {
      columns.deallocate()
      product.deallocate()
    }
    for first in Swift.stride(from: 0, to: batch, by: chunk) {
      let count = Swift.min(chunk, batch - first)
      let width = count * positions
      for i in 0..<count {
        geometry.im2col(input.buffer.pointer + (first + i) * imageSize, into: columns + i * positions, rowStride: width)
      }
      BLAS.sgemm(
        transposeA: false, transposeB: false, m: outChannels, n: width, k: patchSize,
        a: filter.buffer.pointer, b: columns, c: product)
      // [outChannels, count · positions] → [count, outChannels, positions]
      for i in 0..<count {
        for o in 0..<outChannels {
          (out.buffer.pointer + (first + i) * outSize + o * positions)
            .update(from: product + o * width + i * positions, count: positions)
        }
      }
    }
    let backwardChunk = chunkSize(limit: 1 << 18)
    return recorded(
      out, inputs: [input, filter],
      passRule: { g, pass in
        let backward = Conv2DBackward(
          input: input, filter: filter, outputGradient: g, geometry: geometry, chunk: backwardChunk)
        var dFilter: Tensor?
        if filter.isTrackingGradients {
          // Added straight into the filter's sum when it has one (and held back with the
          // other weight products while the input gradient is computed, when asked to).
          if let sink = pass.sink(of: filter) {
            pass.addIntoSum { backward.addFilterGradient(into: sink.pointer) }
          } else {
            let sum = Tensor.zeros(filter.shape)
            backward.addFilterGradient(into: sum.buffer.pointer)
            dFilter = sum
          }
        }
        return [input.isTrackingGradients ? backward.inputGradient() : nil, dFilter]
      })
  }
}

/// The backward pass of one `conv2d`, a chunk of images at a time: each chunk's patch matrix stays
/// within 256 Ki scalars (1 MiB), which measured faster because col2im and the filter-gradient
/// product then work in cache. The output gradient is laid out by channel once, for both passes.
private struct Conv2DBackward: Sendable {
  let input: Tensor
  let filter: Tensor
  let geometry: WindowGeometry
  let chunk: Int
  /// The output gradient as [outChannels, batch · positions]: a chunk of images is a block of
  /// its columns.
  private let gradientByChannel: Tensor

  init(input: Tensor, filter: Tensor, outputGradient: Tensor, geometry: WindowGeometry, chunk: Int) {
    self.input = input
    self.filter = filter
    self.geometry = geometry
    self.chunk = chunk
    let batch = input.shape[0]
    let outChannels = filter.shape[0]
    let positions = geometry.positions
    let byChannel = Tensor(uninitializedShape: [outChannels, batch * positions])
    // [batch, outChannels, positions] → [outChannels, batch · positions]
    for i in 0..<batch {
      for o in 0..<outChannels {
        (byChannel.buffer.pointer + o * batch * positions + i * positions)
          .update(from: outputGradient.buffer.pointer + (i * outChannels + o) * positions, count: positions)
      }
    }
    gradientByChannel = byChannel
  }

  private var batch: Int { input.shape[0] }
  private var outChannels: Int { filter.shape[0] }
  private var imageSize: Int { geometry.channels * geometry.height * geometry.width }

  /// Calls `body` for each chunk with its first image, its image count, and a patch-matrix
  /// scratch buffer for it.
  private func forEachChunk(_ body: (_ first: Int, _ count: Int, _ columns: UnsafeMutablePointer<Float>) -> Void) {
    let columns = UnsafeMutablePointer<Float>.allocate(capacity: geometry.patchSize * chunk * geometry.positions)
    defer { columns.deallocate() }
    for first in Swift.stride(from: 0, to: batch, by: chunk) {
      body(first, Swift.min(chunk, batch - first), columns)
    }
  }

  /// dW += dY · colsᵀ, into the filter-shaped `sum`.
  func addFilterGradient(into sum: UnsafeMutablePointer<Float>) {
    let positions = geometry.positions
    forEachChunk { first, count, columns in
      let width = count * positions
      for i in 0..<count {
        geometry.im2col(input.buffer.pointer + (first + i) * imageSize, into: columns + i * positions, rowStride: width)
      }
      BLAS.sgemm(
        transposeA: false, transposeB: true, m: outChannels, n: geometry.patchSize, k: width,
        a: gradientByChannel.buffer.pointer + first * positions, aRowStride: batch * positions,
        b: columns, beta: 1, c: sum)
    }
  }

  /// dCols = Wᵀ · dY, folded back onto each image.
  func inputGradient() -> Tensor {
    let positions = geometry.positions
    let dInput = Tensor.zeros(input.shape)
    forEachChunk { first, count, columns in
      let width = count * positions
      BLAS.sgemm(
        transposeA: true, transposeB: false, m: geometry.patchSize, n: width, k: outChannels,
        a: filter.buffer.pointer,
        b: gradientByChannel.buffer.pointer + first * positions, bRowStride: batch * positions, c: columns)
      for i in 0..<count {
        geometry.col2imAdd(
          columns + i * positions, into: dInput.buffer.pointer + (first + i) * imageSize, rowStride: width)
      }
    }
    return dInput
  }
}

extension Tensor {
  /// Max pooling of an NCHW tensor over `size`×`size` windows (no padding).
  public func maxPool2d(size: Int, stride: Int) -> Tensor {
    pool2d(size: size, stride: stride, averaging: false)
  }

  /// Average pooling of an NCHW tensor over `size`×`size` windows (no padding).
  public func avgPool2d(size: Int, stride: Int) -> Tensor {
    pool2d(size: size, stride: stride, averaging: true)
  }

  private func pool2d(size: Int, stride: Int, averaging: Bool) -> Tensor {
    precondition(
      rank == 4 && size > 0 && stride > 0 && shape[2] >= size && shape[3] >= size,
      "pooling \(size)/\(stride) does not fit NCHW input \(shape)")
    let planes = shape[0] * shape[1]
    let height = shape[2]
    let width = shape[3]
    let oh = (height - size) / stride + 1
    let ow = (width - size) / stride + 1
    let out = Tensor(uninitializedShape: [shape[0], shape[1], oh, ow])
    let src = buffer.pointer
    let dst = out.buffer.pointer
    var argmax = averaging ? [] : [Int](repeating: 0, count: out.scalarCount)
    let scale = 1 / Float(size * size)
    for plane in 0..<planes {
      for y in 0..<oh {
        for x in 0..<ow {
          let outIndex = (plane * oh + y) * ow + x
          var best = -Float.infinity
          var bestIndex = 0
          var total: Float = 0
          for ky in 0..<size {
            for kx in 0..<size {
              let index = (plane * height + y * stride + ky) * width + x * stride + kx
              total += src[index]
              if src[index] > best {
                best = src[index]
                bestIndex = index
              }
            }
          }
          if averaging {
            dst[outIndex] = total * scale
          } else {
            dst[outIndex] = best
            argmax[outIndex] = bestIndex
          }
        }
      }
    }
    let inputShape = shape
    return Tensor.recorded(out, inputs: [self]) { [argmax] g in
      let dx = Tensor.zeros(inputShape)
      let gp = g.buffer.pointer
      let dp = dx.buffer.pointer
      if !averaging {
        for (outIndex, index) in argmax.enumerated() { dp[index] += gp[outIndex] }
        return [dx]
      }
      for plane in 0..<planes {
        for y in 0..<oh {
          for x in 0..<ow {
            let share = gp[(plane * oh + y) * ow + x] * scale
            for ky in 0..<size {
              for kx in 0..<size { dp[(plane * height + y * stride + ky) * width + x * stride + kx] += share }
            }
          }
        }
      }
      return [dx]
    }
  }
}
