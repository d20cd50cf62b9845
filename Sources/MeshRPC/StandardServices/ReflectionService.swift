import Foundation
import SwiftProtobuf

/// `grpc.reflection.v1.ServerReflection`, and the same method under
/// `grpc.reflection.v1alpha` (same messages), which older tools call.
public enum ReflectionMethods {
  public static let service = "grpc.reflection.v1.ServerReflection"
  public static let alphaService = "grpc.reflection.v1alpha.ServerReflection"
  public typealias Request = Grpc_Reflection_V1_ServerReflectionRequest
  public typealias Response = Grpc_Reflection_V1_ServerReflectionResponse
  public static let info = BidiStreamingMethod<Request, Response>(service: service, name: "ServerReflectionInfo")
  public static let alphaInfo = BidiStreamingMethod<Request, Response>(
    service: alphaService, name: "ServerReflectionInfo")
}

/// Server reflection: lists a server's services and describes them from a
/// `google.protobuf.FileDescriptorSet`, so that grpcurl and grpc_cli can
/// call them without the .proto files. Each request of a stream gets one
/// response, in order.
public struct ReflectionService: RPCService {
  private let index: DescriptorIndex
  private let services: [String]

  /// Describes the files of `descriptorSet` (a serialized
  /// FileDescriptorSet) and lists `services`, plus reflection itself.
  /// Throws INVALID_ARGUMENT when the bytes are not a descriptor set.
  public init(descriptorSet: Data, services: [String]) throws {
    let set: Google_Protobuf_FileDescriptorSet
    do {
      set = try Google_Protobuf_FileDescriptorSet(serializedBytes: descriptorSet)
    } catch {
      throw RPCError(.invalidArgument, "the descriptor set for reflection is not a FileDescriptorSet: \(error)")
    }
    index = DescriptorIndex(set)
    self.services = Array(Set(services + [ReflectionMethods.service, ReflectionMethods.alphaService])).sorted()
  }

  public var serviceName: String { ReflectionMethods.service }

  public func register(with router: inout RPCRouter) {
    for method in [ReflectionMethods.info, ReflectionMethods.alphaInfo] {
      router.bidiStreaming(method) { requests, responses, _ in
        for try await request in requests { try await responses.write(answer(request)) }
      }
    }
  }

  /// The response to one request.
  public func answer(_ request: ReflectionMethods.Request) -> ReflectionMethods.Response {
    var response = ReflectionMethods.Response()
    response.validHost = request.host
    response.originalRequest = request
    func files(_ name: String?, missing: String) {
      if let name {
        response.fileDescriptorResponse.fileDescriptorProto = index.fileWithImports(name)
      } else {
        response.errorResponse = .with {
          $0.errorCode = Int32(RPCError.Code.notFound.rawValue)
          $0.errorMessage = missing
        }
      }
    }
    switch request.messageRequest {
    case .listServices:
      response.listServicesResponse.service = services.map { name in .with { $0.name = name } }
    case .fileByFilename(let name):
      files(index.files[name] == nil ? nil : name, missing: "no file named \(Self.echoed(name))")
    case .fileContainingSymbol(let symbol):
      files(index.fileOfSymbol[symbol], missing: "no symbol named \(Self.echoed(symbol))")
    case .fileContainingExtension(let request):
      files(
        index.extensions[request.containingType]?[request.extensionNumber],
        missing: "no extension \(request.extensionNumber) of \(Self.echoed(request.containingType))")
    case .allExtensionNumbersOfType(let type):
      if index.messages.contains(type) {
        response.allExtensionNumbersResponse = .with {
          $0.baseTypeName = type
          $0.extensionNumber = (index.extensions[type]?.keys).map { $0.sorted() } ?? []
        }
      } else {
        files(nil, missing: "no message named \(Self.echoed(type))")
      }
    case nil:
      response.errorResponse = .with {
        $0.errorCode = Int32(RPCError.Code.invalidArgument.rawValue)
        $0.errorMessage = "the request asks for nothing: set one of its message_request fields"
      }
    }
    return response
  }

  /// A name from a request, cut short for an error message (the request
  /// itself goes back whole, as the protocol has it).
  private static func echoed(_ name: String) -> String {
    name.count <= 200 ? name : name.prefix(200) + "…"
  }
}

/// Where each symbol of a descriptor set is declared.
struct DescriptorIndex: Sendable {
  /// Each file by name.
  private(set) var files: [String: Google_Protobuf_FileDescriptorProto] = [:]
  /// Each file serialized, as answers carry it.
  private var serialized: [String: Data] = [:]
  /// The file declaring each fully qualified name (no leading dot): packages
  /// (their first file), messages, fields, oneofs, enums, enum values,
  /// services, methods, extensions.
  private(set) var fileOfSymbol: [String: String] = [:]
  /// Fully qualified message names.
  private(set) var messages: Set<String> = []
  /// The file declaring each extension, by extended message and number.
  private(set) var extensions: [String: [Int32: String]] = [:]

  init(_ set: Google_Protobuf_FileDescriptorSet) {
    for file in set.file {
      files[file.name] = file
      serialized[file.name] = try? file.serializedData()
      if !file.package.isEmpty, fileOfSymbol[file.package] == nil { fileOfSymbol[file.package] = file.name }
      let scope = file.package.isEmpty ? "" : file.package + "."
      for message in file.messageType { add(message, scope: scope, file: file.name) }
      for enumeration in file.enumType { add(enumeration, scope: scope, file: file.name) }
      for field in file.extension { addExtension(field, scope: scope, file: file.name) }
      for service in file.service {
        let name = scope + service.name
        fileOfSymbol[name] = file.name
        for method in service.method { fileOfSymbol[name + "." + method.name] = file.name }
      }
    }
  }

  /// The file's serialized descriptor, then those of everything it imports
  /// (directly or not), each once: the file asked for comes first, as the
  /// reference servers send it and some clients read it.
  func fileWithImports(_ name: String) -> [Data] {
    var seen: Set<String> = []
    var out: [Data] = []
    func visit(_ name: String) {
      guard let file = files[name], seen.insert(name).inserted else { return }
      if let bytes = serialized[name] { out.append(bytes) }
      for dependency in file.dependency { visit(dependency) }
    }
    visit(name)
    return out
  }

  private mutating func add(_ message: Google_Protobuf_DescriptorProto, scope: String, file: String) {
    let name = scope + message.name
    fileOfSymbol[name] = file
    messages.insert(name)
    for field in message.field { fileOfSymbol[name + "." + field.name] = file }
    for oneof in message.oneofDecl { fileOfSymbol[name + "." + oneof.name] = file }
    for nested in message.nestedType { add(nested, scope: name + ".", file: file) }
    for enumeration in message.enumType { add(enumeration, scope: name + ".", file: file) }
    for field in message.extension { addExtension(field, scope: name + ".", file: file) }
  }

  /// An enum and its values, which protobuf scopes beside the enum, not in it.
  private mutating func add(_ enumeration: Google_Protobuf_EnumDescriptorProto, scope: String, file: String) {
    fileOfSymbol[scope + enumeration.name] = file
    for value in enumeration.value { fileOfSymbol[scope + value.name] = file }
  }

  private mutating func addExtension(_ field: Google_Protobuf_FieldDescriptorProto, scope: String, file: String) {
    fileOfSymbol[scope + field.name] = file
    let extended = field.extendee.hasPrefix(".") ? String(field.extendee.dropFirst()) : field.extendee
    extensions[extended, default: [:]][field.number] = file
  }
}
