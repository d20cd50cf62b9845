import MeshPartition
import Testing

/// Which endpoints a LoadStage may make a partition dial.
@Suite struct DialPolicyTests {
  @Test(arguments: [
    ("127.0.0.1:7100", true), ("127.3.4.5:1", true), ("localhost:7200", true), ("LOCALHOST:7200", true),
    ("[::1]:7200", true),
    ("10.0.0.1:7100", false), ("192.168.1.2:80", false), ("metadata.internal:80", false), ("127.0.0.1", false),
    ("unix:/run/x.sock", false), ("1270.0.0.1:5", false), ("127.evil.example:7000", false),
    ("127.0.0.1.nip.io:80", false),
    ("127.0.0.256:1", false),
  ])
  func loopbackAllowsOnlyLoopback(endpoint: String, allowed: Bool) {
    #expect(DialPolicy.loopback.allows(endpoint) == allowed, "\(endpoint)")
  }

  @Test func aListingAllowsItsHostsAndEndpoints() {
    let policy = DialPolicy(listing: ["node-a", "node-b:7200"])
    #expect(policy.allows("node-a:7100"))
    #expect(policy.allows("NODE-A:7200"))
    #expect(policy.allows("node-b:7200"))
    #expect(!policy.allows("node-b:7201"))
    #expect(!policy.allows("node-c:7200"))
    #expect(!policy.allows("127.0.0.1:7200"), "a listing replaces the loopback default")
    #expect(DialPolicy(listing: ["*"]) == .anywhere)
    #expect(DialPolicy.anywhere.allows("node-z:1"))
    #expect(!DialPolicy.anywhere.allows(String(repeating: "h", count: 300) + ":1"), "no endpoint over 255 characters")
  }
}
