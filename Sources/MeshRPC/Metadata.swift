/// Request headers: lower-case keys, each with one or more values.
public struct Metadata: Sendable, Hashable, Sequence {
  private var entries: [(key: String, value: String)] = []

  public init() {}

  public init(_ pairs: KeyValuePairs<String, String>) {
    for (key, value) in pairs { append(value, forKey: key) }
  }

  /// Adds a value; keys are lower-cased, as HTTP/2 requires.
  public mutating func append(_ value: String, forKey key: String) {
    entries.append((key.lowercased(), value))
  }

  /// The first value for a key.
  public subscript(key: String) -> String? {
    let key = key.lowercased()
    return entries.first { $0.key == key }?.value
  }

  public func makeIterator() -> some IteratorProtocol<(key: String, value: String)> {
    entries.makeIterator()
  }

  public var count: Int { entries.count }

  public static func == (lhs: Metadata, rhs: Metadata) -> Bool {
    lhs.entries.elementsEqual(rhs.entries) { $0 == $1 }
  }

  public func hash(into hasher: inout Hasher) {
    for entry in entries {
      hasher.combine(entry.key)
      hasher.combine(entry.value)
    }
  }
}
