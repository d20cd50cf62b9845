/// How far each partition's clock is from the coordinator's (partition minus
/// coordinator, nanoseconds), worked out from what is known to have happened
/// in order, as in NTP: a call reached its partition after the coordinator
/// sent it, and was answered before the answer came back; a tensor reached a
/// partition after its neighbour offered it. Each such fact bounds one offset
/// or the difference of two (a system of difference constraints). The
/// estimate is the midpoint of the largest and the smallest offsets that
/// respect every fact, which respects them all too: a timeline drawn with it
/// shows no effect before its cause.
struct ClockOffsets {
  /// The coordinator sent a call at `sent` and had its answer at `answered`
  /// (its clock); the partition received it at `received` and answered at
  /// `replied` (the partition's clock).
  struct Exchange {
    let partition: String
    let sent: Int64
    let received: Int64
    let replied: Int64
    let answered: Int64
  }

  /// Partition `receiver` had at `received` (its clock) a tensor that
  /// `sender` offered at `offered` (the sender's clock).
  struct Handoff {
    let sender: String
    let receiver: String
    let offered: Int64
    let received: Int64
  }

  /// By partition.
  let offsets: [String: Int64]

  init(exchanges: [Exchange], handoffs: [Handoff]) {
    // Facts from clocks that stepped meanwhile may contradict each other:
    // then the handoffs go, and failing that, each partition's own
    // exchanges are read as NTP reads them.
    offsets =
      Self.solve(exchanges: exchanges, handoffs: handoffs) ?? Self.solve(exchanges: exchanges, handoffs: [])
      ?? Self.roundTripMidpoints(exchanges)
  }

  /// The offset of `partition` (0 for one nothing is known of).
  subscript(partition: String) -> Int64 { offsets[partition] ?? 0 }

  /// Node 0 is the coordinator, whose offset is 0 by definition. A fact
  /// `x[a] - x[b] <= c` is an edge from b to a of weight c; the shortest
  /// distances from node 0 are the largest offsets that respect every fact,
  /// and the shortest distances to it, negated, the smallest. Nil when the
  /// facts contradict each other (a negative cycle).
  private static func solve(exchanges: [Exchange], handoffs: [Handoff]) -> [String: Int64]? {
    var nodes = ["": 0]
    func node(_ partition: String) -> Int {
      if let index = nodes[partition] { return index }
      nodes[partition] = nodes.count
      return nodes.count - 1
    }
    // The tightest bound per ordered pair (b, a).
    var bounds: [Pair: Int64] = [:]
    func bound(_ a: Int, minus b: Int, atMost c: Int64) {
      bounds[Pair(from: b, to: a)] = min(bounds[Pair(from: b, to: a)] ?? .max, c)
    }
    for exchange in exchanges {
      let partition = node(exchange.partition)
      // received - offset >= sent, and replied - offset <= answered.
      bound(partition, minus: 0, atMost: exchange.received - exchange.sent)
      bound(0, minus: partition, atMost: exchange.answered - exchange.replied)
    }
    for handoff in handoffs {
      // received - offset(receiver) >= offered - offset(sender).
      bound(node(handoff.receiver), minus: node(handoff.sender), atMost: handoff.received - handoff.offered)
    }
    let edges = bounds.map { (from: $0.key.from, to: $0.key.to, weight: $0.value) }
    guard let largest = shortestDistances(from: 0, nodes: nodes.count, edges: edges),
      let toCoordinator = shortestDistances(
        from: 0, nodes: nodes.count, edges: edges.map { (from: $0.to, to: $0.from, weight: $0.weight) })
    else { return nil }
    var offsets: [String: Int64] = [:]
    for (partition, index) in nodes where index > 0 {
      switch (largest[index], toCoordinator[index].map { -$0 }) {
      case (let high?, let low?): offsets[partition] = low + (high - low) / 2
      case (let high?, nil): offsets[partition] = high
      case (nil, let low?): offsets[partition] = low
      case (nil, nil): offsets[partition] = 0
      }
    }
    return offsets
  }

  private struct Pair: Hashable {
    let from: Int
    let to: Int
  }

  /// Bellman-Ford: each node's shortest distance from `source` (nil where
  /// none leads), or nil for a negative cycle.
  private static func shortestDistances(
    from source: Int, nodes: Int, edges: [(from: Int, to: Int, weight: Int64)]
  ) -> [Int64?]? {
    var distance = [Int64?](repeating: nil, count: nodes)
    distance[source] = 0
    for round in 0...nodes {
      var changed = false
      for edge in edges {
        guard let start = distance[edge.from] else { continue }
        let (reached, overflow) = start.addingReportingOverflow(edge.weight)
        if !overflow, distance[edge.to].map({ reached < $0 }) ?? true {
          distance[edge.to] = reached
          changed = true
        }
      }
      if !changed { return distance }
      if round == nodes { return nil }
    }
    return distance
  }

  /// Each partition's offset as NTP estimates it from its exchange with the
  /// shortest round trip.
  private static func roundTripMidpoints(_ exchanges: [Exchange]) -> [String: Int64] {
    var best: [String: (roundTrip: Int64, offset: Int64)] = [:]
    for exchange in exchanges {
      let roundTrip = (exchange.answered - exchange.sent) - (exchange.replied - exchange.received)
      let offset = ((exchange.received - exchange.sent) + (exchange.replied - exchange.answered)) / 2
      if best[exchange.partition].map({ roundTrip < $0.roundTrip }) ?? true {
        best[exchange.partition] = (roundTrip, offset)
      }
    }
    return best.mapValues(\.offset)
  }
}
