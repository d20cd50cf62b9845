import Foundation
import MeshProto
import MeshRPC
import MeshWire
import SwiftProtobuf
import SwiftProtobufPluginLibrary
import Testing

/// The typed method tables agree with the services declared in protos/.
@Suite struct ServiceMethodsTests {
  @Test func tablesMatchTheDescriptorSet() throws {
    let set = try Google_Protobuf_FileDescriptorSet(serializedBytes: MeshDescriptors.fileDescriptorSet)
    var declared: Set<RPCMethodDescription> = []
    for file in DescriptorSet(proto: set).files {
      for service in file.services {
        for method in service.methods {
          declared.insert(
            RPCMethodDescription(
              path: "/\(service.fullName)/\(method.name)", request: method.inputType.fullName,
              response: method.outputType.fullName, serverStreaming: method.serverStreaming,
              clientStreaming: method.clientStreaming))
        }
      }
    }
    let tabled = Set(allServiceMethods)
    #expect(declared.count > 20)
    #expect(
      declared.subtracting(tabled).isEmpty,
      "in protos/ but not in ServiceMethods.swift: \(declared.subtracting(tabled))")
    #expect(
      tabled.subtracting(declared).isEmpty,
      "in ServiceMethods.swift but not in protos/: \(tabled.subtracting(declared))")
  }
}
