#!/usr/bin/env python3
"""bench/scale: a model too big for one message, on a local mesh against PyTorch in one process.

Each round runs, one after the other: PyTorch with 1 thread, PyTorch with 2 threads, and Pipemesh
(ps tasks, one partition per stage with 1 BLAS thread, a coordinator, `pipemesh train`), all on
the same MLP, batch, optimizer and random data. It reports samples/s (medians over rounds, and the
median of per-round ratios) and each process's peak resident memory (VmHWM) against the
parameters it holds. Prints one JSON object per line, then a Markdown table.

  bench/scale/run                          MLP 784-8192-8192-8192-10 (141 M parameters), 2 rounds
  bench/scale/run --quick                  a smaller MLP, 1 round: checks that it works
  bench/scale/run --layers 784,4096,4096,10 --stages 2 --ps 2 --rounds 3
  bench/scale/run --bigger                 MLP 784-12288-12288-12288-10 (312 M parameters), every
                                           process limited to 2 GiB: PyTorch does not fit, the mesh does

--against pipelining compares instead with torch.distributed.pipelining: 2 processes of 1 thread
over gloo on 127.0.0.1, the model split where the mesh's planner splits it at whole layers (the
mesh itself may split inside a layer, which torch pipelining cannot), the same schedule
(GPipe or 1F1B) and micro-batches; Pipemesh's figure is also given without its last step, whose
commit hands the variables to the ps (PyTorch keeps them where they are), and for Pipemesh held
to whole layers (`--whole-layers`, PyTorch's split) in the same rounds, which shows what its split
inside a layer gains.

--against tensorflow compares data parallelism instead: TensorFlow's ParameterServerStrategy (1 ps
task and --replicas workers of 1 thread each, asynchronous, bench/scale/tf_ps.py) against Pipemesh
with --replicas replicas of one stage on one ps task (--consistency async by default).

--against ddp compares synchronous data parallelism: PyTorch's DistributedDataParallel (gloo,
--replicas ranks of 1 thread) against Pipemesh's --replicas sync replicas of one stage reducing
their gradients by ring (`--reduction ring`) and by the ps, in the same rounds.

--memory-limit-mib runs each process (PyTorch, each ps task and partition) in a memory cgroup of its
own with that limit (cgroup v2, or v1's memory controller; needs root), so a process over it is
killed as the kernel would kill it in a container.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import benchmesh  # noqa: E402  (bench/benchmesh.py)

# PyTorch's MLP of `layers` (Linear, ReLU between): the start of the benches' PyTorch scripts.
TORCH_MLP = r"""
import torch
def torch_mlp(layers):
    torch.manual_seed(0)
    mods = []
    for i, (a, b) in enumerate(zip(layers[:-1], layers[1:])):
        mods.append(torch.nn.Linear(a, b))
        if i < len(layers) - 2:
            mods.append(torch.nn.ReLU())
    return torch.nn.Sequential(*mods)
"""

TORCH_RUN = TORCH_MLP + r"""
import json, resource, sys, time
layers, batch, steps, threads, lr, optimizer = json.loads(sys.argv[1])
torch.set_num_threads(threads)
model = torch_mlp(layers)
opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(model.parameters(), lr=lr)
loss_fn = torch.nn.CrossEntropyLoss()
x, y = torch.randn(batch, layers[0]), torch.randint(0, layers[-1], (batch,))
def step():
    opt.zero_grad(set_to_none=True)
    loss_fn(model(x), y).backward()
    opt.step()
step()
started = time.perf_counter()
for _ in range(steps):
    step()
elapsed = time.perf_counter() - started
print(json.dumps({"samples_per_second": batch * steps / elapsed,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""

# The end of a distributed rank's script: a warm-up step, then `steps` timed between barriers;
# prints samples/s over `examples_per_step`.
TORCH_RANK_TIMING = r"""
step()
dist.barrier()
started = time.perf_counter()
for _ in range(steps):
    step()
elapsed = time.perf_counter() - started
dist.barrier()
dist.destroy_process_group()
print(json.dumps({"samples_per_second": examples_per_step * steps / elapsed}))
"""

# torch.distributed.pipelining with 2 ranks over gloo on 127.0.0.1, one thread each: the model
# split as the mesh splits it, the same schedule and micro-batches; run once per rank.
TORCH_PIPELINE = TORCH_MLP + r"""
import json, os, sys, time
import torch.distributed as dist
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe
layers, batch, steps, micro_batches, schedule, split, lr, rank, port = json.loads(sys.argv[1])
torch.set_num_threads(1)
os.environ["GLOO_SOCKET_IFNAME"] = "lo"
dist.init_process_group("gloo", rank=rank, world_size=2, init_method=f"tcp://127.0.0.1:{port}")
model = torch_mlp(layers)
# Stage 0 holds the first `split` linear layers and the ReLU after each.
part = model[:2 * split] if rank == 0 else model[2 * split:]
example = torch.randn(batch // micro_batches, layers[0] if rank == 0 else layers[split])
stage = PipelineStage(part, rank, 2, torch.device("cpu"), input_args=(example,))
kind = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}[schedule]
pipeline = kind(stage, n_microbatches=micro_batches, loss_fn=torch.nn.CrossEntropyLoss())
opt = torch.optim.SGD(part.parameters(), lr=lr)
x, y = torch.randn(batch, layers[0]), torch.randint(0, layers[-1], (batch,))
examples_per_step = batch
def step():
    opt.zero_grad(set_to_none=True)
    if rank == 0:
        pipeline.step(x)
    else:
        pipeline.step(target=y, losses=[])
    opt.step()
""" + TORCH_RANK_TIMING

# torch.nn.parallel.DistributedDataParallel over gloo on 127.0.0.1, one thread per rank, each rank
# a batch of its own per step (its gradients all-reduced in buckets while backward runs); run once
# per rank. Samples/s over every rank, as rank 0 measured them.
TORCH_DDP = TORCH_MLP + r"""
import json, os, sys, time
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
layers, batch, steps, lr, rank, world, port = json.loads(sys.argv[1])
torch.set_num_threads(1)
os.environ["GLOO_SOCKET_IFNAME"] = "lo"
dist.init_process_group("gloo", rank=rank, world_size=world, init_method=f"tcp://127.0.0.1:{port}")
model = DistributedDataParallel(torch_mlp(layers))
opt = torch.optim.SGD(model.parameters(), lr=lr)
loss_fn = torch.nn.CrossEntropyLoss()
torch.manual_seed(rank)
x, y = torch.randn(batch, layers[0]), torch.randint(0, layers[-1], (batch,))
examples_per_step = world * batch
def step():
    opt.zero_grad(set_to_none=True)
    loss_fn(model(x), y).backward()
    opt.step()
""" + TORCH_RANK_TIMING


class MemoryLimit:
    """A memory cgroup with a limit, which a command starts in (so everything it allocates counts)."""

    def __init__(self, name, limit_bytes):
        if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
            self.path, files = f"/sys/fs/cgroup/pipemesh-scale-{name}", ["memory.max", "memory.swap.max"]
        else:
            self.path, files = f"/sys/fs/cgroup/memory/pipemesh-scale-{name}", ["memory.limit_in_bytes",
                                                                              "memory.memsw.limit_in_bytes"]
        os.makedirs(self.path, exist_ok=True)
        for index, file in enumerate(files):
            target = os.path.join(self.path, file)
            if os.path.exists(target):  # no swap either: over the limit is killed, not paged out
                with open(target, "w") as f:
                    f.write(str(limit_bytes) if index == 0 or "memsw" in file else "0")

    def command(self, argv):
        return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', self.path] + argv

    def remove(self):
        try:
            os.rmdir(self.path)
        except OSError:
            pass


def limited(a, name, argv):
    """argv in a cgroup of its own when the run limits memory; returns the command and the cgroup."""
    if not a.memory_limit_mib:
        return argv, None
    limit = MemoryLimit(name, a.memory_limit_mib << 20)
    return limit.command(argv), limit


def torch_run(a, layers, threads):
    argv, limit = limited(a, f"torch{threads}", [a.python, "-c", TORCH_RUN,
                                                 json.dumps([layers, a.batch, a.steps, threads, a.lr, a.optimizer])])
    try:
        run = subprocess.run(argv, capture_output=True, text=True)
    finally:
        if limit:
            limit.remove()
    if run.returncode in (-9, 137) and a.memory_limit_mib:
        return {"samples_per_second": None, "killed": f"killed at the {a.memory_limit_mib} MiB limit"}
    if run.returncode != 0:
        raise RuntimeError(f"PyTorch failed ({run.returncode}): {run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def torch_pipeline_run(a, layers, split):
    """torch.distributed.pipelining on 2 ranks; samples/s as the last stage measured them."""
    return torch_ranks(a, "pipelining", TORCH_PIPELINE, 2, reporting=1, arguments=lambda rank, port: [
        layers, a.batch, a.steps, a.micro_batches, a.schedule, split, a.lr, rank, port])


def torch_ranks(a, name, script, world, reporting, arguments):
    """`script` on `world` ranks of 1 thread over gloo on a free port, each given
    `arguments(rank, port)`; what rank `reporting` printed last."""
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    ranks = [subprocess.Popen([a.python, "-c", script, json.dumps(arguments(rank, port))],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for rank in range(world)]
    outputs = [rank.communicate(timeout=1800) for rank in ranks]
    for rank, (out, err) in zip(ranks, outputs):
        if rank.returncode != 0:
            raise RuntimeError(f"PyTorch {name} failed ({rank.returncode}): {err[-2000:]}")
    return json.loads(outputs[reporting][0].strip().splitlines()[-1])


def torch_ddp_run(a, layers):
    """DistributedDataParallel on a.replicas ranks of 1 thread; samples/s over every rank."""
    return torch_ranks(a, "DDP", TORCH_DDP, a.replicas, reporting=0, arguments=lambda rank, port: [
        layers, a.batch, a.steps, a.lr, rank, a.replicas, port])


def tensorflow_run(a, layers):
    """TensorFlow's ParameterServerStrategy with a.replicas workers (bench/scale/tf_ps.py)."""
    options = {"layers": layers, "batch": a.batch, "workers": a.replicas, "threads": a.blas_threads, "lr": a.lr,
               "steps": max(10, a.steps), "windows": 3, "warmup": 5}
    run = subprocess.run([a.tf_python, os.path.join(os.path.dirname(__file__), "tf_ps.py"), json.dumps(options)],
                         capture_output=True, text=True, timeout=1800)
    if run.returncode != 0:
        raise RuntimeError(f"TensorFlow failed ({run.returncode}): {run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


class Service(benchmesh.Service):
    """One `pipemesh serve` process, in a memory cgroup of its own under --memory-limit-mib."""

    def __init__(self, a, role, args, log_dir, name, env=None, listen="127.0.0.1:0"):
        argv, self.limit = limited(a, name, [a.pipemesh, "serve", role, "--listen", listen] + args)
        super().__init__(argv, role, os.path.join(log_dir, f"{name}.log"), name, env)

    def stop(self):
        super().stop()
        if self.limit:
            self.limit.remove()


class MeshMemory:
    """Samples the services' summed resident memory every 20 ms: the mesh's peak at one moment."""

    def __init__(self, services):
        self.services, self.peak, self.stopped = services, 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopped.wait(0.02):
            self.peak = max(self.peak, sum(s.status_bytes("VmRSS") for s in self.services))

    def stop(self):
        self.stopped.set()
        self.thread.join()
        return self.peak


def pipemesh_run(a, work, round_index, stage_parameters, options=(), label=""):
    """Trains steps+1 batches on a fresh mesh; the first step is the warm-up. `options` go to
    `pipemesh train`; `label` names the run's logs, job and trace beside others of the round."""
    logs = os.path.join(work, f"logs-round{round_index}{label}")
    os.makedirs(logs, exist_ok=True)
    services = []
    try:
        env = dict(pair.split("=", 1) for pair in a.service_env)
        ps = [Service(a, "ps", [], logs, f"ps{i}", env) for i in range(a.ps)]
        services += ps
        budget = ["--memory-budget-mib", str(a.partition_budget_mib)] if a.partition_budget_mib else []
        threads = ["--blas-threads", str(a.blas_threads)]
        partitions = [Service(a, "partition", threads + budget, logs, f"partition{i}", env)
                      for i in range(a.stages * a.replicas)]
        services += partitions
        # Stage by stage, each stage's replicas: "s0r0,s0r1;s1r0,s1r1".
        layout = ";".join(",".join(p.endpoint for p in partitions[s * a.replicas:(s + 1) * a.replicas])
                          for s in range(a.stages))
        coordinator = Service(a, "coordinator",
                              ["--ps", ",".join(s.endpoint for s in ps), "--partitions", layout, "--data-dir", work],
                              logs, "coordinator")
        services.append(coordinator)
        sampler = MeshMemory(list(services))
        train = subprocess.run(
            [a.pipemesh, "train", "--coordinator", coordinator.endpoint, "--model", os.path.join(work, "model.json"),
             "--dataset", "data.npz", "--epochs", "1", "--batch-size", str(a.batch),
             "--micro-batches", str(a.micro_batches), "--schedule", a.mesh_schedule or a.schedule, "--optimizer", a.optimizer, "--learning-rate", str(a.lr),
             "--replicas", str(a.replicas), "--consistency", a.consistency,
             "--validation", "0", "--job", f"scale{round_index}{label}", "--json", *options],
            capture_output=True, text=True, timeout=3600)
        mesh_peak = sampler.stop()
        if train.returncode != 0:
            raise RuntimeError(f"pipemesh train failed ({train.returncode}): {train.stderr[-2000:]}")
        steps = [json.loads(line) for line in train.stdout.splitlines() if line.startswith("{")]
        if a.trace:
            with open(f"{a.trace}.round{round_index}{label}.json", "w") as out:
                out.write(next((s["traceJson"] for s in reversed(steps) if s.get("traceJson")), "{}"))
        steps = [s for s in steps if s.get("samplesPerSecond") and not s.get("done") and not s.get("evaluated")]
        measured = steps[1:]  # the first step includes the first pulls
        examples = a.batch * a.replicas  # a step's, over every replica
        seconds = sum(examples / s["samplesPerSecond"] for s in measured)
        memory = {s.name: s.peak_rss_bytes() for s in services}
        return {
            "samples_per_second": examples * len(measured) / seconds,
            # Without the last step, whose commit also hands the variables to the ps.
            "steady_samples_per_second": (examples * (len(measured) - 1)
                                          / (seconds - examples / measured[-1]["samplesPerSecond"])
                                          if len(measured) > 1 else None),
            "step_seconds": [round(examples / s["samplesPerSecond"], 3) for s in steps],
            "peak_rss_bytes": memory,
            "mesh_peak_rss_bytes": mesh_peak,
            "parameter_bytes": {**{f"partition{i}": 4 * p for i, p in enumerate(stage_parameters)},
                                **{f"ps{i}": 4 * sum(stage_parameters) / a.ps for i in range(a.ps)}},
        }
    finally:
        for service in reversed(services):
            service.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pipemesh", required=True)
    parser.add_argument("--python", default=sys.executable, help="a Python with torch and numpy")
    parser.add_argument("--layers", default="784,8192,8192,8192,10")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6, help="measured steps per run, after one warm-up step")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stages", type=int, default=2)
    parser.add_argument("--ps", type=int, default=2)
    parser.add_argument("--micro-batches", type=int, default=2)
    parser.add_argument("--schedule", default="1f1b", help="gpipe, 1f1b or zb-h1")
    parser.add_argument("--mesh-schedule", default=None,
                        help="the schedule Pipemesh runs when it differs from --schedule's (PyTorch's): "
                             "2bw against PyTorch's 1f1b")
    parser.add_argument("--blas-threads", type=int, default=1, help="OpenBLAS threads per partition")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"], help="the same on both sides")
    parser.add_argument("--service-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the ps tasks and partitions (to try allocator settings)")
    parser.add_argument("--memory-limit-mib", type=int, default=0,
                        help="run each process in a memory cgroup with this limit (0: none)")
    parser.add_argument("--partition-budget-mib", type=int, default=0,
                        help="--memory-budget-mib for the partitions (0: their default, half their memory)")
    parser.add_argument("--trace", metavar="PREFIX",
                        help="write each round's step timeline (Chrome trace JSON) to PREFIX.roundN.json")
    parser.add_argument("--replicas", type=int, default=1, help="data-parallel replicas of each stage")
    parser.add_argument("--consistency", default=None, help="sync, async or bounded:K (async with tensorflow)")
    parser.add_argument("--tf-python", help="a Python with tensorflow-cpu (bench/tf-venv), for --against tensorflow")
    parser.add_argument("--against", default="threads", choices=["threads", "pipelining", "tensorflow", "ddp"],
                        help="PyTorch in one process with 1 and 2 threads, or torch.distributed.pipelining on 2 "
                             "ranks of 1 thread with the mesh's split, schedule (gpipe or 1f1b) and micro-batches, "
                             "or DistributedDataParallel on --replicas ranks of 1 thread (Pipemesh's sync "
                             "replicas reducing by ring and by the ps)"),
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--bigger", action="store_true")
    a = parser.parse_args()
    if a.quick:
        a.layers, a.steps, a.rounds = "784,2048,2048,10", 3, 1
    if a.bigger:
        a.layers, a.steps, a.rounds = "784,12288,12288,12288,10", 3, 1
        a.memory_limit_mib, a.partition_budget_mib = a.memory_limit_mib or 2048, a.partition_budget_mib or 1900
    if a.against == "tensorflow":
        if a.stages != 1 or not a.tf_python:
            parser.error("--against tensorflow runs 1 stage (--stages 1) and needs --tf-python")
        a.replicas = a.replicas if a.replicas > 1 else 2
    if a.against == "ddp":
        if a.stages != 1 or (a.consistency or "sync") != "sync":
            parser.error("--against ddp runs 1 stage (--stages 1) of sync replicas")
        a.replicas = a.replicas if a.replicas > 1 else 2
    a.consistency = a.consistency or ("async" if a.against == "tensorflow" else "sync")
    layers = [int(v) for v in a.layers.split(",")]
    parameters = sum(x * y + y for x, y in zip(layers[:-1], layers[1:]))

    work = tempfile.mkdtemp(prefix="pipemesh-scale-")
    benchmesh.write_mlp(work, "scale", layers, a.batch * a.replicas * (a.steps + 1))
    def planned(*extra: str) -> dict:
        return json.loads(subprocess.run([a.pipemesh, "plan", "--model", os.path.join(work, "model.json"),
                                          "--stages", str(a.stages), "--json", *extra], check=True, capture_output=True,
                                         text=True).stdout)
    # The mesh splits where its planner does (inside a layer, when that balances the stages);
    # torch pipelining gets the best split at whole layers, the only kind it makes.
    plan = planned()
    stage_parameters = [int(s["parameters"]) for s in plan["stages"]]
    mesh_split = [f"{s.get('firstLayer', 0)}:{s.get('firstLayerInputs', 0)}" for s in plan["stages"][1:]]
    whole = planned("--whole-layers")
    whole_parameters = [int(s["parameters"]) for s in whole["stages"]]
    split = int(whole["stages"][1]["firstLayer"]) if len(whole["stages"]) > 1 else None
    if a.against == "pipelining" and (a.stages != 2 or a.schedule not in ("gpipe", "1f1b")):
        parser.error("--against pipelining runs 2 stages under gpipe or 1f1b")
    print(json.dumps({"layers": layers, "parameters": parameters, "batch": a.batch, "stages": a.stages,
                      "ps": a.ps, "microBatches": a.micro_batches, "schedule": a.schedule,
                      "meshSchedule": a.mesh_schedule or a.schedule, "steps": a.steps, "rounds": a.rounds,
                      "stageParameters": stage_parameters, "split": split, "meshSplit": mesh_split, "work": work}),
          flush=True)

    rounds = []
    for index in range(a.rounds):
        row = {"round": index + 1}
        # Alternate who goes first, so drift in the machine's speed does not favour one side.
        order = {"threads": ["torch1", "torch2", "pipemesh"], "pipelining": ["pipelining", "pipemesh", "pipemesh_whole"],
                 "tensorflow": ["tensorflow", "pipemesh"], "ddp": ["ddp", "pipemesh_ring", "pipemesh"]}[a.against]
        for name in order if index % 2 == 0 else reversed(order):
            if name == "pipemesh":
                row[name] = pipemesh_run(a, work, index + 1, stage_parameters)
            elif name == "pipemesh_ring":
                row[name] = pipemesh_run(a, work, index + 1, stage_parameters, ["--reduction", "ring"], "-ring")
            elif name == "pipemesh_whole":
                row[name] = pipemesh_run(a, work, index + 1, whole_parameters, ["--whole-layers"], "-whole")
            elif name == "pipelining":
                row[name] = torch_pipeline_run(a, layers, split)
            elif name == "tensorflow":
                row[name] = tensorflow_run(a, layers)
            elif name == "ddp":
                row[name] = torch_ddp_run(a, layers)
            else:
                row[name] = torch_run(a, layers, int(name[-1]))
        rounds.append(row)
        print(json.dumps(row), flush=True)

    def fitted(key):
        return [r for r in rounds if r[key]["samples_per_second"]]

    def median(key):
        return statistics.median(r[key]["samples_per_second"] for r in fitted(key)) if fitted(key) else None

    def ratio(key, of="pipemesh"):
        pairs = [r for r in fitted(key) if r[of]["samples_per_second"]]
        return statistics.median(r[of]["samples_per_second"] / r[key]["samples_per_second"] for r in pairs)

    def row(label, key, against=None):
        if not fitted(key):
            return f"| {label} | does not fit: {rounds[-1][key]['killed']} | |"
        if against:
            return f"| {label} | {median(key):.1f} | {ratio(against, of=key):.2f}× |"
        return f"| {label} | {median(key):.1f} | {ratio(key):.2f}× |" if key != "pipemesh" else f"| {label} | {median(key):.1f} | |"

    if a.against == "tensorflow":
        steady = [r["pipemesh"]["steady_samples_per_second"] for r in rounds]
        print(f"\nMLP {'-'.join(map(str, layers))}, batch {a.batch} per replica and step, SGD {a.lr}; "
              f"{a.replicas} replicas of 1 thread, 1 ps task, {a.consistency}; medians of {a.rounds} rounds\n")
        print("| | samples/s | Pipemesh ÷ it (median of per-round ratios) |")
        print("| --- | --- | --- |")
        print(row(f"TensorFlow ParameterServerStrategy, {a.replicas} workers", "tensorflow"))
        print(row(f"Pipemesh, {a.replicas} replicas", "pipemesh"))
        if all(steady):
            ratios = [s / r["tensorflow"]["samples_per_second"] for s, r in zip(steady, rounds)]
            print(f"| Pipemesh without its last step (the Assign to the ps) | {statistics.median(steady):.1f} "
                  f"| {statistics.median(ratios):.2f}× |")
        return

    if a.against == "ddp":
        print(f"\nMLP {'-'.join(map(str, layers))}, batch {a.batch} per replica and step, SGD {a.lr}; "
              f"{a.replicas} replicas of 1 thread, sync; medians of {a.rounds} rounds of {a.steps} steps\n")
        print("| | samples/s | ÷ DistributedDataParallel (median of per-round ratios) |")
        print("| --- | --- | --- |")
        print(f"| PyTorch DistributedDataParallel (gloo), {a.replicas} ranks | {median('ddp'):.1f} | |")
        print(row(f"Pipemesh, {a.replicas} replicas reducing by ring", "pipemesh_ring", against="ddp"))
        print(row(f"Pipemesh, {a.replicas} replicas reducing by the ps", "pipemesh", against="ddp"))
        print(f"\nRing ÷ ps (median of per-round ratios): {ratio('pipemesh', of='pipemesh_ring'):.2f}×")
        return

    if a.against == "pipelining":
        steady = [r["pipemesh"]["steady_samples_per_second"] for r in rounds]
        print(f"\nMLP {'-'.join(map(str, layers))}, batch {a.batch}, SGD; 2 stages split before layer {split} "
              f"× {a.micro_batches} micro-batches ({a.schedule}), 1 thread each; medians of {a.rounds} rounds "
              f"of {a.steps} steps\n")
        print("| | samples/s | Pipemesh ÷ it (median of per-round ratios) |")
        print("| --- | --- | --- |")
        print(row(f"PyTorch pipelining ({a.schedule})", "pipelining"))
        mesh_schedule = f" ({a.mesh_schedule})" if a.mesh_schedule else ""
        print(row(f"Pipemesh{mesh_schedule}, split at {', '.join(mesh_split)}", "pipemesh"))
        if all(steady):
            ratios = [s / r["pipelining"]["samples_per_second"] for s, r in zip(steady, rounds)]
            print(f"| Pipemesh without its last step (the Assign to the ps) | {statistics.median(steady):.1f} "
                  f"| {statistics.median(ratios):.2f}× |")
        print(row(f"Pipemesh{mesh_schedule} at whole layers (PyTorch's split, before layer {split}), ÷ PyTorch",
                  "pipemesh_whole",
                  against="pipelining"))
        print(f"\nPipemesh's split ÷ Pipemesh at whole layers (median of per-round ratios): "
              f"{ratio('pipemesh_whole'):.2f}×")
        return

    last = rounds[-1]["pipemesh"]
    torch_rss = statistics.median(r["torch1"]["peak_rss_bytes"] for r in fitted("torch1")) if fitted("torch1") else None
    mesh_rss = sum(last["peak_rss_bytes"].values())
    mesh_peak = last["mesh_peak_rss_bytes"]
    gb = 1e9
    limit = f"; every process limited to {a.memory_limit_mib} MiB" if a.memory_limit_mib else ""
    print(f"\nMLP {'-'.join(map(str, layers))} ({parameters / 1e6:.1f} M parameters, {4 * parameters / gb:.2f} GB), "
          f"batch {a.batch}, {a.optimizer}; {a.stages} stages × {a.micro_batches} micro-batches ({a.schedule}), "
          f"{a.blas_threads} BLAS thread(s) per partition, {a.ps} ps tasks; "
          f"medians of {a.rounds} rounds of {a.steps} steps{limit}\n")
    print("| | samples/s | Pipemesh ÷ it (median of per-round ratios) |")
    print("| --- | --- | --- |")
    print(row("PyTorch, 1 thread", "torch1"))
    print(row("PyTorch, 2 threads", "torch2"))
    print(row("Pipemesh", "pipemesh"))
    print("\n| process | peak resident | parameters it holds | ratio |")
    print("| --- | --- | --- | --- |")
    for name, rss in sorted(last["peak_rss_bytes"].items()):
        held = last["parameter_bytes"].get(name)
        print(f"| {name} | {rss / gb:.2f} GB | {held / gb:.2f} GB | {rss / held:.2f}× |" if held
              else f"| {name} | {rss / gb:.2f} GB | — | |")
    against = (lambda v: f"{v / torch_rss:.2f}× PyTorch's {torch_rss / gb:.2f} GB") if torch_rss else (lambda v: "")
    print(f"| the whole mesh, sum of the peaks | {mesh_rss / gb:.2f} GB | {4 * parameters / gb:.2f} GB | {against(mesh_rss)} |")
    print(f"| the whole mesh at its peak (sampled every 20 ms) | {mesh_peak / gb:.2f} GB | "
          f"{4 * parameters / gb:.2f} GB | {against(mesh_peak)} |")


if __name__ == "__main__":
    main()
