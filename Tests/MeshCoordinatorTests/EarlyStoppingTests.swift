import Foundation
import MeshCheckpoint
import MeshInProcess
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

@testable import MeshCoordinator

/// Early stopping: a job whose validation loss stops falling ends after
/// `patience` epochs without improvement, with its weights on the ps.
@Suite struct EarlyStoppingTests {
  /// Job `job` of a model on random labels (nothing to learn that
  /// generalises, so the held-out loss soon rises): up to 200 epochs of 6
  /// steps, stopping after 3 epochs without improvement.
  static func patientRequest(_ job: String) -> (request: Pipemesh_V1_TrainRequest, inputs: Tensor) {
    let count = 256
    let inputs = Tensor.randomNormal([count, 8], seed: 5)
    let labels = Tensor(
      shape: [count], scalars: (0..<count).map { Float(PortableRandom.bits(seed: 6, counter: UInt64($0)) % 2) })
    let model = Pipemesh_V1_ModelSpec.with {
      $0.inputShape = [8]
      $0.seed = 4
      $0.layers = [
        .with {
          $0.dense = .with {
            $0.units = 64
            $0.activation = .relu
          }
        },
        .with { $0.dense = .with { $0.units = 2 } },
      ]
      $0.loss.softmaxCrossEntropy = .init()
    }
    var request = Pipemesh_V1_TrainRequest.inline(
      job: job, model: model, inputs: inputs, targets: labels, epochs: 200, batchSize: 32, microBatches: 2,
      schedule: .scheduleOneFOneB, learningRate: 0.3)
    request.validationFraction = 0.25
    request.earlyStopping = .with { $0.patience = 3 }
    return (request, inputs)
  }

  @Test func aJobStopsOnceItsValidationLossStopsFallingWithItsWeightsFlushed() async throws {
    let (request, inputs) = Self.patientRequest("patient")
    let mesh = try InProcessMesh(stages: 2)
    let outcome = await Result(catching: {
      let coordinator = mesh.coordinatorChannel()
      var progress: [Pipemesh_V1_TrainProgress] = []
      for try await update in coordinator.stream(CoordinatorMethods.train, request) { progress.append(update) }
      let last = try #require(progress.last)
      let job = try await coordinator.call(CoordinatorMethods.getJob, .with { $0.job = "patient" })
      #expect(job.state == .succeeded)
      let stopped = Int(job.stoppedEarlyEpoch)
      #expect(stopped > 3 && stopped < 200, "stopped after epoch \(stopped)")
      #expect(last.done && Int(last.stoppedEarlyEpoch) == stopped)
      #expect(job.epochs.count == stopped)
      // The rule, read from the recorded losses: the last three epochs none below the best of
      // those before them; at every earlier epoch some epoch of its window was.
      let losses = job.epochs.map(\.validationLoss)
      func noneImproved(through epoch: Int) -> Bool {
        guard let best = losses[..<(epoch - 3)].min() else { return false }
        return losses[(epoch - 3)..<epoch].allSatisfy { $0 > best }
      }
      #expect(noneImproved(through: stopped), "\(losses)")
      #expect((4..<stopped).allSatisfy { !noneImproved(through: $0) }, "\(losses)")

      // The weights on the ps are the last step's: the exported model computes what the job's
      // stages answer (without the flush at the epoch's end, the ps would hold older values).
      var bytes = Data()
      var record: Pipemesh_V1_Model?
      for try await chunk in coordinator.stream(CoordinatorMethods.exportModel, .with { $0.model = "patient" }) {
        if chunk.hasModel { record = chunk.model }
        bytes.append(chunk.data)
      }
      let weights = try SafeTensors.decode(bytes).tensors
      let network = try makeModel(try #require(record).spec)
      let local = network(inputs, variables: weights)
      let answered = try Tensor(
        wire: try await coordinator.call(
          CoordinatorMethods.infer,
          .with {
            $0.job = "patient"
            $0.inputs = Pipemesh_V1_Tensor(inputs)
          }
        ).outputs, what: "outputs")
      let largest = zip(local.scalars, answered.scalars).map { abs($0 - $1) }.max() ?? .infinity
      #expect(largest < 1e-4, "exported weights and the job's stages differ by \(largest)")
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }

  /// A job that stopped early, checkpointed at its end, whose final pull is
  /// refused (a ps task that restarted): it resumes at that checkpoint and
  /// stops there again, with the epochs and weights of a run never stopped,
  /// instead of training on to its last epoch.
  @Test func aStoppedJobThatRestartsToRegisterItsModelStopsAgain() async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-early-stop-restart")
    let mesh = try InProcessMesh(stages: 2, checkpointDirectory: directory.path)
    let outcome = await Result(catching: {
      func train(_ job: String) async throws -> Pipemesh_V1_Job {
        var request = Self.patientRequest(job).request
        request.checkpoint.atEnd = true
        request.maxRestarts = 1
        let coordinator = mesh.coordinatorChannel()
        for try await _ in coordinator.stream(CoordinatorMethods.train, request) {}
        return try await coordinator.call(CoordinatorMethods.getJob, .with { $0.job = job })
      }
      let straight = try await train("straight")
      JobCheckpointTests.refuseTheFinalPull(of: "faulty", on: mesh)
      let faulty = try await train("faulty")
      #expect(mesh.network.unfiredFaults == 0)
      #expect(straight.stoppedEarlyEpoch > 3 && straight.stoppedEarlyEpoch < 200, "\(straight)")
      #expect(faulty.state == .succeeded && faulty.faults.count == 1, "\(faulty)")
      #expect(faulty.stoppedEarlyEpoch == straight.stoppedEarlyEpoch && faulty.epochs.count == straight.epochs.count)
      try await JobCheckpointTests.expectSameRun(faulty, as: straight, on: mesh)
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }

  /// The rule on recorded losses: `patience` epochs in a row none below the best before them
  /// by more than min_delta; a diverged (NaN) epoch improves on nothing.
  @Test func theRuleReadsTheRecordedLosses() {
    func stops(_ losses: [Double], patience: Int32 = 2, minDelta: Float = 0) -> Bool {
      TrainingJob.stopsEarly(
        after: losses.enumerated().map { index, loss in
          .with {
            $0.epoch = Int32(index + 1)
            $0.validationLoss = loss
          }
        },
        .with {
          $0.patience = patience
          $0.minDelta = minDelta
        })
    }
    #expect(!stops([1.0, 0.9]))  // no more epochs than the patience
    #expect(!stops([1.0, 0.9, 0.8]))
    #expect(stops([1.0, 0.9, 0.95, 0.91]))
    #expect(!stops([1.0, 0.9, 0.95, 0.89]))
    #expect(stops([1.0, 0.9, 0.95, 0.89], minDelta: 0.05))
    #expect(stops([1.0, 0.9, .nan, .nan]))
    #expect(stops([.nan, 0.9, 1.0, 1.0]))
    #expect(!stops([1.0, 0.9, 0.95, 0.89], patience: 0))
  }

  @Test func earlyStoppingNeedsHeldOutDataAndSaneBounds() async throws {
    let mesh = try InProcessMesh(stages: 1)
    let outcome = await Result(catching: {
      let inputs = Tensor.randomNormal([64, 8], seed: 1)
      let labels = Tensor(shape: [64], repeating: 1)
      let model = Pipemesh_V1_ModelSpec.with {
        $0.inputShape = [8]
        $0.layers = [.with { $0.dense = .with { $0.units = 2 } }]
      }
      func refusal(_ change: (inout Pipemesh_V1_TrainRequest) -> Void) async -> RPCError? {
        var request = Pipemesh_V1_TrainRequest.inline(
          job: "refused", model: model, inputs: inputs, targets: labels, epochs: 2, batchSize: 16, microBatches: 1,
          schedule: .scheduleOneFOneB, learningRate: 0.1)
        request.validationFraction = 0.25
        change(&request)
        return await #expect(throws: RPCError.self) {
          for try await _ in mesh.coordinatorChannel().stream(CoordinatorMethods.train, request) {}
        }
      }
      let noValidation = await refusal {
        $0.earlyStopping.patience = 2
        $0.validationFraction = 0
      }
      #expect(noValidation?.message.contains("validation_fraction") == true, "\(String(describing: noValidation))")
      for change: (inout Pipemesh_V1_TrainRequest) -> Void in [
        { $0.earlyStopping.patience = -1 }, { $0.earlyStopping.patience = 10_001 },
        {
          $0.earlyStopping.patience = 1
          $0.earlyStopping.minDelta = .nan
        },
        {
          $0.earlyStopping.patience = 1
          $0.earlyStopping.minDelta = -1
        },
      ] {
        let refused = await refusal(change)
        #expect(refused?.code == .invalidArgument && refused?.message.contains("early_stopping") == true)
      }
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }
}
