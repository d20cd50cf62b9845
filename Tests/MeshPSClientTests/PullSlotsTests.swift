import MeshPSClient
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import Synchronization
import Testing

/// A ps task that answers every Pull with what `answer` makes of the names asked.
private final class ScriptedParameterServer: RPCService, Sendable {
  let answer: @Sendable ([String]) -> [Pipemesh_V1_VariableValue]
  init(_ answer: @escaping @Sendable ([String]) -> [Pipemesh_V1_VariableValue]) { self.answer = answer }
  var serviceName: String { ParameterServerMethods.service }

  func register(with router: inout RPCRouter) {
    router.unary(ParameterServerMethods.pull) { [answer] request, _ in
      .with { $0.variables = answer(request.variables.map(\.name)) }
    }
  }
}

/// What a stage that resumes a run takes over from a pull with slots: a
/// ps's answer that does not add up is refused or leaves the slots out,
/// never half taken.
@Suite struct PullSlotsTests {
  static func value(_ name: String, shape: [Int], version: Int64 = 3, slots: [String: [Int]])
    -> Pipemesh_V1_VariableValue
  {
    .with {
      $0.name = name
      $0.version = version
      $0.value = Pipemesh_V1_Tensor(sharing: .filled(shape, with: 1))
      $0.slots = slots.sorted(by: { $0.key < $1.key }).map { slot, slotShape in
        .with {
          $0.name = slot
          $0.tensor = Pipemesh_V1_Tensor(sharing: .filled(slotShape, with: 2))
        }
      }
    }
  }

  static func client(_ answer: @escaping @Sendable ([String]) -> [Pipemesh_V1_VariableValue]) throws
    -> ParameterServerClient
  {
    let network = InProcessNetwork()
    try network.serve([ScriptedParameterServer(answer)], at: "ps:1")
    // Row blocks of 64 bytes: a [4, 16] variable is four parts of one row.
    let client = try ParameterServerClient(endpoints: ["ps:1"], dialer: network, blockBytes: 64)
    client.expect(variables: [("w", [4, 16]), ("b", [16])])
    return client
  }

  @Test func aSlotOfAnotherShapeOrAnsweredTwiceIsDataLoss() async throws {
    let misshapen = try Self.client { _ in [Self.value("b", shape: [16], slots: ["m": [15]])] }
    let error = await #expect(throws: RPCError.self) {
      _ = try await misshapen.pull(job: "j", names: ["b"], withSlots: true)
    }
    #expect(error?.code == .dataLoss && error?.message.contains("slot m of b") == true, "\(String(describing: error))")

    let twice = try Self.client { _ in
      [Self.value("b", shape: [16], slots: ["m": [16]]), Self.value("b", shape: [16], slots: ["m": [16]])]
    }
    let repeated = await #expect(throws: RPCError.self) {
      _ = try await twice.pull(job: "j", names: ["b"], withSlots: true)
    }
    #expect(
      repeated?.code == .dataLoss && repeated?.message.contains("twice") == true, "\(String(describing: repeated))")

    // One slot twice in one answer, of a whole variable and of a part alike.
    for (name, shape) in [("b", [16]), ("w#rows:0-1", [1, 16])] {
      let slotTwice = try Self.client { _ in
        var value = Self.value(name, shape: shape, slots: ["m": shape])
        value.slots += value.slots
        return [value]
      }
      let doubled = await #expect(throws: RPCError.self) {
        _ = try await slotTwice.pull(job: "j", names: [name.hasPrefix("w") ? "w" : "b"], withSlots: true)
      }
      #expect(
        doubled?.code == .dataLoss && doubled?.message.contains("a slot of \(name) twice") == true,
        "\(String(describing: doubled))")
    }
  }

  @Test func partsAnsweredWithDifferentSlotsLeaveTheSlotsOut() async throws {
    let uneven = try Self.client { names in
      names.enumerated().map { index, name in
        Self.value(name, shape: [1, 16], slots: index == 0 ? ["m": [1, 16]] : ["m": [1, 16], "v": [1, 16]])
      }
    }
    let pulled = try await uneven.pull(job: "j", names: ["w"], withSlots: true)
    #expect(pulled["w"]?.value == .filled([4, 16], with: 1))
    #expect(pulled["w"]?.version == 3)
    #expect(pulled["w"]?.slots == nil)

    let even = try Self.client { names in
      names.map { Self.value($0, shape: [1, 16], slots: ["m": [1, 16], "v": [1, 16]]) }
    }
    let whole = try await even.pull(job: "j", names: ["w"], withSlots: true)
    #expect(whole["w"]?.slots == ["m": .filled([4, 16], with: 2), "v": .filled([4, 16], with: 2)])
  }
}
