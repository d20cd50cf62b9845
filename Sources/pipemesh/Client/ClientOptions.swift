import ArgumentParser
import Foundation
import MeshRPC
import SwiftProtobuf

/// How the client commands reach a coordinator and print answers.
struct ClientOptions: ParsableArguments {
  @Option(help: "The coordinator, HOST:PORT. [PIPEMESH_COORDINATOR]")
  var coordinator: String?

  @OptionGroup var tls: TLSOptions

  @Option(
    help: "File holding the bearer token the coordinator knows you by; else PIPEMESH_TOKEN. [PIPEMESH_TOKEN_FILE]")
  var tokenFile: String?

  @Flag(help: "Print answers as JSON (one object per line), for scripts.")
  var json = false

  func client() throws -> RPCClient {
    guard let target = coordinator ?? environment("COORDINATOR"), !target.isEmpty else {
      throw ValidationError("give the coordinator with --coordinator HOST:PORT (or PIPEMESH_COORDINATOR)")
    }
    var metadata = Metadata()
    if let token = try token() { metadata.append("Bearer \(token)", forKey: "authorization") }
    return try RPCClient(
      target: target, transport: .init(tls: try tls.configuration(server: false)), metadata: metadata)
  }

  /// The token from --token-file (or PIPEMESH_TOKEN_FILE), else PIPEMESH_TOKEN; nil when none is given.
  private func token() throws -> String? {
    if let path = Settings.text(tokenFile, option: "--token-file") {
      do {
        let token = try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !token.isEmpty else { throw ValidationError("--token-file \(path) is empty") }
        return token
      } catch let error as ValidationError {
        throw error
      } catch {
        throw ValidationError("--token-file \(path) cannot be read: \(error.localizedDescription)")
      }
    }
    return environment("TOKEN").flatMap { $0.isEmpty ? nil : $0 }
  }

  /// Prints a message as one line of protobuf JSON.
  func printJSON(_ message: some SwiftProtobuf.Message) throws {
    say(try jsonLine(message))
  }
}

/// Exit codes the client commands use, so scripts can tell failures apart.
enum ClientExit {
  /// The job failed or was cancelled.
  static let jobFailed = ExitCode(1)
  /// The request was refused as invalid (bad model, data, names).
  static let invalidRequest = ExitCode(65)
  /// The coordinator could not be reached or did not answer in time.
  static let unavailable = ExitCode(69)
  /// No token, an unknown token, or another user's job (EX_NOPERM).
  static let notPermitted = ExitCode(77)

  /// Reports an RPC error on stderr and gives its exit code.
  static func exit(for error: RPCError) -> ExitCode {
    FileHandle.standardError.write(Data("pipemesh: \(error)\n".utf8))
    switch error.code {
    case .unavailable, .deadlineExceeded: return unavailable
    case .unauthenticated, .permissionDenied: return notPermitted
    case .invalidArgument, .notFound, .failedPrecondition, .alreadyExists, .outOfRange, .resourceExhausted:
      return invalidRequest
    default: return jobFailed
    }
  }
}

/// Runs a client call, turning RPC errors into the documented exit codes.
func withExitCodes(_ body: () async throws -> Void) async throws {
  do {
    try await body()
  } catch let error as RPCError {
    throw ClientExit.exit(for: error)
  } catch let error as any RPCErrorConvertible {
    // Refused on this side (a dataset read here, say) as the coordinator would refuse it.
    throw ClientExit.exit(for: error.rpcError)
  }
}
