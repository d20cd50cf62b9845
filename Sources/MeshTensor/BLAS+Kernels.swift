import COpenBLAS

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
}
