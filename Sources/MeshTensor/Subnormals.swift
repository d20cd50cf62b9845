#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// How this process's threads treat subnormal floats (magnitudes below
/// `Float.leastNormalMagnitude`, 1.2e-38).
///
/// A model trained until its loss is all but zero has gradients of 1e-20 and
/// less; Adam squares them into subnormals, and so do the products of the
/// backward pass. The CPU handles each operation on or into a subnormal in
/// microcode, a hundred cycles or more instead of one: a 1.1M-parameter MLP
/// that had learnt its data stepped three times slower, its time spent in
/// Adam's update. Flushed, those values are zero, which they are to within
/// 1.2e-38, as TensorFlow's compute threads treat them.
public enum Subnormals {
  /// Makes this thread, and every thread it starts from now on, read subnormal
  /// inputs as zero and write zero for subnormal results. Call it first in
  /// `main`, before the process starts threads (threads inherit the setting
  /// from the thread that starts them). OpenBLAS's worker threads, made as
  /// the library loads, keep the default: with more than one BLAS thread,
  /// their share of a product may still meet subnormals.
  public static func flushToZero() {
    var environment = fenv_t()
    fegetenv(&environment)
    #if arch(x86_64)
      environment.__mxcsr |= mxcsrFlushToZero | mxcsrDenormalsAreZero
    #elseif arch(arm64)
      environment.__fpcr |= fpcrFlushToZero
    #endif
    fesetenv(&environment)
  }

  /// Whether this thread flushes subnormal results to zero.
  public static var flushedToZero: Bool {
    var environment = fenv_t()
    fegetenv(&environment)
    #if arch(x86_64)
      return environment.__mxcsr & mxcsrFlushToZero != 0
    #elseif arch(arm64)
      return environment.__fpcr & fpcrFlushToZero != 0
    #else
      return false
    #endif
  }

  #if arch(x86_64)
    /// MXCSR's FTZ bit (results) and DAZ bit (inputs).
    private static let mxcsrFlushToZero: UInt32 = 1 << 15
    private static let mxcsrDenormalsAreZero: UInt32 = 1 << 6
  #elseif arch(arm64)
    /// FPCR's FZ bit (inputs and results).
    private static let fpcrFlushToZero: UInt32 = 1 << 24
  #endif
}
