/// A message that decodes to no valid value: which field is wrong and what
/// would be right, phrased for the person who sent it. Callers answer it as
/// INVALID_ARGUMENT (see `ErrorStatus.swift`).
public struct WireError: Error, Sendable, Equatable, CustomStringConvertible {
  public let message: String

  public init(_ message: String) { self.message = message }

  /// The same error with `field` (the message's place in a bigger one) in front.
  public func within(_ field: String) -> WireError { WireError("\(field): \(message)") }

  public var description: String { message }
}
