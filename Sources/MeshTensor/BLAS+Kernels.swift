import COpenBLAS
import Foundation

extension BLAS {
  /// The kernel set OpenBLAS chose for this CPU when it loaded ("SkylakeX", "Haswell", …).
  public static var kernels: String { String(cString: openblas_get_corename()) }

  /// The kernel set to name in `OPENBLAS_CORETYPE` when OpenBLAS fell back to its generic
  /// x86-64 kernels (Prescott: SSE3) on a CPU it does not know by model whose `cpuFlags` (as
  /// /proc/cpuinfo lists them) run far better ones; nil when its choice stands. Debian 12's
  /// OpenBLAS 0.3.21 knows no Xeon after Sapphire Rapids: on an Emerald Rapids core (model 207)
  /// it takes Prescott's sgemm at 32 GFLOP/s where the SkylakeX kernels reach 158, as fast as
  /// PyTorch's MKL on the same core.
  public static func betterKernels(than chosen: String, cpuFlags: Set<Substring>) -> String? {
    guard chosen == "Prescott" else { return nil }
    if cpuFlags.isSuperset(of: ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"]) { return "SkylakeX" }
    if cpuFlags.isSuperset(of: ["avx2", "fma"]) { return "Haswell" }
    return nil
  }

  /// Runs this process again with `OPENBLAS_CORETYPE` set when OpenBLAS chose
  /// kernels far below what the CPU runs (`betterKernels(than:cpuFlags:)`).
  /// OpenBLAS picks its kernels as it loads, before `main`, so only a new
  /// image of the process takes others: call this first in `main`, before the
  /// program starts anything. The process keeps its id (systemd's MAINPID); a
  /// given `OPENBLAS_CORETYPE` is left alone, and processes this one starts
  /// inherit it.
  public static func takeTheCPUsKernels() {
    let chosen = kernels
    guard chosen == "Prescott", ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil,
      let cpuInfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
      let flagsLine = cpuInfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
      let better = betterKernels(
        than: chosen, cpuFlags: Set(flagsLine.drop { $0 != ":" }.dropFirst().split(separator: " ")))
    else { return }
    setenv("OPENBLAS_CORETYPE", better, 1)
    execv("/proc/self/exe", CommandLine.unsafeArgv)
    // Not replaced: go on with the kernels OpenBLAS chose, as will the processes this one starts.
    let reason = String(cString: strerror(errno))
    unsetenv("OPENBLAS_CORETYPE")
    FileHandle.standardError.write(
      Data("OpenBLAS chose its \(chosen) kernels; starting again with \(better)'s failed: \(reason)\n".utf8))
  }
}
