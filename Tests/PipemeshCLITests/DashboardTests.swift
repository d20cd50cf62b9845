import Foundation
import MeshTestSupport
import Testing

#if canImport(FoundationNetworking)
  import FoundationNetworking
#endif

/// The coordinator's web dashboard, loaded in headless Chromium (Debian's
/// package, which the test command installs) against a live local mesh
/// while a job trains: what the page shows, and to whom.
@Suite(.serialized) struct DashboardTests {
  /// Debian's Chromium.
  static let chromium = "/usr/bin/chromium"

  /// The page at `url` once its script has run for a while (Chromium's
  /// virtual time: fetches complete, timers fire), as HTML.
  static func render(_ url: String, in directory: TemporaryDirectory) async throws -> String {
    try #require(
      FileManager.default.isExecutableFile(atPath: chromium), "no \(chromium): scripts/install-dependencies --test")
    // stderr is Chromium's own log; stdout the page.
    // As light as Chromium goes: the test shares two cores with the rest of the suite.
    let command = [
      chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-zygote",
      "--disable-extensions", "--disable-background-networking", "--disable-sync", "--disable-dev-shm-usage",
      "--renderer-process-limit=1", "--user-data-dir=\(directory.file("chromium-\(UUID().uuidString)"))",
      "--virtual-time-budget=4000", "--dump-dom", "'\(url)'",
    ].joined(separator: " ")
    return try await run("/bin/sh", ["-c", command + " 2>/dev/null"])
  }

  /// Every value of attribute `name` in `html`.
  static func attributes(_ name: String, in html: String) -> [String] {
    html.matches(of: try! Regex("\(name)=\"([^\"]*)\"")).compactMap { $0.output[1].substring.map(String.init) }
  }

  @Test func theDashboardShowsATrainingJobWithItsCurvesTimelineMembersAndModels() async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-dashboard")
    let mesh = try await LocalMesh(partitions: 2)
    let tokensFile = try AccessTests.writeTokens(directory)
    let coordinator = try await mesh.coordinator(
      [[0], [1]], name: "dashboard", arguments: ["--tokens-file", tokensFile, "--dashboard-listen", "127.0.0.1:0"])
    let dashboard = try await coordinator.process.waitForLine(startingWith: "pipemesh coordinator: dashboard on ")
    #expect(dashboard.hasPrefix("http://127.0.0.1:"), "\(dashboard)")

    // A finished job leaves a model; another trains while the page is read.
    let alice = ["PIPEMESH_TOKEN": AccessTests.tokens.alice]
    let train = { (job: String, epochs: Int) in
      try ChildProcess(
        PipemeshBinary.path,
        [
          "train", "--coordinator", coordinator.endpoint, "--job", job, "--model", DurableStateTests.model,
          "--epochs", "\(epochs)", "--micro-batches", "2", "--json",
        ], logPath: directory.file("\(job).log"), environment: alice)
    }
    let quick = try train("quick", 1)
    #expect(try await quick.waitForExit() == 0, "\(quick.log)")
    let watched = try train("watched", 200)
    defer { watched.signal(SIGKILL) }
    let steps = try #require(URL(string: dashboard + "api/jobs/watched"))
    let trained = try await eventually(timeout: .seconds(60)) {
      var request = URLRequest(url: steps)
      request.setValue("Bearer \(AccessTests.tokens.alice)", forHTTPHeaderField: "Authorization")
      let job =
        try JSONSerialization.jsonObject(with: try await URLSession.shared.data(for: request).0) as? [String: Any]
      if ((job?["steps"] as? [Any])?.count ?? 0) >= 20 && !((job?["trace_json"] as? String) ?? "").isEmpty {
        return true
      }
      try await Task.sleep(for: .milliseconds(250))  // each read draws the trace: leave the job its CPU
      return false
    }
    try #require(trained, "job watched never showed 20 steps and a trace: \(watched.log)")

    let page = try await Self.render(dashboard + "#token=\(AccessTests.tokens.alice)", in: directory)
    #expect(page.contains("data-loaded=\"true\""), "the script never finished a refresh: \(page)")
    // The jobs, the running one chosen and shown.
    #expect(Set(Self.attributes("data-job", in: page)).isSuperset(of: ["quick", "watched"]), "\(page)")
    #expect(page.contains("<h2 data-job=\"watched\">"), "\(page)")
    #expect(page.contains("data-state=\"JOB_STATE_RUNNING\""))
    #expect(page.contains("data-state=\"JOB_STATE_SUCCEEDED\""))
    // Its loss and accuracy curves: a point per step seen (20 or more), and the first epoch's
    // validation; round y ticks.
    let points = Self.attributes("data-points", in: page).compactMap { Int($0) }
    #expect(points.count == 2 && points.allSatisfy { $0 >= 20 }, "\(points)")
    #expect(page.contains("class=\"train\""))
    #expect(page.contains("class=\"y-tick\""))
    // Its pipeline timeline: 2 stages × (2 forwards, 2 backwards, a commit) and 4 transfers.
    let slices = Self.attributes("data-slices", in: page).compactMap { Int($0) }
    #expect(slices == [14], "\(slices)")
    #expect(Set(Self.attributes("data-stage", in: page)) == ["0", "1"])
    // The members, busy with the job, and the quick job's model.
    let members = Set(Self.attributes("data-endpoint", in: page))
    #expect(members == Set(mesh.partitions.map(\.endpoint)), "\(members)")
    #expect(Self.attributes("data-model", in: page).contains("quick"), "\(page)")

    // Another user sees none of alice's jobs or models (through the API the page reads); no token
    // gets the token form and the reason.
    for (path, key) in [("api/jobs", "jobs"), ("api/models", "models")] {
      var request = URLRequest(url: try #require(URL(string: dashboard + path)))
      request.setValue("Bearer \(AccessTests.tokens.bob)", forHTTPHeaderField: "Authorization")
      let (body, response) = try await URLSession.shared.data(for: request)
      #expect((response as? HTTPURLResponse)?.statusCode == 200)
      let listed = (try JSONSerialization.jsonObject(with: body) as? [String: Any])?[key] as? [Any]
      #expect(listed?.isEmpty ?? true, "bob sees \(String(decoding: body, as: UTF8.self))")
    }
    let anonymous = try await Self.render(dashboard, in: directory)
    #expect(anonymous.contains("data-status=\"401\""), "\(anonymous)")
    #expect(anonymous.contains("<section id=\"login\" class=\"wide\" style=\"display: block;\">"), "\(anonymous)")
    #expect(!anonymous.contains("data-job=\"watched\""))
  }

  /// `pipemesh up --dashboard 0` serves the page of its own run, in one
  /// process as with child processes.
  @Test(arguments: [true, false]) func upServesTheDashboardOfItsRun(inProcess: Bool) async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-up-dashboard")
    let up = try ChildProcess(
      PipemeshBinary.path,
      ["up", "--epochs", "500", "--dashboard", "0", "--runs-dir", directory.file("runs")]
        + (inProcess ? ["--in-process"] : []),
      logPath: directory.file("up.log"), currentDirectory: directory.path)
    let dashboard = try await up.waitForLine(startingWith: "dashboard on ")
    _ = try await up.waitForLine(startingWith: "epoch 1")
    let jobs =
      try JSONSerialization.jsonObject(
        with: try await URLSession.shared.data(from: #require(URL(string: dashboard + "api/jobs"))).0) as? [String: Any]
    let listed = try #require(jobs?["jobs"] as? [[String: Any]])
    #expect(listed.count == 1 && (listed[0]["job"] as? String)?.hasPrefix("up-") == true, "\(listed)")
    #expect(listed.first?["state"] as? String == "JOB_STATE_RUNNING")
    let (page, response) = try await URLSession.shared.data(from: #require(URL(string: dashboard)))
    #expect((response as? HTTPURLResponse)?.statusCode == 200)
    #expect(String(decoding: page, as: UTF8.self).contains("<script src=\"/dashboard.js\"></script>"))
    // A page elsewhere that rebinds its own name to 127.0.0.1 gets nothing.
    for (host, status) in [("evil.example:80", "403"), ("localhost", "200")] {
      let answered = try await run(
        "/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: \(host)", dashboard + "api/jobs"])
      #expect(answered == status, "Host \(host): \(answered)")
    }
    up.signal(SIGINT)
    #expect(try await up.waitForExit(timeout: .seconds(60)) == 130, "\(up.log)")
  }

  /// Tokens do not cross the network in plain HTTP, and a coordinator
  /// that knows users by certificate alone gets no dashboard, which could
  /// not tell who a browser is.
  @Test func aDashboardThatWouldExposeTokensIsRefused() async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-dashboard-refused")
    let tokensFile = try AccessTests.writeTokens(directory)
    let serve = try ChildProcess(
      PipemeshBinary.path,
      [
        "serve", "coordinator", "--ps", "127.0.0.1:1", "--tokens-file", tokensFile, "--dashboard-listen", "0.0.0.0:0",
      ], logPath: directory.file("serve.log"))
    #expect(try await serve.waitForExit() == 64)
    #expect(serve.log.contains("the dashboard serves plain HTTP"), "\(serve.log)")

    let certificates = try await TestCertificates.make(in: directory.path)
    let mutual = try ChildProcess(
      PipemeshBinary.path,
      [
        "serve", "coordinator", "--ps", "127.0.0.1:1", "--tls-cert", certificates.path("server.crt"), "--tls-key",
        certificates.path("server.key"), "--tls-ca", certificates.path("ca.crt"), "--dashboard-listen", "127.0.0.1:0",
      ], logPath: directory.file("mutual.log"))
    #expect(try await mutual.waitForExit() == 64)
    #expect(mutual.log.contains("knows users by their bearer tokens"), "\(mutual.log)")
  }
}
