import CGRPCShim

/// A task executor on the transport's client loop, the thread that completes
/// every client call. A task that prefers it is resumed after each call by
/// the thread that took the answer off the socket, with no hand-off to
/// another thread in between: a call's latency is then that of a blocking
/// stub.
///
/// Use it for tasks that mostly make calls and wait (a control plane driving
/// many small RPCs). Never run model compute or anything that blocks there:
/// it holds up every call's completion in the process. Answers that have
/// arrived are taken between batches of work, so a task that yields in a
/// loop delays them but cannot keep them out.
///
///     try await withTaskExecutorPreference(ClientLoopExecutor.shared) {
///       try await client.call(method, request)
///     }
public final class ClientLoopExecutor: TaskExecutor {
  /// The process's client loop.
  public static let shared = ClientLoopExecutor()

  private init() {}

  /// Whether the calling thread is the client loop's.
  public var isCurrent: Bool { pm_client_loop_is_current() == 1 }

  public func enqueue(_ job: consuming ExecutorJob) {
    pm_client_loop_post(
      runClientLoopJob, Unmanaged.passUnretained(self).toOpaque(),
      unsafeBitCast(UnownedJob(job), to: UnsafeMutableRawPointer.self))
  }

  public func asUnownedTaskExecutor() -> UnownedTaskExecutor {
    UnownedTaskExecutor(ordinary: self)
  }
}

/// Runs a job posted by `ClientLoopExecutor.enqueue` on the loop's thread.
/// The executor is not retained: it lives as long as the process.
private let runClientLoopJob: pm_loop_runner = { executor, job in
  let executor = Unmanaged<ClientLoopExecutor>.fromOpaque(executor!).takeUnretainedValue()
  unsafeBitCast(job!, to: UnownedJob.self).runSynchronously(on: executor.asUnownedTaskExecutor())
}
