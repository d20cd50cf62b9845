import Foundation
import MeshProto
import MeshTestSupport
import Testing

/// The committed generated code matches protos/.
@Suite struct GeneratedCodeTests {
  @Test func embeddedDescriptorSetMatchesProtos() throws {
    let current = try run("/bin/bash", [Repository.path("scripts/descriptor-set"), "--base64"])
    let embedded = MeshDescriptors.fileDescriptorSet.base64EncodedString()
    #expect(
      current == embedded,
      "protos/ changed since the Swift code was generated: run scripts/generate-protos and commit the result")
  }
}
