import MeshRPC

/// Records every finished call in a registry: requests by method and status
/// code, latency, and message bytes.
public struct RPCMetrics: RPCObserver {
  let registry: MetricsRegistry

  public init(registry: MetricsRegistry) { self.registry = registry }

  public func callFinished(
    path: String, code: RPCError.Code?, duration: Duration, requestBytes: Int, responseBytes: Int
  ) {
    let method = ["method": path]
    registry.increment(
      "pipemesh_rpc_requests_total", help: "Calls served, by method and gRPC status code.",
      labels: ["method": path, "code": code?.description ?? "OK"])
    registry.observe(
      "pipemesh_rpc_duration_seconds", help: "Time from request to answer, by method.", labels: method,
      value: duration.seconds)
    registry.increment(
      "pipemesh_rpc_received_bytes_total", help: "Request message bytes, by method.", labels: method,
      by: Double(requestBytes))
    registry.increment(
      "pipemesh_rpc_sent_bytes_total", help: "Response message bytes, by method.", labels: method,
      by: Double(responseBytes))
  }
}
