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

/// Returns when the process receives SIGTERM or SIGINT, or when the task is
/// cancelled.
func waitForTerminationSignal() async {
  let waiter = SignalWaiter()
  await withTaskCancellationHandler {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      waiter.arm(continuation)
      for signalNumber in [SIGTERM, SIGINT] {
        signal(signalNumber, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
        source.setEventHandler { waiter.fire() }
        source.resume()
        waiter.keep(source)
      }
    }
  } onCancel: {
    waiter.fire()
  }
}

/// Resumes a continuation once, on the first signal or cancellation, and
/// keeps the signal sources alive until then.
private final class SignalWaiter: Sendable {
  private struct State {
    var continuation: CheckedContinuation<Void, Never>?
    var fired = false
    var sources: [SignalSource] = []
  }

  /// A dispatch source; only `cancel` is called on it, which is thread-safe.
  private struct SignalSource: @unchecked Sendable {
    let source: any DispatchSourceSignal
  }
  private let state = Mutex(State())

  func arm(_ continuation: CheckedContinuation<Void, Never>) {
    let firedAlready = state.withLock { state in
      if !state.fired { state.continuation = continuation }
      return state.fired
    }
    if firedAlready { continuation.resume() }
  }

  func keep(_ source: any DispatchSourceSignal) {
    let kept = SignalSource(source: source)
    state.withLock { $0.sources.append(kept) }
  }

  func fire() {
    let (continuation, sources) = state.withLock { state in
      state.fired = true
      defer {
        state.continuation = nil
        state.sources = []
      }
      return (state.continuation, state.sources)
    }
    for kept in sources { kept.source.cancel() }
    continuation?.resume()
  }
}

/// A line on stdout, unbuffered so it interleaves with progress bars.
func say(_ line: String) {
  FileHandle.standardOutput.write(Data("\(line)\n".utf8))
}
