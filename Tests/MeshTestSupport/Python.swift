import Foundation

/// Python with grpcio for interop tests: stubs are generated from protos/ at
/// test time into a temporary directory. Needs the pip packages grpcio,
/// grpcio-tools, grpcio-health-checking and grpcio-reflection.
public struct PythonInterop: Sendable {
  public let python: String
  public let stubs: TemporaryDirectory

  /// Finds python3 and generates the stubs; throws with a clear message when
  /// grpcio or grpcio-tools is missing (the README's test command installs them).
  public init() async throws {
    python = try Self.findPython()
    stubs = try TemporaryDirectory(prefix: "pipemesh-stubs")
    let protos = Repository.path("protos")
    // Only pipemesh/: grpcio ships grpc.health.v1 itself (grpcio-health-checking),
    // and a generated `grpc` package would shadow grpcio's.
    let files = try FileManager.default.subpathsOfDirectory(atPath: protos)
      .filter { $0.hasPrefix("pipemesh/") && $0.hasSuffix(".proto") }.sorted()
    try await run(
      python,
      ["-m", "grpc_tools.protoc", "-I", protos, "--python_out=\(stubs.path)", "--grpc_python_out=\(stubs.path)"] + files
    )
  }

  /// The python3 on PATH.
  public static func findPython() throws -> String {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin"
    guard
      let python = path.split(separator: ":").map({ "\($0)/python3" }).first(where: {
        FileManager.default.isExecutableFile(atPath: $0)
      })
    else { throw ChildProcessError("python3 is not on PATH") }
    return python
  }

  /// Starts one of the scripts in Tests/interop with the stubs importable.
  public func start(script: String, arguments: [String], log: String) throws -> ChildProcess {
    try ChildProcess(
      python, ["-u", Repository.path("Tests/interop/\(script)")] + arguments, logPath: log,
      environment: ["PYTHONPATH": stubs.path])
  }
}
