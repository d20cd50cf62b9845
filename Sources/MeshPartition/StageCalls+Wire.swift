import MeshProto
import MeshTensor
import MeshWire

// The Partition service's messages read into the stage's calls, and its
// answers back into messages: the one place the two meet. A field that
// decodes to nothing valid throws a `WireError` naming it.

extension MicroBatch {
  init(_ key: Pipemesh_V1_MicroBatchKey) {
    self.init(step: key.step, index: key.microBatch)
  }
}

extension TensorSource {
  /// The tensor a request's `field` gives.
  init(wire: Pipemesh_V1_TensorSource, field: String) throws {
    switch wire.source {
    case .inline(let tensor): self = .value(try Tensor(wire: tensor, what: "\(field).inline"))
    case .reference(let reference): self = .reference(try TensorReference(wire: reference, field: "\(field).reference"))
    case nil: throw WireError("\(field) is missing: give a tensor inline or a reference to one")
    }
  }
}

extension TensorReference {
  /// The reference a request's `field` gives: its key must be a data-plane
  /// key as `DataPlaneKey.wire` writes it.
  init(wire: Pipemesh_V1_TensorReference, field: String) throws {
    do { key = try DataPlaneKey(wire: wire.key) } catch let error as WireError { throw error.within("\(field).key") }
    endpoint = wire.endpoint
  }

  /// The reference as an answer carries it.
  var wire: Pipemesh_V1_TensorReference {
    .with {
      $0.endpoint = endpoint
      $0.key = key.wire
    }
  }
}

extension ForwardCall {
  /// A training Forward; `lastStage`: whether the stage it goes to is its
  /// model's last, the only one that reads targets.
  init(_ request: Pipemesh_V1_ForwardRequest, lastStage: Bool) throws {
    self.init(
      microBatch: MicroBatch(request.key), input: try TensorSource(wire: request.input, field: "input"),
      targets: lastStage ? try Tensor(targets: request.targets, what: "targets") : nil,
      batchSize: Int(request.batchSize), schedulePosition: request.schedulePosition,
      weightsAfterStep: request.hasWeightsAfterStep ? request.weightsAfterStep : nil)
  }
}

extension BackwardCall {
  /// A Backward; `lastStage`: whether the stage it goes to is its model's
  /// last, which takes no output gradient.
  init(_ request: Pipemesh_V1_BackwardRequest, lastStage: Bool) throws {
    self.init(
      microBatch: MicroBatch(request.key),
      outputGradient: lastStage ? nil : try TensorSource(wire: request.outputGradient, field: "output_gradient"),
      schedulePosition: request.schedulePosition, weightsLater: request.weightsLater)
  }
}

extension Pipemesh_V1_CallTiming {
  /// The stage's times; the service adds when the call came and went.
  init(_ timing: StageTiming) {
    self.init()
    inputRequestedUnixNanos = timing.inputRequested
    inputReceivedUnixNanos = timing.inputReceived
    computeStartedUnixNanos = timing.computeStarted
    computeEndedUnixNanos = timing.computeEnded
    outputOfferedUnixNanos = timing.outputOffered
  }
}

extension Pipemesh_V1_ForwardResponse {
  /// A Forward's or an Infer's answer.
  init(_ result: ForwardResult) {
    self.init()
    switch result.output {
    case .offered(let reference): output = reference.wire
    case .value(let tensor): outputValue = Pipemesh_V1_Tensor(sharing: tensor)
    case nil: break
    }
    if let loss = result.loss { self.loss = loss }
    correct = Int64(result.correct)
    timing = Pipemesh_V1_CallTiming(result.timing)
  }
}

extension Pipemesh_V1_BackwardResponse {
  /// A Backward's answer.
  init(_ result: BackwardResult) {
    self.init()
    if let inputGradient = result.inputGradient { self.inputGradient = inputGradient.wire }
    timing = Pipemesh_V1_CallTiming(result.timing)
  }
}

extension Pipemesh_V1_BackwardWeightsResponse {
  /// A BackwardWeights's answer: when it computed.
  init(_ timing: StageTiming) {
    self.init()
    self.timing = Pipemesh_V1_CallTiming(timing)
  }
}

extension Pipemesh_V1_CommitResponse {
  /// A Commit's answer.
  init(_ result: CommitResult) {
    self.init()
    version = result.version
    penalty = result.penalty
    memory = .with {
      $0.jobBytes = Int64(result.jobBytes)
      $0.residentBytes = Int64(result.residentBytes)
      $0.peakResidentBytes = Int64(result.peakResidentBytes)
    }
  }
}
