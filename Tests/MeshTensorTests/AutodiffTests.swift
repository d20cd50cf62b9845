import Foundation
import Testing
@testable import MeshTensor

@Suite("Reverse-mode differentiation")
struct AutodiffTests {
    @Test func gradientAccumulatesOverReuse() {
        let x = Tensor(shape: [2], scalars: [3, -1])
        let (value, gradients) = Autodiff.valueWithGradient(at: [x]) { v in (v[0] * v[0] + v[0]).sum() }
        #expect(value.scalar == 12)
        #expect(gradients[0].scalars == [7, -1])
    }

    @Test func backwardFromUpstreamEqualsWeightedLoss() {
        let x = sample([3, 4], seed: 1), w = sample([4, 2], seed: 2), upstream = sample([3, 2], seed: 3)
        let (output, backpropagator) = Autodiff.valueWithBackpropagator(at: [x, w]) { v in Tensor.matmul(v[0], v[1]).tanh() }
        #expect(!output.isTrackingGradients)
        let fromUpstream = backpropagator(upstream)
        let (_, reference) = Autodiff.valueWithGradient(at: [x, w]) { v in (Tensor.matmul(v[0], v[1]).tanh() * upstream).sum() }
        expectClose(fromUpstream[0], reference[0], tolerance: 1e-6)
        expectClose(fromUpstream[1], reference[1], tolerance: 1e-6)
    }

    @Test func backpropagatorsOfSeveralMicroBatchesRunLaterInAnyOrder() {
        let w = sample([2, 2], seed: 4)
        let microBatches = [sample([1, 2], seed: 5), sample([1, 2], seed: 6)]
        let kept = microBatches.map { x in Autodiff.valueWithBackpropagator(at: [x, w]) { v in Tensor.matmul(v[0], v[1]).sigmoid() } }
        let upstream = Tensor.ones([1, 2])
        let late = kept.reversed().map { $0.backpropagator(upstream)[1] }
        let direct = microBatches.reversed().map { x in
            Autodiff.valueWithGradient(at: [w]) { v in Tensor.matmul(x, v[0]).sigmoid().sum() }.gradients[0]
        }
        for (a, b) in zip(late, direct) { expectClose(a, b, tolerance: 1e-6) }
    }

    @Test func unusedAndUntrackedInputsGetZeroGradients() {
        let x = Tensor(shape: [2], scalars: [1, 2]).trackingGradients()
        let unused = Tensor.ones([3]).trackingGradients()
        let gradients = Autodiff.gradients(of: (x * 2).sum(), withRespectTo: [x, unused])
        #expect(gradients[0].scalars == [2, 2])
        #expect(gradients[1].scalars == [0, 0, 0])
        #expect(!withoutGradients { x * 2 }.isTrackingGradients)
    }

    @Test func broadcastGradientIsSummedBackToShape() {
        let bias = Tensor(shape: [3], scalars: [0, 0, 0])
        let (_, gradients) = Autodiff.valueWithGradient(at: [bias]) { v in (Tensor.ones([4, 3]) + v[0]).sum() }
        #expect(gradients[0].shape == [3])
        #expect(gradients[0].scalars == [4, 4, 4])
    }

    @Test func longTapeIsDifferentiatedAndReleasedWithoutDeepRecursion() async {
        // 200 000 recorded operations in one chain, on a non-main thread (smaller stack).
        let gradient = await Task.detached { () -> Float in
            var x = Tensor.ones([2]).trackingGradients()
            let leaf = x
            for _ in 0..<100_000 { x = x * 1.0001 + 0 }
            return Autodiff.gradients(of: x.sum(), withRespectTo: [leaf])[0].scalars[0]
        }.value
        let expected = Foundation.pow(Double(Float(1.0001)), 100_000)
        #expect(abs(Double(gradient) - expected) <= 1e-2 * expected)
    }
}
