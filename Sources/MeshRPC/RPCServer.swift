import CGRPCShim
import Foundation

/// A gRPC server: listens, routes calls to its services' handlers, answers
/// `grpc.health.v1.Health` (`HealthService`), and server reflection
/// (`ReflectionService`) from the descriptor set it is given (a
/// `google.protobuf.FileDescriptorSet`; none: no reflection).
///
/// ```swift
/// let server = try RPCServer(services: [myService])
/// print(server.port)
/// await server.shutdown(gracePeriod: .seconds(5))
/// ```
public final class RPCServer: Sendable {
  /// The bound port (the chosen one when the address asked for port 0).
  public let port: Int
  /// The host part of the address the server listens on.
  public let host: String
  /// The full names of the methods it serves: its services', health's and reflection's.
  public let methodPaths: [String]
  private let handle: ServerHandle
  private let health: HealthService

  /// Starts serving `services` on `address` (`127.0.0.1:0` picks a free port).
  /// Every service is reported SERVING to health checks once this returns.
  /// `observer` sees every finished call.
  public init(
    address: String = "127.0.0.1:0", transport: TransportConfiguration = .init(),
    services: [any RPCService], reflection: Data? = nil,
    observer: (any RPCObserver)? = nil
  ) throws {
    let names = services.map(\.serviceName)
    health = HealthService(serving: names)
    var standard: [any RPCService] = [health]
    if let reflection, !reflection.isEmpty {
      standard.append(try ReflectionService(descriptorSet: reflection, services: names + [HealthMethods.service]))
    }
    var router = RPCRouter()
    for service in services + standard { service.register(with: &router) }
    methodPaths = router.methods.map(\.path)
    if let twice = Dictionary(grouping: methodPaths, by: { $0 }).first(where: { $0.value.count > 1 })?.key {
      throw RPCError(.invalidArgument, "two handlers for \(twice): each method is served once per server")
    }

    var error = pm_error()
    let pointer: OpaquePointer? = transport.withCConfiguration { pm_server_create(address, $0, &error) }
    guard let pointer else { throw RPCError(error) }
    let served = router.methods.map { ServedMethod($0, observer: observer) }
    handle = ServerHandle(pointer, methods: served)
    for method in served {
      pm_server_register(
        pointer, method.method.path, method.method.kind, ServedMethod.entryPoint,
        Unmanaged.passUnretained(method).toOpaque())
    }
    let port = pm_server_start(pointer, &error)
    guard port > 0 else { throw RPCError(error) }
    self.port = Int(port)
    host = String(address[..<(address.lastIndex(of: ":") ?? address.endIndex)])
  }

  /// `host:port` as clients dial it.
  public var endpoint: String { "\(host):\(port)" }

  /// Sets what health checks report for `service` ("" is the whole server).
  public func setServing(_ serving: Bool, service: String = "") {
    health.setServing(serving, service: service)
  }

  /// Stops taking calls, gives running calls `gracePeriod` to finish, then
  /// cancels the rest. Health checks report NOT_SERVING from the start.
  public func shutdown(gracePeriod: Duration = .seconds(5)) async {
    health.shutdown()
    let handle = self.handle
    let milliseconds = gracePeriod.milliseconds
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      // Shutdown blocks until calls drain: keep it off the task pool.
      Thread.detachNewThread {
        pm_server_shutdown(handle.pointer, milliseconds)
        continuation.resume()
      }
    }
  }
}

/// Owns the C server and the handlers it calls, which must outlive it.
private final class ServerHandle: @unchecked Sendable {
  let pointer: OpaquePointer
  private let methods: [ServedMethod]

  init(_ pointer: OpaquePointer, methods: [ServedMethod]) {
    self.pointer = pointer
    self.methods = methods
  }

  deinit { pm_server_destroy(pointer) }
}

extension RPCError {
  /// An error the shim reported through its out-parameter.
  init(_ error: pm_error) {
    var error = error
    let message = withUnsafeBytes(of: &error.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    self.init(Code(rawValue: Int(error.code)), message)
  }
}
