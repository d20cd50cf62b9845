import MeshRPC

/// The rules for names that every service keeps: a job's name becomes part of
/// checkpoint keys, data-plane keys and run ids; a variable's name a checkpoint
/// key. A job is `[A-Za-z0-9_.-]+`; a variable may also hold `/`, `#` and `:`
/// (row blocks), never `@` (the slot separator).
public enum MeshNames {
  /// The longest job name a ps or partition holds, in bytes.
  public static let maxJobLength = 128
  /// The longest variable name, in bytes.
  public static let maxVariableLength = 512

  /// Throws a `WireError` unless `job` is 1 to `maxLength` characters of
  /// A-Z a-z 0-9 _ . - other than `.` and `..` (so that it is never a path).
  public static func checkJob(_ job: String, maxLength: Int = maxJobLength) throws {
    guard !job.isEmpty, job.utf8.count <= maxLength, job != ".", job != "..",
      job.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "_.-".contains($0)) })
    else {
      throw WireError("job name '\(job.echoed)' must be 1-\(maxLength) characters of A-Z a-z 0-9 _ . - (not . or ..)")
    }
  }

  /// Throws a `WireError` unless `name` is 1 to 512 characters of
  /// A-Z a-z 0-9 _ . - / # :
  public static func checkVariable(_ name: String) throws {
    guard !name.isEmpty, name.utf8.count <= maxVariableLength,
      name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "_.-/#:".contains($0)) })
    else {
      throw WireError(
        "variable name '\(name.echoed)' must be 1-\(maxVariableLength) characters of A-Z a-z 0-9 _ . - / # :")
    }
  }
}
