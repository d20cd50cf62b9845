import Foundation
import MeshRPC
import Synchronization

/// The value of `PIPEMESH_<name>` in the environment.
func environment(_ name: String) -> String? {
  ProcessInfo.processInfo.environment["PIPEMESH_\(name)"]
}

/// Tells whoever started the service where it listens: one line on stdout,
/// `listening on HOST:PORT`, that scripts and tests wait for.
func announceListening(_ server: RPCServer, role: String) {
  FileHandle.standardOutput.write(Data("\(role) listening on \(server.endpoint)\n".utf8))
}

/// Returns when the process receives SIGTERM or SIGINT.
func waitForTerminationSignal() async {
  await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
    let waiter = SignalWaiter(continuation)
    for signalNumber in [SIGTERM, SIGINT] {
      signal(signalNumber, SIG_IGN)
      let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
      source.setEventHandler { waiter.resume() }
      source.resume()
      waiter.keep(source)
    }
  }
}

/// Resumes a continuation on the first signal, keeping the signal sources
/// alive until then.
private final class SignalWaiter: Sendable {
  private let state: Mutex<(continuation: CheckedContinuation<Void, Never>?, sources: [any DispatchSourceSignal])>

  init(_ continuation: CheckedContinuation<Void, Never>) { state = Mutex((continuation, [])) }

  func keep(_ source: any DispatchSourceSignal) { state.withLock { $0.sources.append(source) } }

  func resume() {
    let continuation = state.withLock { state in
      defer { state = (nil, []) }
      return state.continuation
    }
    continuation?.resume()
  }
}

/// A line on stdout, unbuffered so it interleaves with progress bars.
func say(_ line: String) {
  FileHandle.standardOutput.write(Data("\(line)\n".utf8))
}
