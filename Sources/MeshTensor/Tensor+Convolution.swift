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
            if stride == 1 {
              for x in valid { dst[x] += src[x] }
            } else {
              for x in valid { dst[x * stride] += src[x] }
            }
          }
        }
      }
    }
  }
}

extension Tensor {
  /// Cross-correlation of an NCHW input with filters [outChannels, inChannels, kh, kw] using
  /// zero `padding` on each side and the same `stride` on both axes, plus `bias` (outChannels
  /// scalars, one per output channel) when given, then max(·, 0) when `rectified`. Bias and
  /// ReLU are applied as the product is laid out, and their gradients taken from the output
  /// gradient as it is laid out for the filter's: no pass of their own over the activations.
  public static func conv2d(
    _ input: Tensor, filter: Tensor, bias: Tensor? = nil, rectified: Bool = false, stride: Int = 1, padding: Int = 0
  ) -> Tensor {
    precondition(
      input.rank == 4 && filter.rank == 4 && input.shape[1] == filter.shape[1],
      "conv2d needs NCHW input and [O, C, kh, kw] filter with matching C, got \(input.shape) and \(filter.shape)")
    let batch = input.shape[0]
    let outChannels = filter.shape[0]
    precondition(
      bias.map { $0.scalarCount == outChannels } ?? true,
      "conv2d needs one bias per output channel (\(outChannels)), got \(bias!.shape)")
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
      // [outChannels, count · positions] → [count, outChannels, positions], plus the bias, then ReLU
      for i in 0..<count {
        for o in 0..<outChannels {
          let target = out.buffer.pointer + (first + i) * outSize + o * positions
          let source = product + o * width + i * positions
          let shift = bias?.buffer.pointer[o] ?? 0
          if rectified {
            for p in 0..<positions {
              let value = source[p] + shift
              target[p] = value > 0 ? value : 0
            }
          } else if bias != nil {
            for p in 0..<positions { target[p] = source[p] + shift }
          } else {
            target.update(from: source, count: positions)
          }
        }
      }
    }
    let backwardChunk = chunkSize(limit: 1 << 18)
    // Kept for the backward only when it is ReLU's mask.
    let rectifiedOutput = rectified ? out : nil
    return recorded(
      out, inputs: [input, filter] + (bias.map { [$0] } ?? []),
      passRule: { g, pass in
        let backward = Conv2DBackward(
          input: input, filter: filter, outputGradient: g, rectifiedOutput: rectifiedOutput,
          geometry: geometry, chunk: backwardChunk)
        /// A weight's gradient: added straight into its sum when it has one (and held back with
        /// the other weight products while the input gradient is computed, when asked to).
        func weightGradient(of weight: Tensor, _ add: @escaping @Sendable (UnsafeMutablePointer<Float>) -> Void)
          -> Tensor?
        {
          guard weight.isTrackingGradients else { return nil }
          if let sink = pass.sink(of: weight) {
            pass.addIntoSum { add(sink.pointer) }
            return nil
          }
          let sum = Tensor.zeros(weight.shape)
          add(sum.buffer.pointer)
          return sum
        }
        let dFilter = weightGradient(of: filter) { backward.addFilterGradient(into: $0) }
        let dBias = bias.map { weightGradient(of: $0) { backward.addBiasGradient(into: $0) } }
        return [input.isTrackingGradients ? backward.inputGradient() : nil, dFilter] + (dBias.map { [$0] } ?? [])
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

  /// `rectifiedOutput`: the output of a convolution that ended in ReLU, whose zeros pass no
  /// gradient back.
  init(
    input: Tensor, filter: Tensor, outputGradient: Tensor, rectifiedOutput: Tensor?, geometry: WindowGeometry,
    chunk: Int
  ) {
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
        let target = byChannel.buffer.pointer + o * batch * positions + i * positions
        let offset = (i * outChannels + o) * positions
        let source = outputGradient.buffer.pointer + offset
        if let output = rectifiedOutput {
          Tensor.passGradient(source, wherePositive: output.buffer.pointer + offset, into: target, count: positions)
        } else {
          target.update(from: source, count: positions)
        }
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

  /// db += dY summed over images and positions, one scalar per output channel.
  func addBiasGradient(into sum: UnsafeMutablePointer<Float>) {
    let columns = batch * geometry.positions
    for o in 0..<outChannels {
      // Sixteen running sums side by side: vector adds, and less rounding than one long sum.
      let row = UnsafeRawPointer(gradientByChannel.buffer.pointer + o * columns)
      var lanes = SIMD16<Float>()
      let whole = columns / 16 * 16
      for j in Swift.stride(from: 0, to: whole, by: 16) {
        lanes += row.loadUnaligned(fromByteOffset: j * MemoryLayout<Float>.stride, as: SIMD16<Float>.self)
      }
      var total = lanes.sum()
      for j in whole..<columns { total += row.load(fromByteOffset: j * MemoryLayout<Float>.stride, as: Float.self) }
      sum[o] += total
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
    precondition(shape[2] * shape[3] <= Int(Int32.max), "pooling keeps offsets within a plane as Int32: \(shape)")
    let window = PoolWindow(
      planes: shape[0] * shape[1], height: shape[2], width: shape[3], size: size, stride: stride)
    let out = Tensor(uninitializedShape: [shape[0], shape[1], window.outputHeight, window.outputWidth])
    let inputShape = shape
    if averaging {
      window.average(buffer.pointer, into: out.buffer.pointer)
      return Tensor.recorded(out, inputs: [self]) { g in
        let dx = Tensor.zeros(inputShape)
        window.spreadAverage(g.buffer.pointer, into: dx.buffer.pointer)
        return [dx]
      }
    }
    let argmax = window.maximum(buffer.pointer, into: out.buffer.pointer)
    return Tensor.recorded(out, inputs: [self]) { g in
      let dx = Tensor.zeros(inputShape)
      window.routeToMaxima(g.buffer.pointer, argmax: argmax, into: dx.buffer.pointer)
      return [dx]
    }
  }
}

/// Square pooling windows over the planes (image × channel) of an NCHW tensor, without padding.
private struct PoolWindow: Sendable {
  let planes, height, width, size, stride: Int

  var outputHeight: Int { (height - size) / stride + 1 }
  var outputWidth: Int { (width - size) / stride + 1 }
  private var outputsPerPlane: Int { outputHeight * outputWidth }

  /// Calls `body` for every output with its index, its input plane's first scalar and the
  /// offset of its window's top-left scalar within that plane, plane by plane.
  @inline(__always)
  private func forEachWindow(_ body: (_ output: Int, _ plane: Int, _ corner: Int) -> Void) {
    let oh = outputHeight
    let ow = outputWidth
    for plane in 0..<planes {
      for y in 0..<oh {
        let rowOutput = (plane * oh + y) * ow
        for x in 0..<ow { body(rowOutput + x, plane * height * width, y * stride * width + x * stride) }
      }
    }
  }

  /// Writes each window's largest scalar (or its first NaN); returns where it is (the first of
  /// equals), as an offset within its input plane.
  func maximum(_ input: UnsafePointer<Float>, into output: UnsafeMutablePointer<Float>) -> [Int32] {
    [Int32](unsafeUninitializedCapacity: planes * outputsPerPlane) { argmax, initialized in
      let offsets = argmax.baseAddress!
      if size == 2 && stride == 2 {
        maximumOfTwoByTwo(input, into: output, offsets: offsets)
      } else {
        forEachWindow { index, plane, corner in
          (output[index], offsets[index]) = windowMaximum(input + plane, corner: corner)
        }
      }
      initialized = planes * outputsPerPlane
    }
  }

  /// The largest scalar of the window whose top-left scalar is `plane[corner]`, and its offset;
  /// the first NaN when it holds one (a NaN passes on, as in PyTorch).
  @inline(__always)
  private func windowMaximum(_ plane: UnsafePointer<Float>, corner: Int) -> (Float, Int32) {
    var best = plane[corner]
    var bestOffset = corner
    for ky in 0..<size {
      let row = corner + ky * width
      for kx in 0..<size where plane[row + kx] > best || (plane[row + kx].isNaN && !best.isNaN) {
        best = plane[row + kx]
        bestOffset = row + kx
      }
    }
    return (best, Int32(truncatingIfNeeded: bestOffset))
  }

  /// `maximum` for the common 2×2 window with stride 2, eight outputs of a row at a time: the
  /// two input rows are read as 16 scalars each and split into their even and odd columns.
  private func maximumOfTwoByTwo(
    _ input: UnsafePointer<Float>, into output: UnsafeMutablePointer<Float>, offsets: UnsafeMutablePointer<Int32>
  ) {
    let oh = outputHeight
    let ow = outputWidth
    let columns = SIMD8<Int32>(0, 2, 4, 6, 8, 10, 12, 14)
    for plane in 0..<planes {
      let source = input + plane * height * width
      for y in 0..<oh {
        let top = 2 * y * width
        let rowOutput = (plane * oh + y) * ow
        var x = 0
        while x + 8 <= ow {
          let upper = UnsafeRawPointer(source + top + 2 * x).loadUnaligned(as: SIMD16<Float>.self)
          let lower = UnsafeRawPointer(source + top + width + 2 * x).loadUnaligned(as: SIMD16<Float>.self)
          let corner = columns &+ Int32(truncatingIfNeeded: top + 2 * x)
          var best = upper.evenHalf
          var offset = corner
          // The window's other three scalars, in the order the scalar loop visits them.
          @inline(__always) func consider(_ candidate: SIMD8<Float>, shift: Int) {
            let larger = (candidate .> best) .| ((candidate .!= candidate) .& (best .== best))
            best.replace(with: candidate, where: larger)
            offset.replace(with: corner &+ Int32(truncatingIfNeeded: shift), where: larger)
          }
          consider(upper.oddHalf, shift: 1)
          consider(lower.evenHalf, shift: width)
          consider(lower.oddHalf, shift: width + 1)
          UnsafeMutableRawPointer(output + rowOutput + x).storeBytes(of: best, as: SIMD8<Float>.self)
          UnsafeMutableRawPointer(offsets + rowOutput + x).storeBytes(of: offset, as: SIMD8<Int32>.self)
          x += 8
        }
        for x in x..<ow {
          (output[rowOutput + x], offsets[rowOutput + x]) = windowMaximum(source, corner: top + 2 * x)
        }
      }
    }
  }

  /// Adds each output's gradient to the input scalar its maximum came from.
  func routeToMaxima(_ gradient: UnsafePointer<Float>, argmax: [Int32], into input: UnsafeMutablePointer<Float>) {
    let planeSize = height * width
    let perPlane = outputsPerPlane
    argmax.withUnsafeBufferPointer { argmax in
      for plane in 0..<planes {
        let inputPlane = input + plane * planeSize
        for index in (plane * perPlane)..<((plane + 1) * perPlane) { inputPlane[Int(argmax[index])] += gradient[index] }
      }
    }
  }

  /// Writes each window's mean.
  func average(_ input: UnsafePointer<Float>, into output: UnsafeMutablePointer<Float>) {
    let scale = 1 / Float(size * size)
    forEachWindow { index, plane, corner in
      var total: Float = 0
      for ky in 0..<size {
        for kx in 0..<size { total += input[plane + corner + ky * width + kx] }
      }
      output[index] = total * scale
    }
  }

  /// Adds an equal share of each output's gradient to every scalar of its window.
  func spreadAverage(_ gradient: UnsafePointer<Float>, into input: UnsafeMutablePointer<Float>) {
    let scale = 1 / Float(size * size)
    forEachWindow { index, plane, corner in
      let share = gradient[index] * scale
      for ky in 0..<size {
        for kx in 0..<size { input[plane + corner + ky * width + kx] += share }
      }
    }
  }
}
