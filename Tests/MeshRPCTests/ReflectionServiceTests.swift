import Foundation
import MeshProto
import MeshRPC
import SwiftProtobuf
import Testing

/// Server reflection's answers, request by request (the interop test asks a
/// live server with Python's reflection client).
@Suite struct ReflectionServiceTests {
  let reflection: ReflectionService

  init() throws {
    reflection = try ReflectionService(
      descriptorSet: MeshDescriptors.fileDescriptorSet, services: ["pipemesh.v1.Coordinator", HealthMethods.service])
  }

  /// The names of the files an answer carries, in order.
  func fileNames(_ response: ReflectionMethods.Response) throws -> [String] {
    try response.fileDescriptorResponse.fileDescriptorProto.map {
      try Google_Protobuf_FileDescriptorProto(serializedBytes: $0).name
    }
  }

  func symbol(_ name: String) -> ReflectionMethods.Request {
    .with {
      $0.host = "mesh.example"
      $0.fileContainingSymbol = name
    }
  }

  @Test func listsItsServicesAndItself() {
    let response = reflection.answer(.with { $0.listServices = "" })
    #expect(
      response.listServicesResponse.service.map(\.name) == [
        HealthMethods.service, "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
        "pipemesh.v1.Coordinator",
      ])
  }

  @Test(arguments: [
    ("pipemesh.v1.Coordinator", "pipemesh/v1/coordinator.proto"),
    ("pipemesh.v1.Coordinator.Train", "pipemesh/v1/coordinator.proto"),
    ("pipemesh.v1.Tensor", "pipemesh/v1/tensor.proto"),
    ("pipemesh.v1.Tensor.shape", "pipemesh/v1/tensor.proto"),
    // An enum value is scoped beside its enum, in the enclosing message.
    ("grpc.health.v1.HealthCheckResponse.ServingStatus", "grpc/health/v1/health.proto"),
    ("grpc.health.v1.HealthCheckResponse.SERVING", "grpc/health/v1/health.proto"),
    ("grpc.reflection.v1.ServerReflectionRequest.message_request", "grpc/reflection/v1/reflection.proto"),
  ])
  func findsTheFileDeclaringASymbol(symbol name: String, file: String) throws {
    let response = reflection.answer(symbol(name))
    #expect(try fileNames(response).first == file)
    #expect(response.originalRequest == symbol(name))
    #expect(response.validHost == "mesh.example")
  }

  @Test func sendsTheFileFirstThenEachImportOnce() throws {
    let names = try fileNames(reflection.answer(.with { $0.fileByFilename = "pipemesh/v1/coordinator.proto" }))
    #expect(names.first == "pipemesh/v1/coordinator.proto")
    #expect(Set(names).count == names.count)
    // Its imports, and what they import (parameter_server.proto imports optimizer.proto and tensor.proto).
    #expect(
      Set(names.dropFirst()) == [
        "pipemesh/v1/model.proto", "pipemesh/v1/optimizer.proto", "pipemesh/v1/parameter_server.proto",
        "pipemesh/v1/tensor.proto",
      ], "\(names)")
  }

  @Test func findsAPackagesFile() throws {
    let names = try fileNames(reflection.answer(symbol("grpc.health.v1")))
    #expect(names == ["grpc/health/v1/health.proto"])
  }

  @Test(arguments: [
    ReflectionMethods.Request.with { $0.fileContainingSymbol = "pipemesh.v1.Nope" },
    .with { $0.fileByFilename = "pipemesh/v1/nope.proto" },
    .with { $0.allExtensionNumbersOfType = "pipemesh.v1.Nope" },
    .with {
      $0.fileContainingExtension = .with {
        $0.containingType = "pipemesh.v1.Tensor"
        $0.extensionNumber = 100
      }
    },
  ])
  func whatIsNotThereIsNotFound(request: ReflectionMethods.Request) {
    let response = reflection.answer(request)
    #expect(response.errorResponse.errorCode == Int32(RPCError.Code.notFound.rawValue))
    #expect(!response.errorResponse.errorMessage.isEmpty)
  }

  @Test func anEmptyRequestIsInvalid() {
    let response = reflection.answer(.init())
    #expect(response.errorResponse.errorCode == Int32(RPCError.Code.invalidArgument.rawValue))
  }

  @Test func findsExtensions() throws {
    let file = Google_Protobuf_FileDescriptorProto.with {
      $0.name = "t/extended.proto"
      $0.package = "t"
      $0.syntax = "proto2"
      $0.messageType = [
        .with {
          $0.name = "Base"
          $0.extensionRange = [
            .with {
              $0.start = 100
              $0.end = 200
            }
          ]
        }
      ]
      $0.extension = [
        .with {
          $0.name = "tag"
          $0.number = 150
          $0.label = .optional
          $0.type = .string
          $0.extendee = ".t.Base"
        }
      ]
    }
    let set = Google_Protobuf_FileDescriptorSet.with { $0.file = [file] }
    let reflection = try ReflectionService(descriptorSet: try set.serializedData(), services: [])
    let numbers = reflection.answer(.with { $0.allExtensionNumbersOfType = "t.Base" })
    #expect(numbers.allExtensionNumbersResponse.extensionNumber == [150])
    #expect(numbers.allExtensionNumbersResponse.baseTypeName == "t.Base")
    let found = reflection.answer(
      .with {
        $0.fileContainingExtension = .with {
          $0.containingType = "t.Base"
          $0.extensionNumber = 150
        }
      })
    #expect(try fileNames(found) == ["t/extended.proto"])
    #expect(try fileNames(reflection.answer(symbol("t.tag"))) == ["t/extended.proto"])
  }

  @Test func bytesThatAreNoDescriptorSetAreRefused() {
    let error = #expect(throws: RPCError.self) {
      _ = try ReflectionService(descriptorSet: Data([0xFF, 0xFF, 0xFF]), services: [])
    }
    #expect(error?.code == .invalidArgument)
  }
}
