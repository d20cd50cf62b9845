#!/usr/bin/env python3
"""TensorFlow's ParameterServerStrategy on 127.0.0.1: the reference for `bench/scale --against tensorflow`.

One ps task and --workers worker tasks, each a process of its own running a tf.distribute.Server
with --threads intra-op threads; the chief (this process) builds the MLP's variables on the ps
and schedules training steps on the workers with a ClusterCoordinator: each step reads the
weights from the ps, computes a batch's gradients on its worker and applies `assign_sub(lr * g)`
on the ps, asynchronously, as the strategy does. Random data, batch --batch per step.

After --warmup steps, --windows windows of --steps scheduled steps are timed (from the first
schedule to `join`); prints one JSON line: {"samples_per_second": median of the windows, ...}.

  python tf_ps.py '{"layers": [784, 1024, 1024, 1024, 10], "batch": 256, "workers": 2, ...}'
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import time


def free_ports(count):
    """Ports free on 127.0.0.1 now (held open together, so they differ)."""
    sockets = []
    for _ in range(count):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        sockets.append(probe)
    ports = [probe.getsockname()[1] for probe in sockets]
    for probe in sockets:
        probe.close()
    return ports


def serve(task, cluster, threads):
    """Runs one ps or worker task until it is killed."""
    import tensorflow as tf

    job, index = task.split(":")
    # Two inter-op threads: with one, a worker waiting on a read from the ps can block the op that serves it.
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=2)
    server = tf.distribute.Server(tf.train.ClusterSpec(cluster), job_name=job, task_index=int(index),
                                  protocol="grpc", config=config, start=True)
    print("serving", flush=True)
    server.join()


def train(options, cluster):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type="chief", task_id=0, rpc_layer="grpc")
    strategy = tf.distribute.experimental.ParameterServerStrategy(resolver)
    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
    layers, batch, rate = options["layers"], options["batch"], options["lr"]
    with strategy.scope():
        kernels = [tf.Variable(tf.random.uniform((m, n), -(6 / (m + n)) ** 0.5, (6 / (m + n)) ** 0.5, seed=i))
                   for i, (m, n) in enumerate(zip(layers[:-1], layers[1:]))]
        biases = [tf.Variable(tf.zeros((n,))) for n in layers[1:]]
    variables = kernels + biases

    def examples():
        inputs = tf.random.normal((8 * batch, layers[0]), seed=1)
        labels = tf.random.uniform((8 * batch,), 0, layers[-1], dtype=tf.int32, seed=2)
        return tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(batch, drop_remainder=True).repeat()

    batches = iter(coordinator.create_per_worker_dataset(examples))

    @tf.function
    def step(iterator):
        def on_worker(inputs, labels):
            with tf.GradientTape() as tape:
                activations = inputs
                for index, (kernel, bias) in enumerate(zip(kernels, biases)):
                    activations = tf.matmul(activations, kernel) + bias
                    if index < len(kernels) - 1:
                        activations = tf.nn.relu(activations)
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=activations))
            for variable, gradient in zip(variables, tape.gradient(loss, variables)):
                variable.assign_sub(rate * gradient)
            return loss

        inputs, labels = next(iterator)
        return strategy.run(on_worker, args=(inputs, labels))

    for _ in range(options["warmup"]):
        coordinator.schedule(step, args=(batches,))
    coordinator.join()
    windows = []
    for _ in range(options["windows"]):
        started = time.perf_counter()
        for _ in range(options["steps"]):
            coordinator.schedule(step, args=(batches,))
        coordinator.join()
        windows.append(options["steps"] * batch / (time.perf_counter() - started))
    return {"samples_per_second": statistics.median(windows), "windows": windows, "tensorflow": tf.__version__}


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], json.loads(sys.argv[3]), int(os.environ["PIPEMESH_BENCH_TF_THREADS"]))
        return
    options = {"layers": [784, 1024, 1024, 1024, 10], "batch": 256, "workers": 2, "threads": 1, "lr": 0.01,
               "warmup": 10, "windows": 5, "steps": 40, **json.loads(sys.argv[1])}
    ports = free_ports(options["workers"] + 2)
    cluster = {"chief": [f"127.0.0.1:{ports[0]}"], "ps": [f"127.0.0.1:{ports[1]}"],
               "worker": [f"127.0.0.1:{port}" for port in ports[2:]]}
    os.environ.update(TF_CPP_MIN_LOG_LEVEL="2", GRPC_FAIL_FAST="use_caller")
    environment = dict(os.environ, PIPEMESH_BENCH_TF_THREADS=str(options["threads"]))
    tasks = ["ps:0"] + [f"worker:{index}" for index in range(options["workers"])]
    servers = [subprocess.Popen([sys.executable, __file__, "--serve", task, json.dumps(cluster)],
                                stdout=subprocess.PIPE, env=environment, text=True) for task in tasks]
    try:
        for server in servers:
            if server.stdout.readline().strip() != "serving":
                raise SystemExit(f"a TensorFlow task exited before serving ({server.poll()})")
        print(json.dumps(train(options, cluster)), flush=True)
    finally:
        for server in servers:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
