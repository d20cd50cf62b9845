import ArgumentParser
import Foundation

/// `pipemesh certs`: a CA and a certificate for each role of the mesh, for
/// mutual TLS between the services and for users.
struct Certs: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Make a CA and certificates for the mesh's services and users (mutual TLS).",
    discussion: """
      Writes PEM files into --out: ca.crt and ca.key (kept when present, so running the command again \
      issues from the same CA), and a certificate and key per role, named for it (kept when present, \
      unless --renew): \
      coordinator, partition, ps (each valid as server and client, for --hosts), client.NAME for each \
      of --users and admin.NAME for each of --admins. A service knows its peers' roles by these names: \
      partitions and ps tasks serve only coordinator, partition and ps certificates; the coordinator \
      takes client.NAME and admin.NAME as users. Keys are written readable by their owner only. \
      Give each service --tls-cert ROLE.crt --tls-key ROLE.key --tls-ca ca.crt. \
      Uses the openssl command (Debian's openssl package): the files are standard PEM that any TLS \
      tool reads. Example: pipemesh certs --out /etc/pipemesh/tls --hosts localhost,127.0.0.1,node-a
      """)

  @Option(help: "Folder to write the files into.")
  var out: String

  @Option(help: "Host names and IP addresses the services' certificates are valid for, comma-separated.")
  var hosts: String = "localhost,127.0.0.1"

  @Option(help: "Users to issue client.NAME certificates for, comma-separated.")
  var users: String = ""

  @Option(help: "Users to issue admin.NAME certificates for, comma-separated.")
  var admins: String = ""

  @Option(help: "Days the certificates are valid.")
  var days: Int = 365

  @Option(help: "The openssl executable.")
  var openssl: String = "/usr/bin/openssl"

  @Flag(help: "Issue certificates that exist already again (new keys, from the same CA).")
  var renew = false

  func validate() throws {
    guard (1...36500).contains(days) else { throw ValidationError("--days must be from 1 to 36500") }
    for name in list(users) + list(admins) {
      guard name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "_-".contains($0)) }) else {
        throw ValidationError("user name '\(name)' must be letters, digits, _ and -")
      }
    }
    guard FileManager.default.isExecutableFile(atPath: openssl) else {
      throw ValidationError("\(openssl) is not there: install Debian's openssl package or give --openssl")
    }
  }

  func run() async throws {
    try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
    if FileManager.default.fileExists(atPath: file("ca.crt")) {
      say("using the CA in \(file("ca.crt"))")
    } else {
      try openssl([
        "req", "-x509", "-newkey", "ec", "-pkeyopt", Self.curve, "-nodes", "-days", "\(days * 3)", "-subj",
        "/CN=pipemesh-ca", "-keyout", file("ca.key"), "-out", file("ca.crt"),
      ])
      say("made a CA: \(file("ca.crt"))")
    }
    let addresses = list(hosts).map { host in Self.isIPAddress(host) ? "IP:\(host)" : "DNS:\(host)" }
    let serviceExtensions =
      "subjectAltName=\(addresses.joined(separator: ","))\nextendedKeyUsage=serverAuth,clientAuth\n"
    for role in ["coordinator", "partition", "ps"] { try issue(role, extensions: serviceExtensions) }
    for user in list(users) { try issue("client.\(user)", extensions: "extendedKeyUsage=clientAuth\n") }
    for admin in list(admins) { try issue("admin.\(admin)", extensions: "extendedKeyUsage=clientAuth\n") }
  }

  private func issue(_ name: String, extensions: String) throws {
    guard renew || !FileManager.default.fileExists(atPath: file("\(name).crt")) else {
      say("kept \(file("\(name).crt")) (--renew issues it again)")
      return
    }
    let request = file("\(name).csr")
    let extensionsFile = file("\(name).ext")
    defer {
      try? FileManager.default.removeItem(atPath: request)
      try? FileManager.default.removeItem(atPath: extensionsFile)
    }
    try openssl([
      "req", "-new", "-newkey", "ec", "-pkeyopt", Self.curve, "-nodes", "-subj", "/CN=\(name)", "-keyout",
      file("\(name).key"), "-out", request,
    ])
    try extensions.write(toFile: extensionsFile, atomically: true, encoding: .utf8)
    try openssl([
      "x509", "-req", "-in", request, "-CA", file("ca.crt"), "-CAkey", file("ca.key"), "-CAcreateserial", "-days",
      "\(days)",
      "-extfile", extensionsFile, "-out", file("\(name).crt"),
    ])
    say("issued \(file("\(name).crt"))")
  }

  /// Keys are ECDSA on P-256: as strong as RSA-3072 and made at once, where
  /// an RSA-3072 key's prime search took tens of seconds on a loaded host.
  private static let curve = "ec_paramgen_curve:prime256v1"

  private func openssl(_ arguments: [String]) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: openssl)
    process.arguments = arguments
    let errors = Pipe()
    process.standardError = errors
    process.standardOutput = FileHandle.nullDevice
    // Keys are written readable by their owner only.
    let mask = umask(0o077)
    defer { umask(mask) }
    try process.run()
    // Read while it runs: a full pipe would block it.
    let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
      throw ValidationError("openssl \(arguments.first ?? "") failed: \(message)")
    }
  }

  private static func isIPAddress(_ host: String) -> Bool {
    var v4 = in_addr()
    var v6 = in6_addr()
    return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
  }

  private func file(_ name: String) -> String { (out as NSString).appendingPathComponent(name) }

  private func list(_ text: String) -> [String] {
    text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
  }
}
