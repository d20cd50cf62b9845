import CSystemd
import Foundation
import Synchronization

/// Tells systemd how a `Type=notify` service is doing (sd_notify): READY=1
/// once it answers, STATUS= lines, STOPPING=1, and WATCHDOG=1 pings at a
/// third of the unit's `WatchdogSec=`. Without `NOTIFY_SOCKET` (not under systemd)
/// every call does nothing.
public struct SystemdNotifier: Sendable {
  public init() {}

  /// Whether a service manager listens (NOTIFY_SOCKET is set).
  public var isListening: Bool { ProcessInfo.processInfo.environment["NOTIFY_SOCKET"] != nil }

  /// READY=1 with a status line.
  public func ready(status: String) { send("READY=1\nSTATUS=\(status)") }

  /// A STATUS= line: what the service is doing, shown by `systemctl status`.
  public func status(_ text: String) { send("STATUS=\(text)") }

  public func stopping(status: String) { send("STOPPING=1\nSTATUS=\(status)") }

  /// The interval pings go at, if the unit set a watchdog: a third of
  /// WatchdogSec (systemd asks for half; a third leaves a ping to spare when
  /// a busy host delays one).
  public var watchdogInterval: Duration? {
    var microseconds: UInt64 = 0
    guard sd_watchdog_enabled(0, &microseconds) > 0, microseconds > 0 else { return nil }
    return .microseconds(microseconds / 3)
  }

  /// Pings WATCHDOG=1 at `watchdogInterval` until the task is cancelled; does
  /// nothing when the unit set no watchdog. The pings come from a thread of
  /// their own: on a busy host each waits only for a core, not also for a
  /// timer and a free executor thread (systemd stops a service that misses
  /// one WatchdogSec).
  public func keepWatchdogFed() async {
    guard let interval = watchdogInterval else { return }
    let pinging = Pinging()
    let seconds = Double(interval.components.seconds) + Double(interval.components.attoseconds) * 1e-18
    let thread = Thread { [self] in
      while pinging.goesOn {
        send("WATCHDOG=1")
        Thread.sleep(forTimeInterval: seconds)
      }
    }
    thread.name = "watchdog"
    thread.start()
    while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
    pinging.stop()
  }

  /// Whether the watchdog thread goes on pinging.
  private final class Pinging: Sendable {
    private let running = Mutex(true)
    var goesOn: Bool { running.withLock { $0 } }
    func stop() { running.withLock { $0 = false } }
  }

  private func send(_ state: String) {
    guard isListening else { return }
    _ = sd_notify(0, state)
  }
}
