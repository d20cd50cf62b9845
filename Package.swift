// swift-tools-version:6.0
import PackageDescription

/// Libraries behind `pkg-config --libs-only-l grpc++` on Debian 12,
/// de-duplicated. Listed by name: SwiftPM's pkgConfig expansion of absl's
/// graph overflows the linker's argument list.
let grpcLibraries: [String] = [
    "grpc++",
    "grpc",
    "address_sorting",
    "re2",
    "upb",
    "cares",
    "z",
    "gpr",
    "absl_throw_delegate",
    "absl_raw_logging_internal",
    "ssl",
    "crypto",
    "absl_raw_hash_set",
    "absl_hashtablez_sampler",
    "absl_hash",
    "absl_city",
    "absl_low_level_hash",
    "absl_random_distributions",
    "absl_random_seed_sequences",
    "absl_random_internal_pool_urbg",
    "absl_random_internal_randen",
    "absl_random_internal_randen_hwaes",
    "absl_random_internal_randen_hwaes_impl",
    "absl_random_internal_randen_slow",
    "absl_random_internal_platform",
    "absl_random_internal_seed_material",
    "absl_random_seed_gen_exception",
    "absl_statusor",
    "absl_status",
    "absl_cord",
    "absl_cordz_info",
    "absl_cord_internal",
    "absl_cordz_functions",
    "absl_exponential_biased",
    "absl_cordz_handle",
    "absl_bad_optional_access",
    "absl_strerror",
    "absl_str_format_internal",
    "absl_synchronization",
    "absl_graphcycles_internal",
    "absl_stacktrace",
    "absl_symbolize",
    "absl_debugging_internal",
    "absl_demangle_internal",
    "absl_malloc_internal",
    "absl_time",
    "absl_civil_time",
    "absl_strings",
    "absl_strings_internal",
    "atomic",
    "rt",
    "absl_base",
    "absl_spinlock_wait",
    "absl_int128",
    "absl_time_zone",
    "absl_bad_variant_access",
    "absl_log_severity",
]

let package = Package(
  name: "pipemesh",
  platforms: [.macOS(.v15)],
  products: [
    .library(name: "MeshProto", targets: ["MeshProto"]),
    .library(name: "MeshRPC", targets: ["MeshRPC"]),
    .library(name: "MeshTensor", targets: ["MeshTensor"]),
    .library(name: "MeshPS", targets: ["MeshPS"]),
    .executable(name: "pipemesh", targets: ["pipemesh"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
    .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
    .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
  ],
  targets: [
    .target(
      name: "CGRPCShim",
      path: "CShims/CGRPCShim",
      linkerSettings: grpcLibraries.map { .linkedLibrary($0) }
    ),
    .systemLibrary(name: "COpenBLAS", path: "CShims/COpenBLAS"),
    .target(name: "MeshTensor", dependencies: ["COpenBLAS"]),
    .target(
      name: "MeshProto",
      dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")]
    ),
    .target(
      name: "MeshRPC",
      dependencies: [
        "CGRPCShim",
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
      ]
    ),
    .target(name: "MeshWire", dependencies: ["MeshTensor", "MeshData", "MeshProto", "MeshRPC"]),
    .target(name: "MeshCheckpoint", dependencies: ["MeshTensor"]),
    .target(name: "MeshPipeline"),
    .systemLibrary(name: "CSystemd", path: "CShims/CSystemd"),
    .target(
      name: "MeshOps",
      dependencies: ["CSystemd", "MeshProto", "MeshRPC", "MeshWire", .product(name: "Logging", package: "swift-log")]
    ),
    .systemLibrary(name: "CZlib", path: "CShims/CZlib"),
    .systemLibrary(name: "CLinux", path: "CShims/CLinux"),
    .target(name: "MeshData", dependencies: ["CZlib", "MeshTensor"]),
    .target(name: "MeshPartition", dependencies: ["CLinux", "MeshOps", "MeshTensor", "MeshProto", "MeshRPC", "MeshWire", "MeshPSClient", "MeshPipeline"]),
    .target(
      name: "MeshCoordinator",
      dependencies: [
        "MeshCheckpoint", "MeshTensor", "MeshProto", "MeshRPC", "MeshWire", "MeshPSClient", "MeshPipeline",
        .product(name: "GRDB", package: "GRDB.swift"),
      ]
    ),
    .target(name: "MeshPSClient", dependencies: ["MeshTensor", "MeshProto", "MeshRPC", "MeshWire"]),
    .target(
      name: "MeshPS",
      dependencies: [
        "MeshOps", "MeshTensor", "MeshProto", "MeshRPC", "MeshWire", "MeshPSClient", "MeshCheckpoint",
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
      ]
    ),
    .target(
      name: "MeshDashboard",
      dependencies: [
        "MeshProto", "MeshRPC", "MeshWire", .product(name: "Hummingbird", package: "hummingbird"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
      ]
    ),
    .target(name: "MeshInProcess", dependencies: ["MeshCoordinator", "MeshPS", "MeshPartition", "MeshRPC", "MeshWire"]),
    .executableTarget(
      name: "pipemesh",
      dependencies: [
        "MeshRPC", "MeshPS", "MeshPSClient", "MeshPartition", "MeshCoordinator", "MeshDashboard", "MeshInProcess", "MeshTensor", "MeshData", "MeshOps", "MeshProto", "MeshWire",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "UnixSignals", package: "swift-service-lifecycle"),
      ]
    ),
    .executableTarget(
      name: "tensor-bench",
      dependencies: ["MeshTensor", "COpenBLAS"],
      path: "bench/tensor",
      exclude: ["run", "cnn.py", "cnn_torch.py"]
    ),
    .executableTarget(
      name: "pipeline-bench",
      dependencies: ["MeshOps", "MeshPipeline", "MeshProto", "MeshRPC", "MeshTensor", "MeshWire"],
      path: "bench/pipeline",
      exclude: ["run"]
    ),
    .executableTarget(
      name: "ps-bench",
      dependencies: ["MeshPS", "MeshPSClient", "MeshRPC", "MeshProto", "MeshTensor", "MeshWire"],
      path: "bench/ps",
      exclude: ["run"]
    ),
    .executableTarget(
      name: "rpc-bench",
      dependencies: ["MeshOps", "MeshRPC", "MeshProto", "MeshWire"],
      path: "bench/rpc",
      exclude: ["reference", "run"]
    ),
    .target(
      name: "MeshTestSupport",
      dependencies: ["MeshOps", "MeshProto", "MeshRPC", "MeshWire"],
      path: "Tests/MeshTestSupport"
    ),
    .testTarget(name: "MeshTensorTests", dependencies: ["MeshTensor"]),
    .testTarget(name: "MeshPipelineTests", dependencies: ["MeshPipeline"]),
    .testTarget(
      name: "MeshPartitionTests",
      dependencies: [
        "MeshPartition", "MeshProto", "MeshPS", "MeshPSClient", "MeshRPC", "MeshTensor", "MeshTestSupport", "MeshWire",
      ]
    ),
    .testTarget(
      name: "MeshInProcessTests", dependencies: ["MeshInProcess", "MeshPartition", "MeshProto", "MeshRPC", "MeshWire"]
    ),
    .testTarget(
      name: "MeshWireTests",
      dependencies: [
        "MeshWire", "MeshData", "MeshProto", "MeshRPC", "MeshTensor", "MeshTestSupport",
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "SwiftProtobufPluginLibrary", package: "swift-protobuf"),
      ]
    ),
    .testTarget(name: "MeshOpsTests", dependencies: ["MeshOps", "MeshProto", "MeshRPC", "MeshWire", "MeshTestSupport"]),
    .testTarget(name: "MeshCheckpointTests", dependencies: ["MeshCheckpoint", "MeshTensor"]),
    .testTarget(name: "MeshPSClientTests", dependencies: ["MeshPSClient", "MeshProto", "MeshRPC", "MeshTensor", "MeshWire"]),
    .testTarget(name: "MeshDataTests", dependencies: ["MeshData", "MeshTensor"]),
    .testTarget(
      name: "PipemeshCLITests", dependencies: ["MeshCheckpoint", "MeshOps", "MeshTestSupport", "MeshRPC", "MeshProto", "MeshTensor", "MeshWire"]
    ),
    .testTarget(
      name: "MeshCoordinatorTests",
      dependencies: [
        "MeshCheckpoint", "MeshCoordinator", "MeshInProcess", "MeshTensor", "MeshWire", "MeshProto", "MeshRPC",
        "MeshTestSupport", "MeshData",
        "MeshOps", "MeshPS", "MeshPSClient", "MeshPartition",
      ]
    ),
    .testTarget(
      name: "MeshPSTests",
      dependencies: ["MeshPS", "MeshPSClient", "MeshTensor", "MeshWire", "MeshCheckpoint", "MeshProto", "MeshRPC", "MeshTestSupport"]
    ),
    .testTarget(
      name: "MeshProtoTests",
      dependencies: ["MeshProto", "MeshRPC", "MeshTestSupport", "MeshWire"]
    ),
    .testTarget(
      name: "MeshRPCTests",
      dependencies: [
        "MeshRPC", "MeshProto", "MeshOps", "MeshTestSupport", "MeshWire",
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
      ]
    ),
  ],
  cxxLanguageStandard: .cxx17
)
