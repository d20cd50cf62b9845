import MeshCoordinator
import MeshInProcess
import MeshProto
import MeshRPC
import MeshWire
import Synchronization
import Testing

/// A step past its deadline: run on while every member of the job answers,
/// failed at once when one does not, and failed at its limit whatever they
/// answer. The step held is a job's first, whose deadline (0.5 s here) does
/// not depend on how fast the machine ran the steps before.
@Suite struct StepDeadlineTests {
  static let deadline = StepDeadline(floor: .milliseconds(200), firstSteps: .milliseconds(500), limit: 100)

  /// Holds the answer of job "slow"'s forward of `step`, micro-batch 0, on the last stage for `delay`.
  static func holdForward(of step: Int64, by delay: Duration, on mesh: InProcessMesh) {
    mesh.network.delayNextCall(PartitionMethods.forward.path, to: mesh.partitions[1][0], by: delay) { bytes in
      guard let request = try? Pipemesh_V1_ForwardRequest(serializedBytes: bytes) else { return false }
      return request.key.job.hasPrefix("slow.") && request.key.step == step && request.key.microBatch == 0
    }
  }

  @Test func aStepPastItsDeadlineRunsOnWhileEveryMemberAnswers() async throws {
    let events = RecordedEvents()
    let mesh = try InProcessMesh(stages: 2, stepDeadline: Self.deadline, events: events)
    let outcome = await Result(catching: {
      let straight = try await JobCheckpointTests.trainToEnd("straight", epochs: 1, on: mesh) { _ in }
      Self.holdForward(of: 1, by: .seconds(3), on: mesh)
      let slow = try await JobCheckpointTests.trainToEnd("slow", epochs: 1, on: mesh) { _ in }
      #expect(mesh.network.unfiredFaults == 0)
      #expect(slow.state == .succeeded && slow.faults.isEmpty, "\(slow)")
      // Asked about at least once past its deadline, everyone answering.
      #expect(events.slowSteps.filter { $0.job == "slow" && $0.what == "step 1" }.count >= 2, "\(events.slowSteps)")
      try await JobCheckpointTests.expectSameRun(slow, as: straight, on: mesh)
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }

  @Test func aStepFailsAtItsLimitThoughEveryMemberAnswers() async throws {
    var deadline = Self.deadline
    deadline.limit = 3
    let mesh = try InProcessMesh(stages: 2, stepDeadline: deadline)
    let outcome = await Result(catching: {
      Self.holdForward(of: 1, by: .seconds(600), on: mesh)
      let failure = await #expect(throws: RPCError.self) {
        _ = try await JobCheckpointTests.trainToEnd("slow", epochs: 1, on: mesh) { _ in }
      }
      #expect(
        failure?.message.contains(
          "DEADLINE_EXCEEDED: step 1 ran past 3 deadlines of 0.5 seconds though every partition and ps task of the "
            + "job answers") == true, "\(String(describing: failure))")
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }

  @Test func aMemberThatDoesNotAnswerFailsTheStepAtItsDeadline() async throws {
    let events = RecordedEvents()
    var deadline = Self.deadline
    deadline.probeTimeout = .seconds(1)
    let mesh = try InProcessMesh(stages: 2, stepDeadline: deadline, events: events)
    let outcome = await Result(catching: {
      Self.holdForward(of: 1, by: .seconds(600), on: mesh)
      // The first stage does not answer its health check (a stopped process).
      mesh.network.delayNextCall(HealthMethods.check.path, to: mesh.partitions[0][0], by: .seconds(600))
      let failure = await #expect(throws: RPCError.self) {
        _ = try await JobCheckpointTests.trainToEnd("slow", epochs: 1, on: mesh) { _ in }
      }
      #expect(
        failure?.message.contains(
          "step 1 ran past its deadline of 0.5 seconds and stage 0 replica 0 (\(mesh.partitions[0][0])) did not "
            + "answer a health check within 1.0 seconds") == true, "\(String(describing: failure))")
      #expect(events.slowSteps.isEmpty, "\(events.slowSteps)")
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }

  /// The ps freezes as the job pulls its final weights (the pull and the
  /// next health check held, as a stopped process holds them): the pull
  /// fails at its deadline's look, in seconds rather than at a connection's
  /// keepalive, and the job restarts from its newest checkpoint and
  /// registers the weights of a run never stopped.
  @Test func aPSThatFreezesAsTheFinalWeightsArePulledIsFoundAtTheDeadline() async throws {
    // Long enough for the health check to be held before the first look; a step
    // past it looks at members that all answer, and runs on.
    var deadline = StepDeadline(floor: .seconds(2), firstSteps: .seconds(5), limit: 100)
    deadline.probeTimeout = .seconds(1)
    let (pulling, pullBegan) = AsyncStream.makeStream(of: Void.self)
    let faults = try await JobCheckpointTests.faultyRunEqualsStraightOne(checkpointEvery: 5, stepDeadline: deadline) {
      mesh in
      mesh.network.delayNextCall(ParameterServerMethods.pull.path, to: mesh.parameterServers[0], by: .seconds(600)) {
        bytes in
        // The coordinator's pull names the task's incarnation; the partitions' pulls do not.
        guard let request = try? Pipemesh_V1_PullRequest(serializedBytes: bytes),
          request.job.hasPrefix("faulty."), request.incarnation != 0
        else { return false }
        pullBegan.yield()
        return true
      }
      let ps = mesh.parameterServers[0]
      Task {
        for await _ in pulling {
          mesh.network.delayNextCall(HealthMethods.check.path, to: ps, by: .seconds(600))
          return
        }
      }
    }
    #expect(faults.count == 1, "\(faults)")
    let error = faults.first?.error ?? ""
    #expect(
      error.contains("its model could not be registered: the pull of the final weights ran past its deadline of ")
        && error.contains("ps task 0 (ps-0.in-process:1) did not answer a health check"), "\(faults)")
    #expect(faults.first?.step == 24 && faults.first?.stepsRedone == 4, "\(faults)")
  }
}

/// The steps that ran past their deadline and ran on, as the coordinator told.
final class RecordedEvents: TrainingEvents {
  private let slow = Mutex<[(job: String, what: String)]>([])

  var slowSteps: [(job: String, what: String)] { slow.withLock { $0 } }

  func ranPastDeadline(_ job: String, _ what: String, after: Duration) { slow.withLock { $0.append((job, what)) } }
  func started(_ job: String, stages: Int, replicas: Int, partitions: [String], fromStep step: Int64) {}
  func stepped(_ job: String, _ progress: Pipemesh_V1_TrainProgress, seconds: Double, replicas: Int) {}
  func evaluated(_ job: String, _ progress: Pipemesh_V1_TrainProgress) {}
  func checkpointedAfterFailure(_ job: String, step: Int64, refusal: String?) {}
  func stopped(_ job: String, _ fault: Pipemesh_V1_JobFault) {}
  func recovered(_ job: String, how: Pipemesh_V1_JobState, seconds: Double) {}
  func ended(_ job: String, _ state: Pipemesh_V1_JobState, error: String) {}
}
