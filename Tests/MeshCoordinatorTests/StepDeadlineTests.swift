import MeshCoordinator
import MeshInProcess
import MeshProto
import MeshRPC
import MeshWire
import Synchronization
import Testing

/// A step past its deadline: run on while every member of the job answers,
/// failed at once when one does not, and failed at its limit whatever they
/// answer. Deadlines here are a step's time (factor 1, at least 0.2 s), so
/// that a held answer of 3 s or more runs past them on a busy machine too.
@Suite struct StepDeadlineTests {
  /// Holds the answer of job "slow"'s forward of `step`, micro-batch 0, on the last stage for `delay`.
  static func holdForward(of step: Int64, by delay: Duration, on mesh: InProcessMesh) {
    mesh.network.delayNextCall(PartitionMethods.forward.path, to: mesh.partitions[1][0], by: delay) { bytes in
      guard let request = try? Pipemesh_V1_ForwardRequest(serializedBytes: bytes) else { return false }
      return request.key.job.hasPrefix("slow.") && request.key.step == step && request.key.microBatch == 0
    }
  }

  @Test func aStepPastItsDeadlineRunsOnWhileEveryMemberAnswers() async throws {
    let events = RecordedEvents()
    let mesh = try InProcessMesh(
      stages: 2, stepDeadline: StepDeadline(factor: 1, floor: .milliseconds(200), firstSteps: .seconds(30), limit: 100),
      events: events)
    let outcome = await Result(catching: {
      let straight = try await JobCheckpointTests.trainToEnd("straight", epochs: 1, on: mesh) { _ in }
      Self.holdForward(of: 3, by: .seconds(3), on: mesh)
      let slow = try await JobCheckpointTests.trainToEnd("slow", epochs: 1, on: mesh) { _ in }
      #expect(mesh.network.unfiredFaults == 0)
      #expect(slow.state == .succeeded && slow.faults.isEmpty, "\(slow)")
      // Asked about at least once past its deadline, everyone answering.
      #expect(events.slowSteps.contains { $0.job == "slow" && $0.step == 3 }, "\(events.slowSteps)")
      try await JobCheckpointTests.expectSameRun(slow, as: straight, on: mesh)
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }

  @Test func aStepFailsAtItsLimitThoughEveryMemberAnswers() async throws {
    let mesh = try InProcessMesh(
      stages: 2, stepDeadline: StepDeadline(factor: 1, floor: .milliseconds(200), firstSteps: .seconds(30), limit: 3))
    let outcome = await Result(catching: {
      Self.holdForward(of: 3, by: .seconds(600), on: mesh)
      let failure = await #expect(throws: RPCError.self) {
        _ = try await JobCheckpointTests.trainToEnd("slow", epochs: 1, on: mesh) { _ in }
      }
      #expect(failure?.message.contains("DEADLINE_EXCEEDED: step 3 ran past") == true, "\(String(describing: failure))")
      #expect(
        failure?.message.contains("(3 deadlines of 1× the slowest recent step, at least 0.2 seconds)") == true
          && failure?.message.contains("though every partition and ps task of the job answers") == true,
        "\(String(describing: failure))")
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }

  @Test func aMemberThatDoesNotAnswerFailsTheStepAtItsDeadline() async throws {
    let events = RecordedEvents()
    let mesh = try InProcessMesh(
      stages: 2,
      stepDeadline: StepDeadline(
        factor: 1, floor: .milliseconds(200), firstSteps: .seconds(30), probeTimeout: .seconds(1), limit: 100),
      events: events)
    let outcome = await Result(catching: {
      Self.holdForward(of: 3, by: .seconds(600), on: mesh)
      // The first stage stops answering (a stopped process) once step 3 has begun.
      mesh.network.delayNextCall(HealthMethods.check.path, to: mesh.partitions[0][0], by: .seconds(600))
      let failure = await #expect(throws: RPCError.self) {
        _ = try await JobCheckpointTests.trainToEnd("slow", epochs: 1, on: mesh) { _ in }
      }
      #expect(
        failure?.message.contains("and stage 0 replica 0 (\(mesh.partitions[0][0])) did not answer within 1.0 seconds")
          == true, "\(String(describing: failure))")
      #expect(!events.slowSteps.contains { $0.step == 3 }, "\(events.slowSteps)")
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }
}

/// The steps that ran past their deadline and ran on, as the coordinator told.
final class RecordedEvents: TrainingEvents {
  private let slow = Mutex<[(job: String, step: Int64)]>([])

  var slowSteps: [(job: String, step: Int64)] { slow.withLock { $0 } }

  func ranPastDeadline(_ job: String, step: Int64, after: Duration) { slow.withLock { $0.append((job, step)) } }
  func started(_ job: String, stages: Int, replicas: Int, partitions: [String], fromStep step: Int64) {}
  func stepped(_ job: String, _ progress: Pipemesh_V1_TrainProgress, seconds: Double, replicas: Int) {}
  func evaluated(_ job: String, _ progress: Pipemesh_V1_TrainProgress) {}
  func checkpointedAfterFailure(_ job: String, step: Int64, refusal: String?) {}
  func stopped(_ job: String, _ fault: Pipemesh_V1_JobFault) {}
  func recovered(_ job: String, how: Pipemesh_V1_JobState, seconds: Double) {}
  func ended(_ job: String, _ state: Pipemesh_V1_JobState, error: String) {}
}
