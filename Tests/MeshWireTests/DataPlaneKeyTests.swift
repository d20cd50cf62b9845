import MeshProto
import MeshRPC
import MeshWire
import Testing

/// A data-plane key survives its wire form `job/step/micro-batch/kind`, and any other string is refused with
/// INVALID_ARGUMENT quoting it.
@Suite struct DataPlaneKeyTests {
  private static func microBatch(job: String, step: Int64, microBatch: Int32) -> Pipemesh_V1_MicroBatchKey {
    var key = Pipemesh_V1_MicroBatchKey()
    key.job = job
    key.step = step
    key.microBatch = microBatch
    return key
  }

  @Test func wireFormNamesEveryPart() {
    let key = DataPlaneKey(Self.microBatch(job: "job-1.run_2", step: 7, microBatch: 3), .gradient)
    #expect(key.wire == "job-1.run_2/7/3/gradient")
    #expect(key.description == key.wire)
  }

  @Test(arguments: DataPlaneKey.Kind.allCases)
  func everyKindSurvivesTheWire(kind: DataPlaneKey.Kind) throws {
    let steps: [Int64] = [0, 1, -1, 1 << 40, .max, .min]
    let microBatches: [Int32] = [0, 5, -5, .max, .min]
    for step in steps {
      for microBatch in microBatches {
        let key = DataPlaneKey(Self.microBatch(job: "train", step: step, microBatch: microBatch), kind)
        let decoded = try DataPlaneKey(wire: key.wire)
        #expect(decoded == key, "\(key.wire)")
        #expect(decoded.job == "train")
        #expect(decoded.step == step)
        #expect(decoded.microBatch == microBatch)
        #expect(decoded.kind == kind)
      }
    }
  }

  @Test func parsesAKeyWrittenByHand() throws {
    let key = try DataPlaneKey(wire: "mnist/-12/2147483647/inference")
    #expect(key.job == "mnist")
    #expect(key.step == -12)
    #expect(key.microBatch == Int32.max)
    #expect(key.kind == .inference)
  }

  @Test(arguments: [
    "", "/", "//", "///", "job", "job/1/0", "job/1/0/activation/extra", "job/x/0/activation",
    "job/99999999999999999999999/0/activation", "job/1/2147483648/activation", "job/1/0/weights",
    "job/1/0/Activation", "/1/0/activation", "job//0/activation", "job/1//activation",
  ])
  func malformedKeysAreRefusedQuotingTheKey(wire: String) {
    let error = #expect(throws: WireError.self) { _ = try DataPlaneKey(wire: wire) }
    #expect(error?.rpcError.code == .invalidArgument)
    #expect(error?.message.contains("key '\(wire)'") == true, "\(String(describing: error))")
    #expect(error?.message.contains("job/step/micro-batch/activation|gradient|inference") == true)
  }

  @Test(arguments: ["job/+1/0/activation", "job/01/0/activation", "job/1/-0/gradient", "job/1/00/inference"])
  func aKeyInAnotherSpellingIsRefused(wire: String) {
    let error = #expect(throws: WireError.self) { _ = try DataPlaneKey(wire: wire) }
    #expect(error?.rpcError.code == .invalidArgument)
    #expect(error?.message.contains("not in canonical form") == true, "\(String(describing: error))")
  }

  @Test func aHugeKeyIsQuotedCut() {
    let wire = String(repeating: "k", count: 10_000)
    let error = #expect(throws: WireError.self) { _ = try DataPlaneKey(wire: wire) }
    #expect(error?.rpcError.code == .invalidArgument)
    let message = error?.message ?? ""
    #expect(message.count < 400, "\(message.count) characters")
    #expect(message.contains(String(repeating: "k", count: String.maxEchoedCharacters)))
    #expect(!message.contains(String(repeating: "k", count: String.maxEchoedCharacters + 1)))
    #expect(message.contains("10000 bytes in all"))
  }
}
