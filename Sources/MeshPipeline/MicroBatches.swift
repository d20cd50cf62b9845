/// Cuts `count` examples into `parts` contiguous micro-batches whose sizes
/// differ by at most one (the larger ones first).
public func evenRanges(_ count: Int, parts: Int) -> [Range<Int>] {
  var start = 0
  return (0..<parts).map { part in
    let size = count / parts + (part < count % parts ? 1 : 0)
    defer { start += size }
    return start..<(start + size)
  }
}
