import Foundation
import MeshProto
import MeshTestSupport
import Testing

/// The committed generated code matches protos/.
@Suite struct GeneratedCodeTests {
  @Test func embeddedDescriptorSetMatchesProtos() async throws {
    let current = try await run("/bin/bash", [Repository.path("scripts/descriptor-set"), "--base64"])
    let embedded = MeshDescriptors.fileDescriptorSet.base64EncodedString()
    #expect(
      current == embedded,
      "protos/ changed since the Swift code was generated: run scripts/generate-protos and commit the result")
  }
}

/// docs/api.md is what scripts/api-reference makes of protos/.
@Suite struct APIReferenceTests {
  @Test func apiReferenceMatchesProtos() async throws {
    let python = try PythonInterop.findPython()
    let generated = try await run(python, [Repository.path("scripts/api-reference")])
    let committed = try String(contentsOfFile: Repository.path("docs/api.md"), encoding: .utf8)
    #expect(generated == committed, "docs/api.md is stale: run scripts/api-reference > docs/api.md")
    #expect(committed.contains("| `Train` | `pipemesh.v1.TrainRequest` | stream `pipemesh.v1.TrainProgress` |"))
  }
}
