import MeshPipeline
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire

/// The ring of one stage's data-parallel replicas under REDUCTION_RING: each
/// replica's commit turns the step's gradients into their mean over the
/// replicas, and every replica ends with the same bits.
///
/// The gradients, laid end to end in name order, are cut into as many parts
/// as there are replicas. In R − 1 rounds of reduce-scatter each replica
/// passes one part to the next and adds the part it fetches from the one
/// before, so that each part ends summed on one replica; in R − 1 rounds of
/// all-gather the summed parts travel on around the ring and are copied as
/// they come. A replica thus sends and receives 2 (R − 1) / R of its
/// gradients, however many replicas there are. The parts travel over the
/// data plane: a replica offers what it passes under the round's key, and
/// the next replica fetches it (waiting for it when it comes first).
struct RingReduction: Sendable {
  let job: String
  /// This replica's place on the ring.
  let rank: Int
  /// The data-plane endpoints of the stage's replicas, by replica.
  let endpoints: [String]

  /// INVALID_ARGUMENT unless `endpoints` has one endpoint per replica of
  /// `replicas`, this one's own at `rank`, each one of `peers`.
  init(job: String, rank: Int, endpoints: [String], replicas: Int32, own: String, peers: Set<String>) throws {
    guard endpoints.count == Int(replicas) else {
      throw StageError(
        .invalidCall,
        "ring names \(endpoints.count) endpoints for \(replicas) replicas: give one data-plane endpoint per replica")
    }
    guard endpoints.indices.contains(rank), endpoints[rank] == own else {
      throw StageError(
        .invalidCall,
        "ring does not name this partition's data plane (\(own.echoed)) as replica \(rank)'s: "
          + "give the stage's replicas' endpoints in replica order (a partition listed under another address than "
          + "its own: start it with --advertise)")
    }
    guard Set(endpoints).count == endpoints.count else {
      throw StageError(.invalidCall, "ring names an endpoint twice: give each replica's own data plane once")
    }
    if let stranger = endpoints.enumerated().first(where: { $0.offset != rank && !peers.contains($0.element) }) {
      throw StageError(
        .invalidCall,
        "ring endpoint \(stranger.offset) (\(stranger.element.echoed)) is not one of peers: "
          + "a stage fetches only from the job's partitions")
    }
    self.job = job
    self.rank = rank
    self.endpoints = endpoints
  }

  /// Replaces each of `gradients` (the same names and shapes on every
  /// replica) by its mean over the ring's replicas, in place: the same bits
  /// on each replica.
  func average(_ gradients: inout [String: Tensor], step: Int64, dataPlane: DataPlane, peers: Set<String>) async throws
  {
    let layout = Layout(gradients)
    let replicas = endpoints.count
    let parts = evenRanges(layout.count, parts: replicas)
    let before = endpoints[(rank + replicas - 1) % replicas]
    /// Passes part `(rank - shift) mod R` on as `round`, and returns the
    /// part the replica before passed in that round (its `(rank - shift - 1) mod R`).
    func exchange(round: Int, shift: Int) async throws -> (part: Range<Int>, values: Tensor) {
      let passed = parts[(rank - shift + 2 * replicas) % replicas]
      let key = DataPlaneKey(job: job, step: step, microBatch: Int32(round), kind: .reduction)
      dataPlane.offer(layout.gather(passed, from: gradients), key: key)
      let received = parts[(rank - shift - 1 + 2 * replicas) % replicas]
      // Sent again when the replica before could not be reached (a channel to a partition that
      // just restarted). A part goes with the fetch that takes it: a repeat after an answer lost on
      // the way waits for a part that will not come again, until the step's deadline ends the step,
      // as a replica lost mid-ring does.
      let values = try await Self.fetchRetry.run(server: "the replica before on the ring") {
        try await dataPlane.fetch(
          TensorReference(endpoint: before, key: key), wait: true,
          what: "round \(round) of the ring's reduction of step \(step)", peers: peers)
      }
      guard values.scalarCount == received.count else {
        throw StageError(
          .peerAnswerDamaged,
          "the replica before on the ring passed \(values.scalarCount) gradient values in round \(round), "
            + "not \(received.count): its stage holds other variables")
      }
      return (received, values)
    }
    for shift in 0..<(replicas - 1) {
      let (part, values) = try await exchange(round: shift, shift: shift)
      layout.scatter(values, into: part, of: &gradients) { sums, values, count in
        for index in 0..<count { sums[index] += values[index] }
      }
    }
    for shift in 0..<(replicas - 1) {
      // Each replica now holds part `rank + 1` summed: it passes that on first.
      let (part, values) = try await exchange(round: replicas - 1 + shift, shift: shift - 1)
      layout.scatter(values, into: part, of: &gradients) { sums, values, count in
        sums.update(from: values, count: count)
      }
    }
    for name in layout.names { gradients[name]!.scale(by: 1 / Float(replicas)) }
  }

  /// Gradients laid end to end in name order: where each begins.
  private struct Layout {
    let names: [String]
    let starts: [Int]
    let count: Int

    init(_ gradients: [String: Tensor]) {
      names = gradients.keys.sorted()
      var starts: [Int] = []
      var count = 0
      for name in names {
        starts.append(count)
        count += gradients[name]!.scalarCount
      }
      self.starts = starts
      self.count = count
    }

    /// Each gradient's piece of `part`: its index, the piece within it, and
    /// where the piece begins within the part.
    func pieces(of part: Range<Int>) -> [(index: Int, within: Range<Int>, at: Int)] {
      names.indices.compactMap { index in
        let end = index + 1 < starts.count ? starts[index + 1] : count
        let overlap = part.clamped(to: starts[index]..<end)
        guard !overlap.isEmpty else { return nil }
        return (
          index, (overlap.lowerBound - starts[index])..<(overlap.upperBound - starts[index]),
          overlap.lowerBound - part.lowerBound
        )
      }
    }

    /// A new tensor of the values `part` covers.
    func gather(_ part: Range<Int>, from gradients: [String: Tensor]) -> Tensor {
      var gathered = Tensor.zeros([part.count])
      gathered.withUnsafeMutableBufferPointer { target in
        for piece in pieces(of: part) {
          gradients[names[piece.index]]!.withUnsafeBufferPointer { source in
            (target.baseAddress! + piece.at).update(
              from: source.baseAddress! + piece.within.lowerBound, count: piece.within.count)
          }
        }
      }
      return gathered
    }

    /// Hands `combine` each gradient's piece of `part` (in place) with the
    /// values of `values` that go with it, and the piece's length.
    func scatter(
      _ values: Tensor, into part: Range<Int>, of gradients: inout [String: Tensor],
      _ combine: (UnsafeMutablePointer<Float>, UnsafePointer<Float>, Int) -> Void
    ) {
      values.withUnsafeBufferPointer { values in
        for piece in pieces(of: part) {
          gradients[names[piece.index]]!.withUnsafeMutableBufferPointer { sums in
            combine(sums.baseAddress! + piece.within.lowerBound, values.baseAddress! + piece.at, piece.within.count)
          }
        }
      }
    }
  }

  /// How a round's fetch is sent again after UNAVAILABLE.
  static let fetchRetry = CallRetry(attempts: 3, firstPause: .milliseconds(100))
}
