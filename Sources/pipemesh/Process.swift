import Foundation
import MeshRPC
import UnixSignals

/// The value of `PIPEMESH_<name>` in the environment.
func environment(_ name: String) -> String? {
  ProcessInfo.processInfo.environment["PIPEMESH_\(name)"]
}

/// Tells whoever started the service where it listens: one line on stdout,
/// `listening on HOST:PORT`, that scripts and tests wait for.
func announceListening(_ server: RPCServer, role: String) {
  FileHandle.standardOutput.write(Data("\(role) listening on \(server.endpoint)\n".utf8))
}

/// SIGTERM and SIGINT, trapped from the moment this returns: a signal that
/// comes before anyone waits is kept, not fatal (swift-service-lifecycle's
/// UnixSignals, which registers the handlers before it returns).
func terminationSignals() async -> UnixSignalsSequence {
  await UnixSignalsSequence(trapping: .sigterm, .sigint)
}

extension UnixSignalsSequence {
  /// Returns at the first signal, or when the task is cancelled.
  func first() async {
    for await _ in self { return }
  }
}

/// A line on stdout, unbuffered so it interleaves with progress bars.
func say(_ line: String) {
  FileHandle.standardOutput.write(Data("\(line)\n".utf8))
}
