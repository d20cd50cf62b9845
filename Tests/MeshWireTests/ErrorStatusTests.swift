import MeshData
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

/// A handler that throws a domain error answers with the status
/// `ErrorStatus.swift` maps it to, on either transport.
@Suite struct ErrorStatusTests {
  /// An error no module maps.
  struct Unmapped: Error {}

  /// Throws the domain error a GetJob's `job` names.
  struct Thrower: RPCService {
    var serviceName: String { "pipemesh.v1.Coordinator" }

    func register(with router: inout RPCRouter) {
      router.unary(CoordinatorMethods.getJob) { request, _ in
        switch request.job {
        case "wire": throw WireError("micro_batches is 0; give 1 to 4096")
        case "model": throw ModelSpecError("layer 2 has no units")
        case "missing": throw DatasetError(.fileNotFound, "/data/x.csv does not exist")
        case "outside": throw DatasetError(.outsideDataDirectory, "/etc/passwd is outside the data directory")
        case "malformed": throw DatasetError(.malformedFile, "x.csv: row 3 has 2 columns, not 5")
        default: throw Unmapped()
        }
      }
    }
  }

  @Test(arguments: TestTransport.allCases)
  func domainErrorsAnswerWithTheirStatus(transport: TestTransport) async throws {
    let cases: [(job: String, code: RPCError.Code, message: String)] = [
      ("wire", .invalidArgument, "micro_batches is 0; give 1 to 4096"),
      ("model", .invalidArgument, "invalid model: layer 2 has no units"),
      ("missing", .notFound, "/data/x.csv does not exist"),
      ("outside", .permissionDenied, "/etc/passwd is outside the data directory"),
      ("malformed", .invalidArgument, "x.csv: row 3 has 2 columns, not 5"),
      // Anything else is INTERNAL, naming the error.
      ("other", .internal, "the server failed: Unmapped()"),
    ]
    try await withChannel(transport, [Thrower()]) { channel in
      for (job, code, message) in cases {
        let error = await #expect(throws: RPCError.self, "\(job)") {
          _ = try await channel.call(CoordinatorMethods.getJob, .with { $0.job = job })
        }
        #expect(error?.code == code, "\(job): \(String(describing: error))")
        #expect(error?.message == message, "\(job): \(String(describing: error))")
      }
    }
  }

  @Test func aWireErrorKeepsItsPlaceInTheBiggerMessage() {
    let error = WireError("total_steps must be from 1 to 2^31-1").within("optimizer").within("TrainRequest")
    #expect(error.message == "TrainRequest: optimizer: total_steps must be from 1 to 2^31-1")
    #expect(error.rpcError.code == .invalidArgument)
    // In a peer's answer the same error is the bytes' loss, not the caller's mistake.
    let answered = WireError("pulled w has an invalid shape [-1]").answered(by: "a ps task")
    #expect(answered.code == .dataLoss)
    #expect(answered.message == "a ps task answered: pulled w has an invalid shape [-1]")
  }

  @Test func recordsNameADomainErrorByItsStatus() {
    #expect(RPCError.describing(DatasetError(.fileNotFound, "x.csv: no such file")) == "NOT_FOUND: x.csv: no such file")
    #expect(RPCError.describing(RPCError(.aborted, "stopped")) == "ABORTED: stopped")
    #expect(RPCError.describing(Unmapped()) == "Unmapped()")
  }
}
