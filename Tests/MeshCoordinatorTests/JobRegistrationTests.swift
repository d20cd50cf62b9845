import Foundation
import MeshProto
import MeshTestSupport
import Testing

@testable import MeshCoordinator

/// A job registers one model version. A coordinator stopped after registering a job's model but
/// before saving its success resumes the job, which registers again when it ends: the store
/// gives back the version the job already has.
@Suite struct JobRegistrationTests {
  private let state: TemporaryDirectory
  private let store: CoordinatorStore

  init() throws {
    state = try TemporaryDirectory(prefix: "pipemesh-registration")
    store = try CoordinatorStore(directory: state.path)
  }

  /// Records job `name` as created at `created` (a Train of that name, replacing any before it).
  private func startJob(_ name: String, created: Double) async throws {
    let job = CoordinatorStore.StoredJob(
      record: .with {
        $0.job = name
        $0.state = .running
        $0.createdUnixSeconds = created
      }, runID: "\(name)-\(Int(created))")
    _ = try await store.insertJob(job) { _, _ in }
  }

  /// Registers weights (a file of `bytes`) as a version of `name` trained by job `job`.
  private func register(_ name: String, job: String, at time: Double, bytes: String) async throws -> (
    CoordinatorStore.StoredModel, incoming: String
  ) {
    let incoming = store.incomingWeightsPath()
    try Data(bytes.utf8).write(to: URL(fileURLWithPath: incoming))
    let model = try await store.addModel(
      .with {
        $0.name = name
        $0.job = job
        $0.createdUnixSeconds = time
      }, weights: incoming
    ) { _ in }
    return (model, incoming)
  }

  private func weights(of model: CoordinatorStore.StoredModel) throws -> String {
    String(decoding: try Data(contentsOf: URL(fileURLWithPath: store.weightsPath(model))), as: UTF8.self)
  }

  @Test func aJobThatRegistersAgainGetsTheVersionItHas() async throws {
    try await startJob("digits", created: 100)
    let (first, _) = try await register("digits", job: "digits", at: 200, bytes: "first")
    #expect(first.record.version == 1)
    #expect(try await store.job("digits")?.record.model == "digits:v1", "recorded with the version, at once")
    // The same job, resumed after its coordinator stopped, ends and registers again.
    let (again, incoming) = try await register("digits", job: "digits", at: 300, bytes: "second")
    #expect(again.record.version == 1)
    #expect(try weights(of: again) == "first")
    #expect(!FileManager.default.fileExists(atPath: incoming), "the second pull's file is not left behind")
    #expect(try await store.models(named: "digits").map(\.record.version) == [1])
    #expect(try await store.model(registeredBy: "digits")?.record.version == 1)
  }

  @Test func aNewJobOfTheSameNameRegistersTheNextVersion() async throws {
    try await startJob("digits", created: 400)
    _ = try await register("digits", job: "digits", at: 500, bytes: "first")
    // A later Train of the name is another job, even when the clock stepped back meanwhile.
    try await startJob("digits", created: 100)
    #expect(try await store.model(registeredBy: "digits") == nil)
    let (next, _) = try await register("digits", job: "digits", at: 200, bytes: "second")
    #expect(next.record.version == 2)
    #expect(try weights(of: next) == "second")
  }

  /// Weights imported or uploaded belong to no job: each is a version of its own.
  @Test func weightsFromNoJobAreAVersionEachTime() async throws {
    let (first, _) = try await register("imported", job: "", at: 100, bytes: "a")
    let (second, _) = try await register("imported", job: "", at: 200, bytes: "b")
    #expect([first.record.version, second.record.version] == [1, 2])
  }

  /// A file that an earlier version of the coordinator left in the models directory on its way
  /// in goes at the next start; a model whose name looks like one stays.
  @Test func theNextStartClearsWhatACrashLeftOnItsWayIn() async throws {
    let models = "\(state.path)/models"
    try await startJob("incoming-x", created: 100)
    let (kept, _) = try await register("incoming-x", job: "incoming-x", at: 200, bytes: "kept")
    let leftovers = [
      store.incomingWeightsPath(), "\(models)/incoming-\(UUID().uuidString).safetensors",
      "\(models)/.tmp-incoming-\(UUID().uuidString).safetensors-123",
    ]
    for path in leftovers { try Data("partial".utf8).write(to: URL(fileURLWithPath: path)) }
    let reopened = try CoordinatorStore(directory: state.path)
    #expect(leftovers.allSatisfy { !FileManager.default.fileExists(atPath: $0) }, "\(leftovers)")
    #expect(FileManager.default.fileExists(atPath: reopened.weightsPath(kept)))
  }
}
