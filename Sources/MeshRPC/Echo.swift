extension String {
  /// The longest piece of a caller's input that an error message quotes.
  public static let maxEchoedCharacters = 200

  /// This value as an error message may quote it: whole when short, else its
  /// first `String.maxEchoedCharacters` characters and a note of the total.
  /// A request's names, paths and addresses go into messages this way, so a
  /// huge value cannot swell the status it is refused with.
  public var echoed: String {
    guard count > Self.maxEchoedCharacters else { return self }
    return "\(prefix(Self.maxEchoedCharacters))… (cut; \(utf8.count) bytes in all)"
  }

  /// This string in at most `limit` UTF-8 bytes, cut at a character boundary
  /// and marked when cut.
  func cut(toUTF8Bytes limit: Int) -> String {
    guard utf8.count > limit else { return self }
    let marker = "… (message cut)"
    let budget = limit - marker.utf8.count
    var end = startIndex
    var bytes = 0
    for index in indices {
      bytes += self[index].utf8.count
      guard bytes <= budget else { break }
      end = self.index(after: index)
    }
    return self[..<end] + marker
  }
}
