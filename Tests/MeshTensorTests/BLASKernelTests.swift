import Testing

@testable import MeshTensor

@Suite("OpenBLAS kernels")
struct BLASKernelTests {
  @Test func theGenericFallbackGivesWayToWhatTheFlagsRun() {
    let avx512: Set<Substring> = [
      "sse4_2", "avx", "avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl",
    ]
    #expect(BLAS.betterKernels(than: "Prescott", cpuFlags: avx512) == "SkylakeX")
    #expect(BLAS.betterKernels(than: "Prescott", cpuFlags: ["sse4_2", "avx", "avx2", "fma"]) == "Haswell")
    // AVX-512 without BW and VL (Knights Landing) runs Haswell's kernels, not SkylakeX's.
    #expect(BLAS.betterKernels(than: "Prescott", cpuFlags: ["avx2", "fma", "avx512f", "avx512cd"]) == "Haswell")
    #expect(BLAS.betterKernels(than: "Prescott", cpuFlags: ["sse3", "ssse3", "sse4_2", "avx"]) == nil)
  }

  @Test func aKernelSetOpenBLASChoseByModelStands() {
    #expect(BLAS.betterKernels(than: "Haswell", cpuFlags: ["avx2", "fma", "avx512f", "avx512bw", "avx512dq"]) == nil)
    #expect(BLAS.betterKernels(than: "Zen", cpuFlags: ["avx2", "fma"]) == nil)
  }
}
