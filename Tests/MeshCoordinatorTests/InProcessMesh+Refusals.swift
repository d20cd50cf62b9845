import MeshInProcess
import MeshProto
import MeshRPC
import MeshWire
import Testing

extension InProcessMesh {
  /// Sends `request` to the coordinator's Train and expects it refused
  /// before anything runs: INVALID_ARGUMENT with `text` in its message.
  func expectTrainRefused(
    _ request: Pipemesh_V1_TrainRequest, containing text: String, sourceLocation: SourceLocation = #_sourceLocation
  ) async {
    let channel = coordinatorChannel()
    let refused = await #expect(throws: RPCError.self, sourceLocation: sourceLocation) {
      for try await _ in channel.stream(CoordinatorMethods.train, request) {}
    }
    #expect(
      refused?.code == .invalidArgument && refused?.message.contains(text) == true, "\(String(describing: refused))",
      sourceLocation: sourceLocation)
  }
}
