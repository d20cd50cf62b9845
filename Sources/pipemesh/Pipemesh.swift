import ArgumentParser
import MeshOps
import MeshRPC
import MeshTensor

@main
struct Pipemesh: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "pipemesh",
    abstract: "Train and serve neural networks split across machines.",
    discussion: """
      A mesh of gRPC services: parameter servers (ps) hold the variables, partitions each hold one \
      pipeline stage, a coordinator pipelines micro-batches through them. Every option of a service \
      can also be set by an environment variable, PIPEMESH_ and the option's name in capitals \
      (--checkpoint-dir is PIPEMESH_CHECKPOINT_DIR), as systemd units and the Helm chart do.
      """,
    version: pipemeshVersion,
    subcommands: [
      Up.self, Serve.self, Train.self, Sweep.self, Solve.self, Infer.self, Generate.self, Plan.self, Status.self,
      Jobs.self,
      Cancel.self,
      Models.self,
      Certs.self,
    ])

  static func main() async {
    BLAS.takeTheCPUsKernels()
    Subnormals.flushToZero()
    await main(nil)
  }
}
