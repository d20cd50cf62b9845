import ArgumentParser
import Foundation
import MeshRPC

/// A service's settings come from its options, else from `PIPEMESH_*`
/// variables (as the systemd units and the Helm chart set them), else from
/// defaults. A bad value ends the process with exit status 64 (EX_USAGE, which
/// the units' `RestartPreventExitStatus=64` keeps systemd from restarting in a
/// loop) and a message naming the setting, the value, and what is expected.
enum Settings {
  /// The environment variable behind `--some-option`: `PIPEMESH_SOME_OPTION`.
  static func variable(of option: String) -> String {
    "PIPEMESH_" + option.drop(while: { $0 == "-" }).uppercased().replacingOccurrences(of: "-", with: "_")
  }

  /// An integer setting in `range`: the option's value, else its variable's,
  /// else `fallback`.
  static func integer(_ given: Int?, option: String, in range: ClosedRange<Int>, default fallback: Int) throws -> Int {
    let variable = variable(of: option)
    let (value, source): (Int, String)
    if let given {
      (value, source) = (given, option)
    } else if let text = ProcessInfo.processInfo.environment[variable] {
      guard let parsed = Int(text.trimmingCharacters(in: .whitespaces)) else {
        throw ValidationError("\(variable)='\(text.echoed)' is not an integer; expected \(describe(range))")
      }
      (value, source) = (parsed, variable)
    } else {
      return fallback
    }
    guard range.contains(value) else {
      throw ValidationError("\(source) is \(value); expected \(describe(range))")
    }
    return value
  }

  /// A text setting: the option's value, else its variable's; nil when
  /// neither is set. An empty value counts as unset.
  static func text(_ given: String?, option: String) -> String? {
    let value = given ?? ProcessInfo.processInfo.environment[variable(of: option)]
    return value?.isEmpty == true ? nil : value
  }

  /// An on/off setting: the option's value, else its variable's, else
  /// `fallback`.
  static func `switch`(_ given: String?, option: String, default fallback: Bool) throws -> Bool {
    guard let value = text(given, option: option) else { return fallback }
    switch value.lowercased() {
    case "on": return true
    case "off": return false
    default:
      throw ValidationError("\(option) (or \(variable(of: option))) is '\(value.echoed)'; expected on or off")
    }
  }

  /// A `HOST:PORT` listen address with a port from 0 to 65535.
  static func checkAddress(_ address: String, option: String) throws {
    let source = "\(option) (or \(variable(of: option)))"
    guard let colon = address.lastIndex(of: ":"), colon != address.startIndex,
      let port = Int(address[address.index(after: colon)...]), (0...65535).contains(port)
    else {
      throw ValidationError(
        "\(source) is '\(address.echoed)'; expected HOST:PORT with a port from 0 to 65535, such as 127.0.0.1:7100")
    }
  }

  /// A directory the service writes to: created when missing; refused when
  /// it cannot be created or written.
  static func checkWritableDirectory(_ path: String, option: String) throws {
    let source = "\(option) (or \(variable(of: option)))"
    do {
      try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    } catch {
      throw ValidationError("\(source) is '\(path.echoed)', which cannot be created: \(error.localizedDescription)")
    }
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
      throw ValidationError("\(source) is '\(path.echoed)', which is not a directory")
    }
    guard access(path, W_OK | X_OK) == 0 else {
      throw ValidationError("\(source) is '\(path.echoed)', which this process (uid \(getuid())) cannot write")
    }
  }

  /// A file the service reads (a TLS certificate or key).
  static func checkReadableFile(_ path: String, option: String) throws {
    let source = "\(option) (or \(variable(of: option)))"
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
      throw ValidationError("\(source) is '\(path.echoed)', which does not exist")
    }
    guard !isDirectory.boolValue, access(path, R_OK) == 0 else {
      throw ValidationError(
        "\(source) is '\(path.echoed)', which is not a file this process (uid \(getuid())) can read")
    }
  }

  private static func describe(_ range: ClosedRange<Int>) -> String {
    range.upperBound == Int.max
      ? "an integer of at least \(range.lowerBound)" : "an integer from \(range.lowerBound) to \(range.upperBound)"
  }
}
