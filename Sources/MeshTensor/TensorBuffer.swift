/// Owned, contiguous Float32 storage shared by tensors until one of them writes (copy-on-write).
///
/// Only `Tensor` touches it: it writes through `pointer` either right after allocating it or after
/// `isKnownUniquelyReferenced` proved that no other tensor shares it, which is why the unchecked
/// `Sendable` conformance is sound.
final class TensorBuffer: @unchecked Sendable {
  let count: Int
  let pointer: UnsafeMutablePointer<Float>

  /// Allocates `count` scalars whose values are undefined until written.
  init(uninitializedCount count: Int) {
    self.count = count
    self.pointer = BufferPool.shared.take(count: count)
  }

  /// Allocates `count` scalars set to `value`.
  convenience init(count: Int, repeating value: Float) {
    self.init(uninitializedCount: count)
    pointer.initialize(repeating: value, count: count)
  }

  /// Allocates a copy of `other`.
  convenience init(copying other: TensorBuffer) {
    self.init(uninitializedCount: other.count)
    pointer.update(from: other.pointer, count: other.count)
  }

  deinit {
    BufferPool.shared.give(pointer, count: count)
  }
}
