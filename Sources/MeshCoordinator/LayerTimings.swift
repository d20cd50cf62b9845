import Foundation
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import Synchronization

/// Measured layer costs, asked of a partition of the pool (a free one
/// first) and kept per model spec and micro-batch size: what the planner
/// balances, in place of the FLOP estimate, once a partition measured them.
public final class LayerTimings: Sendable {
  /// Layer times of one model at one micro-batch size, and where they were measured.
  struct Measured: Sendable {
    let layers: [LayerTiming]
    let rows: Int
    let partition: String
  }

  private struct Key: Hashable {
    let spec: Data
    let rows: Int
  }

  private let measured = Mutex<[Key: Measured]>([:])

  /// Timed runs of each layer (the median counts).
  public static let repeats = 3
  /// The most FLOPs one measurement may take (as TimeLayersRequest bounds it).
  public static let flopBound = 2e11
  /// The micro-batch size timed when the caller names none.
  public static let defaultRows = 32
  /// How long a measurement may take before the planner estimates instead.
  static let timeout = Duration.seconds(60)

  /// `model`'s layer times on micro-batches of `rows` examples, measured on
  /// a partition of `pool` that answers (free ones first), or as measured
  /// before; nil when none measures them (the planner then estimates FLOPs).
  func times(
    of spec: Pipemesh_V1_ModelSpec, model: Sequential, rows wanted: Int, pool: PartitionPool
  ) async -> Measured? {
    guard let rows = model.rowsToTime(wanted: wanted, repeats: Self.repeats, within: Self.flopBound),
      let key = (try? spec.serializedData()).map({ Key(spec: $0, rows: rows) })
    else { return nil }
    if let known = measured.withLock({ $0[key] }) { return known }
    let free = Set(pool.status.filter { $0.state == .free }.map(\.endpoint))
    let members = pool.members.sorted { free.contains($0.endpoint) && !free.contains($1.endpoint) }
    for member in members {
      do {
        let response = try await member.client.call(
          PartitionMethods.timeLayers,
          .with {
            $0.model = spec
            $0.rows = Int32(rows)
            $0.repeats = Int32(Self.repeats)
          }, options: CallOptions(timeout: Self.timeout))
        guard response.layers.count == model.layers.count else { continue }
        let layers = response.layers.map {
          LayerTiming(forward: .seconds($0.forwardSeconds), backward: .seconds($0.backwardSeconds))
        }
        let found = Measured(layers: layers, rows: rows, partition: member.endpoint)
        measured.withLock { $0[key] = found }
        return found
      } catch {
        continue
      }
    }
    return nil
  }
}
