// tensor-bench: throughput of MeshTensor's hot paths against direct OpenBLAS calls in the same
// run, and (`--cnn`) one CNN training run for bench/tensor/cnn.py to set against PyTorch. Run with
// `bench/tensor/run`. Not a test: it asserts nothing and prints figures for docs/tensor.md.
import COpenBLAS
import Foundation
import MeshTensor

/// Best-of-`repeats` seconds per call of `body`, after one warm-up call.
func secondsPerCall(iterations: Int, repeats: Int = 5, _ body: () -> Void) -> Double {
  body()
  var best = Double.infinity
  for _ in 0..<repeats {
    let start = ContinuousClock.now
    for _ in 0..<iterations { body() }
    let elapsed = ContinuousClock.now - start
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
    best = min(best, seconds / Double(iterations))
  }
  return best
}

func format(_ value: Double, _ digits: Int = 2) -> String {
  let scale = (0..<digits).reduce(1.0) { value, _ in value * 10 }
  return "\((value * scale).rounded() / scale)"
}

/// MeshTensor matmul versus cblas_sgemm into a preallocated buffer, square n×n.
func benchSgemm(n: Int, threads: Int) {
  BLAS.setThreadCount(threads)
  let a = Tensor.randomUniform([n, n], seed: 1)
  let b = Tensor.randomUniform([n, n], seed: 2)
  let aScalars = a.scalars
  let bScalars = b.scalars
  var c = [Float](repeating: 0, count: n * n)
  let flops = 2 * Double(n * n * n)
  let iterations = max(1, Int(2e9 / flops))
  let direct = secondsPerCall(iterations: iterations) {
    c.withUnsafeMutableBufferPointer { out in
      cblas_sgemm(
        CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(n), Int32(n), 1,
        aScalars, Int32(n), bScalars, Int32(n), 0, out.baseAddress, Int32(n))
    }
  }
  let mesh = secondsPerCall(iterations: iterations) {
    _ = Tensor.matmul(a, b)
  }
  print(
    "sgemm \(n)x\(n)x\(n) threads=\(threads): direct \(format(flops / direct / 1e9)) GFLOP/s, "
      + "MeshTensor.matmul \(format(flops / mesh / 1e9)) GFLOP/s, ratio \(format(direct / mesh, 3))")
}

/// One Dense layer (1024→1024, ReLU) forward + backward at batch 256 versus its three sgemms.
func benchDense(threads: Int) throws {
  BLAS.setThreadCount(threads)
  let model = try Sequential(
    spec: ModelSpec(
      inputShape: [1024], layers: [.dense(inputSize: 1024, outputSize: 1024, activation: .relu)],
      loss: .meanSquaredError, seed: 1))
  let variables = model.initialVariables()
  let input = Tensor.randomUniform([256, 1024], lowerBound: -1, upperBound: 1, seed: 2)
  let upstream = Tensor.ones([256, 1024])
  let layer = secondsPerCall(iterations: 5) {
    let stage = model.forwardStage(input, variables: variables, layers: 0..<1, context: .inference)
    _ = stage.backward(upstream)
  }
  let x = input.scalars
  let w = variables["dense0/kernel"]!.scalars
  let g = upstream.scalars
  var y = [Float](repeating: 0, count: 256 * 1024)
  var dx = y
  var dw = [Float](repeating: 0, count: 1024 * 1024)
  let raw = secondsPerCall(iterations: 5) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 256, 1024, 1024, 1, x, 1024, w, 1024, 0, &y, 1024)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 256, 1024, 1024, 1, g, 1024, w, 1024, 0, &dx, 1024)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, 1024, 1024, 256, 1, x, 1024, g, 1024, 0, &dw, 1024)
  }
  let flops = 3 * 2 * 256.0 * 1024 * 1024
  print(
    "dense 1024x1024 batch 256 fwd+bwd threads=\(threads): \(format(layer * 1e3)) ms "
      + "(\(format(flops / layer / 1e9)) GFLOP/s); its 3 sgemms alone \(format(raw * 1e3)) ms; ratio \(format(raw / layer, 3))"
  )
}

/// inputSize-1024-1024-1024-10 with ReLU and softmax cross-entropy.
func classifierMLP(inputSize: Int, hiddenLayers: Int = 3) throws -> Sequential {
  let hidden = (0..<hiddenLayers).map { index in
    LayerSpec.dense(inputSize: index == 0 ? inputSize : 1024, outputSize: 1024, activation: .relu)
  }
  return try Sequential(
    spec: ModelSpec(
      inputShape: [inputSize], layers: hidden + [.dense(inputSize: 1024, outputSize: 10, activation: .linear)],
      loss: .softmaxCrossEntropy, seed: 1))
}

/// A full training step (forward, softmax cross-entropy, backward, Adam) of 784-1024-1024-1024-10.
func benchMLP(threads: Int) throws {
  BLAS.setThreadCount(threads)
  let model = try classifierMLP(inputSize: 784)
  var variables = model.initialVariables()
  var slots: [String: [String: Tensor]] = [:]
  let optimizer = Adam(learningRate: .constant(1e-3))
  let input = Tensor.randomUniform([256, 784], seed: 3)
  let labels = Tensor(shape: [256], scalars: (0..<256).map { Float($0 % 10) })
  var step = 0
  let seconds = secondsPerCall(iterations: 5) {
    step += 1
    let result = model.lossAndGradients(
      input: input, target: labels, variables: variables, context: ForwardContext(training: true))
    optimizer.update(&variables, along: result.gradients, slots: &slots, step: step)
  }
  // Forward and weight-gradient products for every layer; no input gradient for the first layer.
  let flops = 2 * 256.0 * Double(3 * (1024 * 1024 * 2 + 1024 * 10) + 2 * 784 * 1024)
  print(
    "mlp 784-1024-1024-1024-10 batch 256 train step (Adam) threads=\(threads): \(format(seconds * 1e3)) ms, "
      + "\(format(256 / seconds, 0)) samples/s (\(format(flops / seconds / 1e9)) GFLOP/s in matmuls)")
}

/// Conv2D (16→32 channels, 3×3, padding 1, ReLU) on 32×32 images, batch 32, forward + backward.
func benchConv(threads: Int) throws {
  BLAS.setThreadCount(threads)
  let model = try Sequential(
    spec: ModelSpec(
      inputShape: [16, 32, 32],
      layers: [.conv2d(inputChannels: 16, outputChannels: 32, kernelSize: 3, stride: 1, padding: 1, activation: .relu)],
      loss: .meanSquaredError, seed: 1))
  let variables = model.initialVariables()
  let input = Tensor.randomUniform([32, 16, 32, 32], seed: 2)
  let upstream = Tensor.ones([32, 32, 32, 32])
  let forward = secondsPerCall(iterations: 3) { _ = model(input, variables: variables) }
  let both = secondsPerCall(iterations: 3) {
    _ = model.forwardStage(input, variables: variables, layers: 0..<1, context: .inference).backward(upstream)
  }
  let flops = 2 * 32.0 * 32 * 32 * 32 * 16 * 9
  print(
    "conv2d 16->32 3x3 pad 1 on 32x32 batch 32 threads=\(threads): forward \(format(forward * 1e3)) ms "
      + "(\(format(flops / forward / 1e9)) GFLOP/s), forward+backward \(format(both * 1e3)) ms "
      + "(\(format(3 * flops / both / 1e9)) GFLOP/s)")
}

/// The pipeline issue's CNN (3×32×32 input, conv 32 – max pool 2 – conv 64 – max pool 2 – dense 256 –
/// dense 10, softmax cross-entropy, SGD 0.01): one process trains it on random data, as
/// `bench/tensor/cnn_torch.py` does in PyTorch. Returns the samples/s of each of `windows` windows
/// of `steps` steps, after `warmup` steps.
func cnnTrainingWindows(threads: Int, batch: Int, windows: Int, steps: Int, warmup: Int) throws -> [Double] {
  BLAS.setThreadCount(threads)
  let model = try Sequential(
    spec: ModelSpec(
      inputShape: [3, 32, 32],
      layers: [
        .conv2d(inputChannels: 3, outputChannels: 32, kernelSize: 3, stride: 1, padding: 1, activation: .relu),
        .maxPool2d(size: 2, stride: 2),
        .conv2d(inputChannels: 32, outputChannels: 64, kernelSize: 3, stride: 1, padding: 1, activation: .relu),
        .maxPool2d(size: 2, stride: 2),
        .flatten,
        .dense(inputSize: 64 * 8 * 8, outputSize: 256, activation: .relu),
        .dense(inputSize: 256, outputSize: 10, activation: .linear),
      ],
      loss: .softmaxCrossEntropy, seed: 1))
  var variables = model.initialVariables()
  var slots: [String: [String: Tensor]] = [:]
  let optimizer = SGD(learningRate: .constant(0.01))
  let data: [(images: Tensor, labels: Tensor)] = (0..<8).map { (index: Int) in
    let labels: [Float] = (0..<batch).map { row in Float((row * 7 + index) % 10) }
    let images = Tensor.randomUniform([batch, 3, 32, 32], lowerBound: -1, upperBound: 1, seed: UInt64(index + 1))
    return (images, Tensor(shape: [batch], scalars: labels))
  }
  var step = 0
  func trainOneStep() {
    let (images, labels) = data[step % data.count]
    step += 1
    let result = model.lossAndGradients(
      input: images, target: labels, variables: variables, context: ForwardContext(training: true))
    optimizer.update(&variables, along: result.gradients, slots: &slots, step: step)
  }
  for _ in 0..<warmup { trainOneStep() }
  return (0..<windows).map { _ in
    let start = ContinuousClock.now
    for _ in 0..<steps { trainOneStep() }
    let elapsed = ContinuousClock.now - start
    return Double(batch * steps) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18)
  }
}

/// An MLP of four hidden layers (1536-1024-1024-1024-1024-10, one BLAS thread): forward and backward of a whole step
/// of 256 or 1,024 examples in M micro-batches with the gradients summed as a stage sums them, in one process, so
/// that the cost of smaller products is seen apart from any RPC.
func benchMicroBatches() throws {
  BLAS.setThreadCount(1)
  let model = try classifierMLP(inputSize: 1536, hiddenLayers: 4)
  let variables = model.initialVariables()
  for batch in [256, 1024] {
    let input = Tensor.randomUniform([batch, 1536], seed: 3)
    let labels = Tensor(shape: [batch], scalars: (0..<batch).map { Float($0 % 10) })
    for microBatches in [1, 2, 4, 8] {
      let rows = batch / microBatches
      let seconds = secondsPerCall(iterations: 3) {
        var summed: [String: Tensor] = [:]
        for index in 0..<microBatches {
          let range = (index * rows)..<((index + 1) * rows)
          let target = labels.slice(axis: 0, range: range)
          let stage = model.forwardStage(
            input.slice(axis: 0, range: range), variables: variables, layers: 0..<5,
            context: ForwardContext(training: true), inputGradient: false)
          let (_, lossGradient) = Autodiff.valueWithGradient(at: [stage.output]) {
            model.loss(output: $0[0], target: target)
          }
          _ = stage.backward(lossGradient[0], addingInto: &summed)
        }
      }
      print(
        "mlp 1536-1024-1024-1024-1024-10 batch \(batch) as \(microBatches) micro-batches of \(rows) rows, "
          + "forward+backward: \(format(seconds * 1e3)) ms")
    }
  }
  for rows in [32, 64, 128, 256] {
    let a = Tensor.randomUniform([rows, 1024], seed: 1)
    let b = Tensor.randomUniform([1024, 1024], seed: 2)
    let seconds = secondsPerCall(iterations: 20) { _ = Tensor.matmul(a, b) }
    print("sgemm \(rows)x1024x1024 threads=1: \(format(2 * Double(rows) * 1024 * 1024 / seconds / 1e9)) GFLOP/s")
  }
}

/// The host's 1-minute load average, to judge how much of the machine the figures had.
func loadAverage() -> String {
  (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").first.map(String.init)
    ?? "unknown"
}

/// The middle value (the mean of the two middle ones for an even count), as Python's
/// `statistics.median` gives it for the PyTorch side.
func median(_ values: [Double]) -> Double {
  let sorted = values.sorted()
  let middle = sorted.count / 2
  return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}

/// The value after `flag` on the command line, or `fallback`.
func option(_ flag: String, _ fallback: Int) -> Int {
  guard let index = CommandLine.arguments.firstIndex(of: flag), index + 1 < CommandLine.arguments.count,
    let value = Int(CommandLine.arguments[index + 1])
  else { return fallback }
  return value
}

BLAS.takeTheCPUsKernels()
if CommandLine.arguments.contains("--cnn") {
  // One JSON line, the same fields as bench/tensor/cnn_torch.py prints (bench/tensor/run --cnn).
  let windows = try cnnTrainingWindows(
    threads: option("--threads", 1), batch: option("--batch", 64), windows: option("--windows", 5),
    steps: option("--steps", 20), warmup: option("--warmup", 5))
  print(
    #"{"side": "pipemesh", "threads": \#(option("--threads", 1)), "kernels": "\#(BLAS.kernels)", "#
      + #""samples_per_second": \#(median(windows)), "windows": \#(windows)}"#)
  exit(0)
}
print(
  "OpenBLAS \(String(cString: openblas_get_config())), \(ProcessInfo.processInfo.activeProcessorCount) cores, load average \(loadAverage())"
)
for threads in [1, 2] {
  for n in [256, 512, 1024] { benchSgemm(n: n, threads: threads) }
}
for threads in [1, 2] { try benchDense(threads: threads) }
for threads in [1, 2] { try benchMLP(threads: threads) }
for threads in [1, 2] { try benchConv(threads: threads) }
for threads in [1, 2] {
  let windows = try cnnTrainingWindows(threads: threads, batch: 64, windows: 3, steps: 10, warmup: 3)
  print(
    "cnn 3x32x32 conv32-pool-conv64-pool-dense256-10 batch 64 train step (SGD) threads=\(threads): \(format(median(windows), 0)) samples/s (median of 3 windows)"
  )
}
try benchMicroBatches()
print("load average at end \(loadAverage())")
