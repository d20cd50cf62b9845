import MeshRPC
import MeshWire
import Testing

/// The name rules every service keeps: job names never form a path, variable names never hold the slot separator,
/// and both are refused with INVALID_ARGUMENT naming the rule.
@Suite struct MeshNamesTests {
  @Test(arguments: ["a", "job-1.run_2", "A.b-C_9", "...", String(repeating: "j", count: MeshNames.maxJobLength)])
  func jobNamesWithinTheRulesAreAccepted(job: String) {
    #expect(throws: Never.self) { try MeshNames.checkJob(job) }
  }

  @Test(arguments: [
    "", ".", "..", "a/b", "a b", "é", "job\n", "a:b", "a@b",
    String(repeating: "j", count: MeshNames.maxJobLength + 1),
  ])
  func jobNamesOutsideTheRulesAreRefused(job: String) {
    let error = #expect(throws: WireError.self) { try MeshNames.checkJob(job) }
    #expect(error?.rpcError.code == .invalidArgument)
    #expect(error?.message.contains("job name '\(job.echoed)'") == true, "\(String(describing: error))")
    #expect(error?.message.contains("1-\(MeshNames.maxJobLength) characters") == true)
  }

  @Test func aShorterLimitIsKeptAndNamed() {
    #expect(throws: Never.self) { try MeshNames.checkJob(String(repeating: "j", count: 119), maxLength: 119) }
    let error = #expect(throws: WireError.self) {
      try MeshNames.checkJob(String(repeating: "j", count: 120), maxLength: 119)
    }
    #expect(error?.rpcError.code == .invalidArgument)
    #expect(error?.message.contains("1-119 characters") == true, "\(String(describing: error))")
  }

  @Test(arguments: [
    "w", "dense0/kernel", "emb#rows:0-10", "a.b_c-d/e#f:g", String(repeating: "v", count: MeshNames.maxVariableLength),
  ])
  func variableNamesWithinTheRulesAreAccepted(name: String) {
    #expect(throws: Never.self) { try MeshNames.checkVariable(name) }
  }

  @Test(arguments: [
    "x@m", "", "a b", "é", "dense0\\kernel", String(repeating: "v", count: MeshNames.maxVariableLength + 1),
  ])
  func variableNamesOutsideTheRulesAreRefused(name: String) {
    let error = #expect(throws: WireError.self) { try MeshNames.checkVariable(name) }
    #expect(error?.rpcError.code == .invalidArgument)
    #expect(error?.message.contains("variable name '\(name.echoed)'") == true, "\(String(describing: error))")
    #expect(error?.message.contains("1-\(MeshNames.maxVariableLength) characters") == true)
  }
}
