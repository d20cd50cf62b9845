import Synchronization

/// Recycles large tensor allocations by exact size. Training repeats the same shapes every step;
/// returning those blocks to malloc makes glibc unmap and re-fault them (measured: a 1024×1024
/// Dense forward+backward spent ~25% extra time in page faults). Blocks below `minimumCount`
/// scalars go straight to malloc, and so do blocks over `maximumCount` (a big model's variables
/// and their gradients, whose faults are small beside the work on them, and which the pool would
/// otherwise keep beside the live ones); at most `maximumBytes` are held, `maximumPerSize` per
/// size.
final class BufferPool: Sendable {
  static let shared = BufferPool()

  let minimumCount = 1 << 16
  /// 4 Mi scalars: a 16 MiB block, a ps variable part at most.
  let maximumCount = 1 << 22
  let maximumBytes = 64 << 20
  let maximumPerSize = 16

  private struct State: ~Copyable {
    /// Free block addresses (as integers, which are Sendable) by scalar count.
    var free: [Int: [UInt]] = [:]
    var bytes = 0
  }

  private let state = Mutex(State())

  /// A block of `count` scalars: a recycled one if available, else a new allocation.
  func take(count: Int) -> UnsafeMutablePointer<Float> {
    if count >= minimumCount, count <= maximumCount {
      let recycled = state.withLock { state -> UInt? in
        guard let address = state.free[count]?.popLast() else { return nil }
        state.bytes -= count * MemoryLayout<Float>.stride
        return address
      }
      if let recycled, let pointer = UnsafeMutablePointer<Float>(bitPattern: recycled) { return pointer }
    }
    return .allocate(capacity: Swift.max(count, 1))
  }

  /// Returns a block from `take(count:)`; it is kept for reuse or freed.
  func give(_ pointer: UnsafeMutablePointer<Float>, count: Int) {
    if count >= minimumCount, count <= maximumCount {
      let address = UInt(bitPattern: pointer)
      let kept = state.withLock { state -> Bool in
        let size = count * MemoryLayout<Float>.stride
        guard state.bytes + size <= maximumBytes, state.free[count, default: []].count < maximumPerSize else {
          return false
        }
        state.free[count, default: []].append(address)
        state.bytes += size
        return true
      }
      if kept { return }
    }
    pointer.deallocate()
  }
}
