/// A value Pipemesh refuses to take from a caller: a field of a message (or
/// an option on the command line) that decodes to nothing valid, or decoded
/// values that do not fit together (a batch of the wrong shape for the
/// model, a schedule longer than the job). The message names the field and
/// what would be right, for the person who sent it. A handler that throws
/// it answers INVALID_ARGUMENT (see `ErrorStatus.swift`).
public struct WireError: Error, Sendable, Equatable, CustomStringConvertible {
  public let message: String

  public init(_ message: String) { self.message = message }

  /// The same error with `field` (the message's place in a bigger one) in front.
  public func within(_ field: String) -> WireError { WireError("\(field): \(message)") }

  public var description: String { message }
}
