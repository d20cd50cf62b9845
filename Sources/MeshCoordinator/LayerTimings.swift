import Foundation
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import Synchronization

/// Measured layer costs, asked of a free partition of the pool and kept per
/// model and micro-batch size: what the planner balances, in place of the
/// FLOP estimate, once a partition measured them. Beside them, per model
/// and number of stages, the calibrations of the last jobs that ran it, one
/// per micro-batch size (`StepCalibration`), which correct the planner's
/// predictions and outlive the coordinator in its state.
public final class LayerTimings: Sendable {
  /// Layer times of one model at one micro-batch size, and the partition that measured them.
  typealias Measured = Planner.MeasuredTimes

  /// What is known of a model at a micro-batch size: its times, or that
  /// no partition measured them (asked again after `retryAfter`).
  private enum Known {
    case measured(Measured)
    case unmeasured(since: ContinuousClock.Instant)
  }

  private struct Cache {
    var known: [Data: Known] = [:]
    /// Keys oldest first, to forget the oldest past `capacity`.
    var order: [Data] = []
  }

  private let cache = Mutex(Cache())
  /// By model key and stages, one per micro-batch size, oldest first (at most `capacity`).
  private let calibrations = Mutex<[(key: Data, calibration: StepCalibration)]>([])

  /// Timed runs of each layer (the median counts).
  public static let repeats = 3
  /// The micro-batch size timed when the caller names none.
  public static let defaultRows = 32
  /// Models (at a micro-batch size) remembered, and calibrations (per model
  /// and number of stages); the largest spec kept.
  static let capacity = 256
  static let largestKey = 1 << 16
  /// How long a measurement may take in all before the planner estimates
  /// instead, how many free partitions are asked, and when a model no
  /// partition measured is asked about again.
  static let deadline = Duration.seconds(40)
  static let partitionsAsked = 2
  static let retryAfter = Duration.seconds(60)
  /// The most seconds a layer's time may say (a partition answering more, or
  /// not a number, is not believed).
  static let longestLayer = 3600.0

  /// `model`'s layer times on micro-batches of `rows` examples, measured on
  /// a free partition of `pool` `within` the time given (`deadline` at
  /// most), or as measured before; nil when none measures them (the planner
  /// then estimates FLOPs).
  func times(
    of spec: Pipemesh_V1_ModelSpec, model: Sequential, rows wanted: Int, pool: PartitionPool,
    within: Duration = deadline
  ) async -> Measured? {
    guard case .success(let rows) = model.rowsToTime(wanted: wanted, repeats: Self.repeats, within: .planning),
      let key = Self.key(of: spec, appending: Int64(rows))
    else { return nil }
    switch cache.withLock({ $0.known[key] }) {
    case .measured(let measured): return measured
    case .unmeasured(let since) where ContinuousClock.now < since + Self.retryAfter: return nil
    default: break
    }
    let allowed = min(within, Self.deadline)
    let began = ContinuousClock.now
    let measured = await measure(spec, model: model, rows: rows, pool: pool, within: allowed)
    if let measured {
      remember(.measured(measured), under: key)
    } else if !Task.isCancelled, allowed == Self.deadline || ContinuousClock.now < began + allowed {
      // Not when its caller's time, shorter than a measurement's own, ran out: that says
      // nothing of the next one.
      remember(.unmeasured(since: .now), under: key)
    }
    return measured
  }

  /// `model`'s layer times at `wanted` rows if a partition measured them
  /// already (scaled to the rows where fewer were timed); nil otherwise:
  /// nothing is timed.
  func measuredBefore(of spec: Pipemesh_V1_ModelSpec, model: Sequential, rows wanted: Int) -> Measured? {
    guard case .success(let rows) = model.rowsToTime(wanted: wanted, repeats: Self.repeats, within: .planning),
      let key = Self.key(of: spec, appending: Int64(rows)),
      case .measured(let measured) = cache.withLock({ $0.known[key] })
    else { return nil }
    return measured.scaled(toRows: wanted)
  }

  /// The calibration of the last job of `spec` on `stages` stages, its
  /// calls and transfers fitted through those of the jobs before it at other
  /// micro-batch sizes; nil when none ran.
  func calibration(of spec: Pipemesh_V1_ModelSpec, stages: Int) -> StepCalibration? {
    guard let key = Self.key(of: spec, appending: Int64(stages)) else { return nil }
    let kept = calibrations.withLock { $0.filter { $0.key == key }.map(\.calibration) }
    return kept.last?.fitting(kept.dropLast().reversed())
  }

  /// Keeps `calibration`, of a job of `spec` on `stages` stages, in place of
  /// the one before at its micro-batch size; returns the key it is kept
  /// under (for the coordinator's state), nil for a spec too large to keep.
  @discardableResult
  func record(_ calibration: StepCalibration, of spec: Pipemesh_V1_ModelSpec, stages: Int) -> Data? {
    guard let key = Self.key(of: spec, appending: Int64(stages)) else { return nil }
    restore([(key, calibration)])
    return key
  }

  /// Keeps calibrations recorded before, oldest first, under their keys:
  /// what the coordinator's state held when it started.
  func restore(_ saved: [(key: Data, calibration: StepCalibration)]) {
    calibrations.withLock { kept in
      for (key, calibration) in saved {
        kept.removeAll { $0.key == key && $0.calibration.rows == calibration.rows }
        kept.append((key, calibration))
      }
      if kept.count > Self.capacity { kept.removeFirst(kept.count - Self.capacity) }
    }
  }

  /// The cache key of `spec` and `number`: the same layers whatever the names
  /// and seed (those do not change a layer's time); nil for a spec too large.
  private static func key(of spec: Pipemesh_V1_ModelSpec, appending number: Int64) -> Data? {
    var normalized = spec
    normalized.name = ""
    normalized.seed = 0
    for index in normalized.layers.indices { normalized.layers[index].name = "" }
    normalized.unknownFields = .init()
    guard var key = try? normalized.serializedData(), key.count <= largestKey else { return nil }
    withUnsafeBytes(of: number) { key.append(contentsOf: $0) }
    return key
  }

  private func measure(
    _ spec: Pipemesh_V1_ModelSpec, model: Sequential, rows: Int, pool: PartitionPool, within: Duration
  ) async -> Measured? {
    let free = Set(pool.status.filter { $0.state == .free }.map(\.endpoint))
    let deadline = ContinuousClock.now + within
    for member in pool.members.filter({ free.contains($0.endpoint) }).prefix(Self.partitionsAsked) {
      guard !Task.isCancelled, ContinuousClock.now < deadline else { return nil }
      do {
        let response = try await member.client.call(
          PartitionMethods.timeLayers,
          .with {
            $0.model = spec
            $0.rows = Int32(rows)
            $0.repeats = Int32(Self.repeats)
          }, options: CallOptions(timeout: deadline - ContinuousClock.now))
        let seconds = response.layers.flatMap {
          [$0.forwardSeconds, $0.backwardSeconds, $0.splitForwardSeconds, $0.splitBackwardSeconds]
        }
        guard response.layers.count == model.layers.count,
          seconds.allSatisfy({ $0.isFinite && $0 >= 0 && $0 <= Self.longestLayer }),
          response.layers.allSatisfy({ !$0.hasFirstPartShare || ($0.firstPartShare > 0 && $0.firstPartShare <= 1) })
        else { continue }
        let layers = response.layers.map {
          LayerTiming(
            forward: .seconds($0.forwardSeconds), backward: .seconds($0.backwardSeconds),
            splitForward: .seconds($0.splitForwardSeconds), splitBackward: .seconds($0.splitBackwardSeconds),
            firstPartShare: $0.hasFirstPartShare ? $0.firstPartShare : nil)
        }
        return Measured(layers: layers, rows: rows, on: member.endpoint)
      } catch let error as RPCError where [.invalidArgument, .resourceExhausted].contains(error.code) {
        // Another partition would refuse the model the same way.
        return nil
      } catch {
        continue
      }
    }
    return nil
  }

  private func remember(_ known: Known, under key: Data) {
    cache.withLock { cache in
      if cache.known.updateValue(known, forKey: key) == nil { cache.order.append(key) }
      while cache.order.count > Self.capacity { cache.known[cache.order.removeFirst()] = nil }
    }
  }
}
