/// A dense, row-major Float32 tensor with value semantics.
///
/// Storage is shared between copies until one of them is written (copy-on-write). A tensor may
/// also carry a gradient node: operations on tracked tensors are recorded so that gradients can be
/// computed in reverse (see `Autodiff.swift`).
public struct Tensor: Sendable {
  /// The extent of each axis, outermost first. The empty shape is a scalar.
  public private(set) var shape: [Int]
  var buffer: TensorBuffer
  var node: GradNode?

  init(shape: [Int], buffer: TensorBuffer, node: GradNode? = nil) {
    precondition(
      buffer.count == Tensor.count(of: shape),
      "buffer of \(buffer.count) scalars does not fit shape \(shape)")
    self.shape = shape
    self.buffer = buffer
    self.node = node
  }

  /// A tensor whose scalars must all be written before it is read.
  init(uninitializedShape shape: [Int]) {
    self.init(shape: shape, buffer: TensorBuffer(uninitializedCount: Tensor.count(of: shape)))
  }

  /// Creates a tensor from row-major scalars; `scalars.count` must equal the product of `shape`.
  public init(shape: [Int], scalars: [Float]) {
    precondition(
      scalars.count == Tensor.count(of: shape),
      "\(scalars.count) scalars do not fit shape \(shape)")
    let buffer = TensorBuffer(uninitializedCount: scalars.count)
    scalars.withUnsafeBufferPointer { source in
      if let base = source.baseAddress { buffer.pointer.initialize(from: base, count: source.count) }
    }
    self.init(shape: shape, buffer: buffer)
  }

  /// Creates a rank-0 tensor holding `scalar`.
  public init(_ scalar: Float) {
    self.init(shape: [], scalars: [scalar])
  }

  /// Creates a tensor of `shape` with every scalar equal to `value`.
  public init(shape: [Int], repeating value: Float) {
    self.init(shape: shape, buffer: TensorBuffer(count: Tensor.count(of: shape), repeating: value))
  }

  /// A tensor of zeros.
  public static func zeros(_ shape: [Int]) -> Tensor { Tensor(shape: shape, repeating: 0) }

  /// A tensor of ones.
  public static func ones(_ shape: [Int]) -> Tensor { Tensor(shape: shape, repeating: 1) }

  /// A tensor of `shape` filled with the constant `value`.
  public static func filled(_ shape: [Int], with value: Float) -> Tensor {
    Tensor(shape: shape, repeating: value)
  }

  /// The number of axes.
  public var rank: Int { shape.count }

  /// The number of scalars (product of the shape).
  public var scalarCount: Int { buffer.count }

  /// The scalars in row-major order.
  public var scalars: [Float] {
    Array(UnsafeBufferPointer(start: buffer.pointer, count: buffer.count))
  }

  /// The single scalar of a one-element tensor.
  public var scalar: Float {
    precondition(buffer.count == 1, "scalar of a tensor with shape \(shape)")
    return buffer.pointer[0]
  }

  /// Calls `body` with the row-major scalars.
  public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
    try body(UnsafeBufferPointer(start: buffer.pointer, count: buffer.count))
  }

  /// This tensor's storage, made its own first (copied if shared) and detached from gradient
  /// recording: for in-place updates within MeshTensor, valid until the tensor is next changed.
  mutating func uniqueStorage() -> UnsafeMutablePointer<Float> {
    if !isKnownUniquelyReferenced(&buffer) {
      buffer = TensorBuffer(copying: buffer)
    }
    node = nil
    return buffer.pointer
  }

  /// Calls `body` with writable scalars, copying the storage first if it is shared.
  /// Writing detaches the tensor from gradient recording.
  public mutating func withUnsafeMutableBufferPointer<R>(
    _ body: (UnsafeMutableBufferPointer<Float>) throws -> R
  ) rethrows -> R {
    if !isKnownUniquelyReferenced(&buffer) {
      buffer = TensorBuffer(copying: buffer)
    }
    node = nil
    return try body(UnsafeMutableBufferPointer(start: buffer.pointer, count: buffer.count))
  }

  /// Sets every scalar to 0: in place when the storage is this tensor's alone (no allocation,
  /// no new pages to fault in), else in new storage. Detaches the tensor from gradient recording.
  public mutating func setToZero() {
    if isKnownUniquelyReferenced(&buffer) {
      buffer.pointer.update(repeating: 0, count: buffer.count)
    } else {
      buffer = TensorBuffer(count: buffer.count, repeating: 0)
    }
    node = nil
  }

  /// The number of scalars of `shape`, or nil when an extent is negative or the product
  /// overflows (for sizes that come from outside).
  public static func checkedCount(of shape: [Int]) -> Int? {
    var total = 1
    for extent in shape {
      guard extent >= 0 else { return nil }
      let (product, overflow) = total.multipliedReportingOverflow(by: extent)
      guard !overflow else { return nil }
      total = product
    }
    return total
  }

  static func count(of shape: [Int]) -> Int {
    var total = 1
    for extent in shape {
      precondition(extent >= 0, "negative extent in shape \(shape)")
      total *= extent
    }
    return total
  }

  /// Row-major strides of `shape`, in scalars.
  static func strides(of shape: [Int]) -> [Int] {
    var strides = [Int](repeating: 1, count: shape.count)
    var running = 1
    for axis in stride(from: shape.count - 1, through: 0, by: -1) {
      strides[axis] = running
      running *= shape[axis]
    }
    return strides
  }

  /// Resolves a possibly negative axis against `rank`.
  static func normalize(axis: Int, rank: Int) -> Int {
    let resolved = axis < 0 ? axis + rank : axis
    precondition(resolved >= 0 && resolved < rank, "axis \(axis) out of range for rank \(rank)")
    return resolved
  }
}

extension Tensor: Equatable {
  /// Tensors are equal when their shapes and scalars are equal (gradient tracking is ignored).
  public static func == (lhs: Tensor, rhs: Tensor) -> Bool {
    guard lhs.shape == rhs.shape else { return false }
    if lhs.buffer === rhs.buffer { return true }
    for index in 0..<lhs.buffer.count where lhs.buffer.pointer[index] != rhs.buffer.pointer[index] {
      return false
    }
    return true
  }
}

extension Tensor: CustomStringConvertible {
  public var description: String {
    let preview = scalars.prefix(8).map { "\($0)" }.joined(separator: ", ")
    let more = scalarCount > 8 ? ", …" : ""
    return "Tensor(shape: \(shape), [\(preview)\(more)])"
  }
}
