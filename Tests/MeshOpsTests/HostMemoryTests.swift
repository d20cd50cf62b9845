import Foundation
import Testing

@testable import MeshOps

/// A cgroup file system laid out by hand under a fresh temporary directory, standing in for `/sys/fs/cgroup`.
private struct CgroupTree {
  let root: String

  init() throws {
    root = (NSTemporaryDirectory() as NSString).appendingPathComponent("pipemesh-cgroup-\(UUID().uuidString)")
    try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
  }

  /// Writes `contents` to `relativePath` under the root, creating its folders.
  func write(_ contents: String, to relativePath: String) throws {
    let path = (root as NSString).appendingPathComponent(relativePath)
    try FileManager.default.createDirectory(
      atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    try contents.write(toFile: path, atomically: false, encoding: .utf8)
  }

  /// Makes `relativePath` a folder, so that reading it as a file fails even for root.
  func makeUnreadable(_ relativePath: String) throws {
    try FileManager.default.createDirectory(
      atPath: (root as NSString).appendingPathComponent(relativePath), withIntermediateDirectories: true)
  }

  func limit(membership: String) -> Int? {
    HostMemory.cgroupLimit(membership: membership, mountedAt: root)
  }

  func remove() { try? FileManager.default.removeItem(atPath: root) }
}

/// The memory a process may hold: the smallest cgroup limit on its path to the root (v1 or v2), and the default
/// budget derived from it.
@Suite struct HostMemoryTests {
  private static let unitMembership = "0::/system.slice/pipemesh-ps.service\n"

  @Test func v2LimitOfAParentSliceApplies() throws {
    let tree = try CgroupTree()
    defer { tree.remove() }
    try tree.write("1073741824\n", to: "system.slice/memory.max")
    try tree.write("max\n", to: "system.slice/pipemesh-ps.service/memory.max")
    #expect(tree.limit(membership: Self.unitMembership) == 1_073_741_824)
  }

  @Test func v2SmallestLimitOnThePathWins() throws {
    let tree = try CgroupTree()
    defer { tree.remove() }
    try tree.write("1073741824\n", to: "system.slice/memory.max")
    try tree.write("536870912\n", to: "system.slice/pipemesh-ps.service/memory.max")
    #expect(tree.limit(membership: Self.unitMembership) == 536_870_912)

    try tree.write("2147483648\n", to: "system.slice/pipemesh-ps.service/memory.max")
    #expect(tree.limit(membership: Self.unitMembership) == 1_073_741_824)
  }

  @Test func v2LimitAtTheRootCgroupApplies() throws {
    let tree = try CgroupTree()
    defer { tree.remove() }
    try tree.write("268435456\n", to: "memory.max")
    #expect(tree.limit(membership: "0::/\n") == 268_435_456)
    #expect(tree.limit(membership: Self.unitMembership) == 268_435_456)
  }

  @Test func v2LimitsOffThePathAreIgnored() throws {
    let tree = try CgroupTree()
    defer { tree.remove() }
    try tree.write("1048576\n", to: "user.slice/memory.max")
    try tree.write("1048576\n", to: "system.slice/other.service/memory.max")
    #expect(tree.limit(membership: Self.unitMembership) == nil)
  }

  @Test func v1MemoryControllerLimitsApply() throws {
    let tree = try CgroupTree()
    defer { tree.remove() }
    try tree.write("268435456\n", to: "memory/user.slice/memory.limit_in_bytes")
    // v1 writes "no limit" as a huge number rather than "max".
    try tree.write("9223372036854771712\n", to: "memory/memory.limit_in_bytes")
    let membership = "12:pids:/user.slice\n5:memory:/user.slice\n1:name=systemd:/user.slice\n"
    #expect(tree.limit(membership: membership) == 268_435_456)
    #expect(tree.limit(membership: "4:cpuacct,memory:/user.slice\n") == 268_435_456)
    #expect(tree.limit(membership: "5:memory:/\n") == 9_223_372_036_854_771_712)
  }

  @Test func v1AndV2LimitsTogetherGiveTheSmallest() throws {
    let tree = try CgroupTree()
    defer { tree.remove() }
    try tree.write("536870912\n", to: "memory/app/memory.limit_in_bytes")
    try tree.write("268435456\n", to: "app/memory.max")
    #expect(tree.limit(membership: "5:memory:/app\n0::/app\n") == 268_435_456)
  }

  @Test func noLimitAnywhereIsNil() throws {
    let tree = try CgroupTree()
    defer { tree.remove() }
    #expect(tree.limit(membership: Self.unitMembership) == nil)
    #expect(tree.limit(membership: "") == nil)
    #expect(tree.limit(membership: "garbage\nno colons here\n") == nil)

    try tree.write("max\n", to: "memory.max")
    try tree.write("max\n", to: "system.slice/memory.max")
    try tree.write("max\n", to: "system.slice/pipemesh-ps.service/memory.max")
    #expect(tree.limit(membership: Self.unitMembership) == nil)
  }

  @Test func aRelativeCgroupPathEndsTheWalk() throws {
    let tree = try CgroupTree()
    defer { tree.remove() }
    try tree.write("1073741824\n", to: "memory.max")
    #expect(tree.limit(membership: "0::relative/path\n") == nil)
  }

  @Test func unreadableAndGarbageFilesCountAsNoLimit() throws {
    let tree = try CgroupTree()
    defer { tree.remove() }
    try tree.write("lots\n", to: "system.slice/pipemesh-ps.service/memory.max")
    try tree.makeUnreadable("system.slice/memory.max")
    #expect(tree.limit(membership: Self.unitMembership) == nil)

    try tree.write("", to: "memory.max")
    #expect(tree.limit(membership: Self.unitMembership) == nil)

    try tree.write("4194304\n", to: "memory.max")
    #expect(tree.limit(membership: Self.unitMembership) == 4_194_304)
  }

  @Test func describeGivesMebibytesAndExactBytes() {
    #expect(HostMemory.describe(1_572_864) == "1.5 MiB (1572864 bytes)")
    #expect(HostMemory.describe(0) == "0.0 MiB (0 bytes)")
    #expect(HostMemory.describe(4 << 30) == "4096.0 MiB (4294967296 bytes)")
  }

  @Test func residentMemoryIsReadFromProcStatus() {
    let status = "Name:\tpipemesh\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t9\n"
    #expect(HostMemory.field("VmRSS:", of: status) == 100 << 20)
    #expect(HostMemory.field("VmHWM:", of: status) == 200 << 20)
    #expect(HostMemory.field("VmSwap:", of: status) == 0)
    // This process: something resident, and a peak at least as high.
    let resident = HostMemory.resident()
    #expect(resident.now > 0 && resident.peak >= resident.now)
  }

  @Test func defaultBudgetIsAtMostHalfThePhysicalMemory() {
    let budget = HostMemory.defaultBudget()
    #expect(budget > 0)
    #expect(UInt64(budget) <= ProcessInfo.processInfo.physicalMemory / 2)
  }
}
