import MeshProto

extension Pipemesh_V1_ProcessMemory {
  /// This process's memory now, with `jobBytes` of it held by one job.
  public static func current(jobBytes: Int) -> Self {
    let resident = HostMemory.resident()
    return .with {
      $0.residentBytes = Int64(resident.now)
      $0.peakResidentBytes = Int64(resident.peak)
      $0.jobBytes = Int64(jobBytes)
    }
  }
}
