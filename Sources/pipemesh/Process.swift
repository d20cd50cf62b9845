import Foundation
import MeshRPC
import MeshTensor
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

/// Runs this process again with `OPENBLAS_CORETYPE` set when OpenBLAS chose
/// kernels far below what the CPU runs (`BLAS.betterKernels(than:cpuFlags:)`).
/// OpenBLAS picks its kernels as it loads, before `main`, so only a new image
/// of the process takes others; this comes first in `main`, before Pipemesh
/// starts anything, and keeps the process id (systemd's MAINPID). A given
/// `OPENBLAS_CORETYPE` is left alone, and processes this one starts inherit it.
func takeTheCPUsBLASKernels() {
  let chosen = BLAS.kernels
  guard chosen == "Prescott", ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil,
    let cpuInfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
    let flagsLine = cpuInfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
    let better = BLAS.betterKernels(
      than: chosen, cpuFlags: Set(flagsLine.drop { $0 != ":" }.dropFirst().split(separator: " ")))
  else { return }
  setenv("OPENBLAS_CORETYPE", better, 1)
  execv("/proc/self/exe", CommandLine.unsafeArgv)
  // Not replaced: go on with the kernels OpenBLAS chose, as will the processes this one starts.
  let reason = String(cString: strerror(errno))
  unsetenv("OPENBLAS_CORETYPE")
  FileHandle.standardError.write(
    Data("pipemesh: OpenBLAS chose its \(chosen) kernels; starting again with \(better)'s failed: \(reason)\n".utf8))
}
