import Synchronization

/// What a partition has been doing, for metrics and status lines.
public final class PartitionActivity: Sendable {
  public struct Counts: Sendable {
    /// Seconds spent computing forward and backward passes.
    public var busySeconds: Double = 0
    public var forwards = 0
    public var backwards = 0
    public var commits = 0
    /// Micro-batches whose activations are kept for their backward pass.
    public var keptMicroBatches = 0
    /// Forward, Backward and BackwardWeights calls that came before their
    /// turn in their step's schedule and wait for it.
    public var callsWaitingForTurn = 0
    /// FetchTensor answers given through the fetcher's shared buffer
    /// (same host) and in chunks over the connection.
    public var fetchesInSharedMemory = 0
    public var fetchesInChunks = 0
    /// Shared buffers named for this host that could not be written (not
    /// permitted, or not a fetcher's buffer waiting for that answer): those
    /// fetches went in chunks.
    public var sharedBuffersRefused = 0
    /// What each loaded job's stage held at its last commit: its variables,
    /// their slots and the running steps' gradient sums, in bytes.
    public var jobBytes: [String: Int] = [:]
  }

  private let counts = Mutex(Counts())

  public init() {}

  public var snapshot: Counts { counts.withLock { $0 } }

  func update(_ change: (inout Counts) -> Void) { counts.withLock { change(&$0) } }
}
