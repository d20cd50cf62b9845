import MeshTensor
import Testing

@testable import MeshCoordinator

/// R² of a regression's held-out split, as the coordinator reports it.
@Suite struct DeterminationTests {
  @Test func rSquaredComparesErrorsWithEachOutputsVariance() {
    // Two outputs: the first varies by ±1 about 1, the second by ±2 about 10.
    let targets = Tensor(shape: [2, 2], scalars: [0, 8, 2, 12])
    // Σ(y − ȳ)² = 1 + 1 + 4 + 4 = 10 (each output about its own mean).
    #expect(TrainingJob.determination(squaredErrors: 0, targets: targets) == 1)
    #expect(TrainingJob.determination(squaredErrors: 10, targets: targets) == 0)
    #expect(abs(TrainingJob.determination(squaredErrors: 2.5, targets: targets) - 0.75) < 1e-12)
    #expect(TrainingJob.determination(squaredErrors: 20, targets: targets) == -1)
    // Targets that do not vary leave nothing to explain.
    #expect(TrainingJob.determination(squaredErrors: 1, targets: Tensor(shape: [3, 1], repeating: 4)) == 0)
  }
}
