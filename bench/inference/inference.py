#!/usr/bin/env python3
"""bench/inference: Infer through a 2-stage local mesh against PyTorch in one process, in the same run.

Each round runs, one after the other:

- PyTorch with 1 and with 2 threads on the same MLP (784-1024-1024-1024-10, random weights):
  samples/s at batch 256, and one row's latency in the process (no RPC);
- Pipemesh with inference batching off (`--max-inference-batch 0`) and on (the default), each on a
  fresh mesh (a ps, two partitions with 1 BLAS thread each, a coordinator) with a job trained for
  one step, called through the Python client as users call it:
  - batch 256 with 1, 2 and 4 micro-batches: samples/s;
  - one row at a time from one client: latency p50 and p99;
  - one-row requests from 1, 4, 16 and 64 concurrent clients for --seconds: requests/s, p50, p99,
    errors, and the CPU the mesh's processes spent per request (a figure the load generator, which
    shares the machine's cores with the mesh, does not bound); and the coordinator's Echo of the
    same bytes from the same clients (the RPC layer's ceiling with this load generator).

Prints one JSON object per measurement, then Markdown tables of medians over rounds.

  bench/inference/run               3 rounds (about 6 minutes)
  bench/inference/run --quick       1 round, shorter loads: checks that it works
  bench/inference/run --rounds 5 --seconds 5
  bench/inference/run --one-row --against OLD_PIPEMESH --rounds 5
                                    one row's latency only, batching off and on, alternating this
                                    checkout's build with another pipemesh binary (an A/B of a change),
                                    beside the coordinator's Echo of the row from the same client
  bench/inference/run --breakdown   where a request's time goes: traced requests of one row and of 256
                                    rows in 2 micro-batches, each call's legs (its request's way to the
                                    partition, the partition's work before and after the compute, the
                                    compute, the answer's way back) and the transfers between stages
"""
import argparse
import contextlib
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scale"))
from scale import TORCH_MLP, Service  # noqa: E402  (one definition of each)

LAYERS = [784, 1024, 1024, 1024, 10]
BATCH = 256
CLIENTS = (1, 4, 16, 64)

TORCH_RUN = TORCH_MLP + r"""
import json, sys, time
layers, batch, threads, seconds = json.loads(sys.argv[1])
torch.set_num_threads(threads)
model = torch_mlp(layers).eval()
x, row = torch.randn(batch, layers[0]), torch.randn(1, layers[0])
with torch.no_grad():
    for _ in range(10):
        model(x)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        model(x)
        count += 1
    samples = batch * count / (time.perf_counter() - started)
    latencies = []
    for _ in range(2000):
        t = time.perf_counter()
        model(row)
        latencies.append(time.perf_counter() - t)
latencies.sort()
print(json.dumps({"samples_per_second": samples, "p50_ms": latencies[len(latencies) // 2] * 1e3,
                  "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3}))
"""


def parse():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipemesh", required=True, help="the pipemesh binary")
    parser.add_argument("--python", default=sys.executable, help="a Python with torch, for the reference")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="each load's measured seconds")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--one-row", action="store_true", help="only one row's latency (and Echo's), per binary")
    parser.add_argument("--against", help="with --one-row: another pipemesh binary, run alternately")
    parser.add_argument("--breakdown", action="store_true", help="only where traced requests spend their time")
    parser.set_defaults(memory_limit_mib=0)  # scale.Service's option: no memory cgroups here
    a = parser.parse_args()
    if a.quick:
        a.rounds, a.seconds = 1, 1.0
    if a.against and not a.one_row:
        parser.error("--against compares one row's latency: give it with --one-row")
    return a


def torch_run(a, threads):
    run = subprocess.run([a.python, "-c", TORCH_RUN, json.dumps([LAYERS, BATCH, threads, a.seconds])],
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"PyTorch failed ({run.returncode}): {run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def percentile(sorted_values, fraction):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))] if sorted_values else None


def load_worker(target, kind, threads, start_at, seconds, results):
    """One load-generating process: `threads` clients, each sending one-row requests in a loop."""
    from pipemesh import Client
    from pipemesh.v1 import diagnostics_pb2, diagnostics_pb2_grpc

    row = np.random.default_rng(os.getpid()).standard_normal((1, LAYERS[0])).astype(np.float32)
    latencies, errors, lock = [], [0], threading.Lock()

    def client_loop():
        with Client(target, timeout=30) as client:
            echo = diagnostics_pb2_grpc.DiagnosticsStub(client._channel)
            payload = diagnostics_pb2.EchoRequest(payload=row.tobytes())
            call = (lambda: client.infer(row, job="bench")) if kind == "infer" else (lambda: echo.Echo(payload))
            call()
            mine = []
            while time.time() < start_at:
                call()
            while time.time() < start_at + seconds:
                began = time.perf_counter()
                try:
                    call()
                    mine.append(time.perf_counter() - began)
                except Exception:  # counted: a request the mesh failed
                    with lock:
                        errors[0] += 1
            with lock:
                latencies.extend(mine)

    workers = [threading.Thread(target=client_loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put((latencies, errors[0]))


def cpu_seconds(services):
    """User and system CPU seconds the services' processes have used."""
    total = 0.0
    for service in services:
        with open(f"/proc/{service.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def load(target, kind, clients, seconds, services):
    """Requests/s, p50 and p99 (ms), errors, and the services' CPU milliseconds per request of
    `clients` concurrent one-row callers."""
    context = multiprocessing.get_context("spawn")
    processes = min(clients, 4)
    results = context.Queue()
    start_at = time.time() + 2.0  # after every process has started and warmed up
    spawned = [context.Process(target=load_worker, args=(target, kind, clients // processes, start_at, seconds,
                                                         results)) for _ in range(processes)]
    for process in spawned:
        process.start()
    time.sleep(max(0.0, start_at - time.time()))
    cpu_before = cpu_seconds(services)
    time.sleep(seconds)
    cpu_used = cpu_seconds(services) - cpu_before
    latencies, errors = [], 0
    for _ in spawned:
        mine, failed = results.get(timeout=seconds + 120)
        latencies += mine
        errors += failed
    for process in spawned:
        process.join()
    latencies.sort()
    return {"requests_per_second": len(latencies) / seconds, "p50_ms": percentile(latencies, 0.5) * 1e3,
            "p99_ms": percentile(latencies, 0.99) * 1e3, "errors": errors,
            "mesh_cpu_ms_per_request": cpu_used * 1e3 / max(1, len(latencies))}


@contextlib.contextmanager
def trained_mesh(a, work, name, batching):
    """A fresh mesh of `a.pipemesh` with inference batching on or off, and its job "bench" trained
    for one step: yields its services, the coordinator last."""
    logs = os.path.join(work, f"logs-{name}-{'batching' if batching else 'alone'}")
    os.makedirs(logs, exist_ok=True)
    services = []
    try:
        ps = Service(a, "ps", [], logs, "ps")
        services.append(ps)
        partitions = [Service(a, "partition", ["--blas-threads", "1"], logs, f"partition{i}") for i in range(2)]
        services += partitions
        coordinator = Service(a, "coordinator", [
            "--ps", ps.endpoint, "--partitions", ";".join(p.endpoint for p in partitions), "--data-dir", work,
            "--max-inference-batch", "256" if batching else "0"], logs, "coordinator")
        services.append(coordinator)
        train = subprocess.run(
            [a.pipemesh, "train", "--coordinator", coordinator.endpoint, "--model", os.path.join(work, "model.json"),
             "--dataset", "data.npz", "--epochs", "1", "--batch-size", str(BATCH), "--validation", "0",
             "--job", "bench", "--json"], capture_output=True, text=True, timeout=600)
        if train.returncode != 0:
            raise RuntimeError(f"pipemesh train failed ({train.returncode}): {train.stderr[-2000:]}")
        yield services
    finally:
        for service in reversed(services):
            service.stop()


def sequential_latency(call, seconds):
    """p50 and p99 (ms) of `call` made one at a time, after 50 calls to warm up: 300 calls for each of
    `seconds` (at least 20)."""
    for _ in range(50):
        call()
    latencies = []
    for _ in range(max(20, int(300 * seconds))):
        began = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - began)
    latencies.sort()
    return percentile(latencies, 0.5) * 1e3, percentile(latencies, 0.99) * 1e3


def pipemesh_run(a, work, round_index, batching):
    """A fresh mesh with inference batching on or off: every Pipemesh figure of a round."""
    from pipemesh import Client

    with trained_mesh(a, work, round_index, batching) as services:
        coordinator = services[-1]
        result = {"round": round_index, "system": "pipemesh", "batching": batching}
        rng = np.random.default_rng(round_index)
        batch = rng.standard_normal((BATCH, LAYERS[0])).astype(np.float32)
        row = batch[:1]
        with Client(coordinator.endpoint, timeout=60) as client:
            for micro_batches in (1, 2, 4):
                for _ in range(3):
                    client.infer(batch, job="bench", micro_batches=micro_batches)
                count, started = 0, time.perf_counter()
                while time.perf_counter() - started < a.seconds:
                    client.infer(batch, job="bench", micro_batches=micro_batches)
                    count += 1
                result[f"batch_samples_per_second_m{micro_batches}"] = BATCH * count / (time.perf_counter() - started)
            result["one_row_p50_ms"], result["one_row_p99_ms"] = sequential_latency(
                lambda: client.infer(row, job="bench"), a.seconds)
        for clients in CLIENTS:
            result[f"load_{clients}"] = load(coordinator.endpoint, "infer", clients, a.seconds, services)
            result[f"echo_{clients}"] = load(coordinator.endpoint, "echo", clients, a.seconds, services)
        return result


def one_row_run(a, work, round_index, index, binary, batching):
    """One row's latency through a fresh mesh of `binary`, and the coordinator's Echo of its bytes
    from the same client (the Python client and one RPC: the floor under one hop)."""
    from pipemesh import Client
    from pipemesh.v1 import diagnostics_pb2, diagnostics_pb2_grpc

    with trained_mesh(argparse.Namespace(**{**vars(a), "pipemesh": binary}), work,
                      f"{round_index}-binary{index}", batching) as services:
        row = np.random.default_rng(round_index).standard_normal((1, LAYERS[0])).astype(np.float32)
        with Client(services[-1].endpoint, timeout=60) as client:
            echo = diagnostics_pb2_grpc.DiagnosticsStub(client._channel)
            payload = diagnostics_pb2.EchoRequest(payload=row.tobytes())
            infer = sequential_latency(lambda: client.infer(row, job="bench"), a.seconds)
            echoed = sequential_latency(lambda: echo.Echo(payload), a.seconds)
        return {"round": round_index, "system": binary, "batching": batching, "one_row_p50_ms": infer[0],
                "one_row_p99_ms": infer[1], "echo_p50_ms": echoed[0]}


def breakdown(a, work):
    """`--breakdown`: medians (ms) of where traced Infer calls of one row, and of 256 rows in 2
    micro-batches, spend their time, from the calls' legs on the request's trace."""
    from pipemesh import Client
    from pipemesh.client import to_tensor
    from pipemesh.v1 import coordinator_pb2 as pb, coordinator_pb2_grpc

    rng = np.random.default_rng(0)
    with trained_mesh(a, work, "breakdown", batching=False) as services, \
            Client(services[-1].endpoint, timeout=60) as client:
        stub = coordinator_pb2_grpc.CoordinatorStub(client._channel)
        for rows, micro_batches in ((1, 1), (BATCH, 2)):
            inputs = to_tensor(rng.standard_normal((rows, LAYERS[0])).astype(np.float32))
            untraced = pb.InferRequest(job="bench", inputs=inputs, micro_batches=micro_batches)
            traced = pb.InferRequest(job="bench", inputs=inputs, micro_batches=micro_batches, trace=True)
            for _ in range(20):
                stub.Infer(traced)
            untraced_p50, _ = sequential_latency(lambda: stub.Infer(untraced), a.seconds / (1 if rows == 1 else 20))
            parts = {}
            for _ in range(int(100 * a.seconds) if rows == 1 else 60):
                began = time.perf_counter()
                answer = stub.Infer(traced)
                parts.setdefault("the client's call", []).append((time.perf_counter() - began) * 1e3)
                for event in json.loads(answer.trace_json)["traceEvents"]:
                    if event.get("ph") != "X":
                        continue
                    if event["cat"] == "request":
                        parts.setdefault("the coordinator's handler", []).append(event["dur"] / 1e3)
                    elif event["cat"] == "forward":
                        call = f"stage {event['args']['stage']} {event['name']}"
                        parts.setdefault(f"{call} compute", []).append(event["dur"] / 1e3)
                        for leg in ("request_us", "before_compute_us", "after_compute_us", "answer_us"):
                            parts.setdefault(f"{call} {leg[:-3].replace('_', ' ')}", []).append(
                                event["args"][leg] / 1e3)
                    elif event["cat"] == "transfer":
                        parts.setdefault(f"{event['name']} from the stage before", []).append(event["dur"] / 1e3)
            print(f"\n{rows} row{'s' if rows > 1 else ''}, {micro_batches} micro-batch{'es' if micro_batches > 1 else ''}, "
                  f"traced (the trace itself adds to the client's call and the handler's end)\n")
            print("| part | p50 ms |")
            print("| --- | --- |")
            print(f"| the client's call, untraced | {untraced_p50:.3f} |")
            for part, values in parts.items():
                print(f"| {part} | {statistics.median(values):.3f} |")


def one_row_main(a, work):
    """`--one-row`: this build's one-row latency, alternating with `--against`'s when given."""
    binaries = [a.pipemesh] + ([os.path.abspath(a.against)] if a.against else [])
    results = []
    for round_index in range(a.rounds):
        for batching in (False, True):
            order = list(enumerate(binaries))
            for index, binary in (order if round_index % 2 == 0 else order[::-1]):
                result = one_row_run(a, work, round_index, index, binary, batching)
                print(json.dumps(result), file=sys.stderr, flush=True)
                results.append(result)
    print(f"\none row through 2 stages, one client; medians of {a.rounds} round(s)\n")
    print("| pipemesh | batching | p50 ms | p99 ms | Echo p50 ms | p50 ÷ the first binary's, median of rounds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for batching in (False, True):
        first = {r["round"]: r for r in results if r["system"] == binaries[0] and r["batching"] == batching}
        for binary in binaries:
            rows = [r for r in results if r["system"] == binary and r["batching"] == batching]
            against = statistics.median(r["one_row_p50_ms"] / first[r["round"]]["one_row_p50_ms"] for r in rows)
            print(f"| {binary} | {'on' if batching else 'off'} | "
                  + " | ".join(f"{statistics.median(r[key] for r in rows):.3f}"
                               for key in ("one_row_p50_ms", "one_row_p99_ms", "echo_p50_ms"))
                  + f" | {against:.3f}× |")


def main():
    a = parse()
    work = tempfile.mkdtemp(prefix="pipemesh-bench-inference-")
    spec = {"name": "mlp-inference", "inputShape": [str(LAYERS[0])], "seed": "7",
            "layers": [{"dense": {"units": str(units), **({"activation": "ACTIVATION_RELU"} if i < len(LAYERS) - 2
                                                           else {})}} for i, units in enumerate(LAYERS[1:])],
            "loss": {"softmaxCrossEntropy": {}}}
    with open(os.path.join(work, "model.json"), "w") as f:
        json.dump(spec, f)
    rng = np.random.default_rng(0)
    np.savez(os.path.join(work, "data.npz"), x=rng.standard_normal((BATCH, LAYERS[0]), dtype=np.float32),
             y=rng.integers(0, LAYERS[-1], BATCH))
    if a.one_row:
        one_row_main(a, work)
        return
    if a.breakdown:
        breakdown(a, work)
        return
    results = []
    for round_index in range(a.rounds):
        for measured in (lambda: {"round": round_index, "system": "torch1", **torch_run(a, 1)},
                         lambda: pipemesh_run(a, work, round_index, batching=False),
                         lambda: {"round": round_index, "system": "torch2", **torch_run(a, 2)},
                         lambda: pipemesh_run(a, work, round_index, batching=True)):
            result = measured()
            print(json.dumps(result), file=sys.stderr, flush=True)
            results.append(result)
    table(a, results)


def table(a, results):
    def of(system, batching=None):
        return [r for r in results if r["system"] == system and (batching is None or r["batching"] == batching)]

    def median(rows, key):
        values = [key(r) for r in rows]
        return statistics.median(values) if values else float("nan")

    def ratio(rows, key, references, reference_key):
        by_round = {r["round"]: r for r in references}
        return median([r for r in rows if r["round"] in by_round], lambda r: key(r) / reference_key(by_round[r["round"]]))

    torch1, torch2 = of("torch1"), of("torch2")
    alone, batched = of("pipemesh", False), of("pipemesh", True)
    best = lambda r: max(r[f"batch_samples_per_second_m{m}"] for m in (1, 2, 4))  # noqa: E731
    print(f"\nMLP {'-'.join(map(str, LAYERS))}; 2 stages, 1 BLAS thread each; medians of {a.rounds} round(s) "
          f"(ratios: medians of per-round ratios)\n")
    print("| batch 256 | samples/s | against PyTorch 1 thread | against PyTorch 2 threads |")
    print("| --- | --- | --- | --- |")
    print(f"| PyTorch, 1 thread | {median(torch1, lambda r: r['samples_per_second']):.0f} | | |")
    print(f"| PyTorch, 2 threads | {median(torch2, lambda r: r['samples_per_second']):.0f} | | |")
    for m in (1, 2, 4):
        key = lambda r, m=m: r[f"batch_samples_per_second_m{m}"]  # noqa: E731
        print(f"| Pipemesh, {m} micro-batch{'es' if m > 1 else ''} | {median(batched, key):.0f} "
              f"| {ratio(batched, key, torch1, lambda r: r['samples_per_second']):.2f}× "
              f"| {ratio(batched, key, torch2, lambda r: r['samples_per_second']):.2f}× |")
    print(f"| Pipemesh, best M | {median(batched, best):.0f} "
          f"| {ratio(batched, best, torch1, lambda r: r['samples_per_second']):.2f}× "
          f"| {ratio(batched, best, torch2, lambda r: r['samples_per_second']):.2f}× |")
    print("\n| one row, one client | p50 ms | p99 ms |")
    print("| --- | --- | --- |")
    for label, rows, p50, p99 in (("PyTorch, 1 thread, in process", torch1, "p50_ms", "p99_ms"),
                                  ("Pipemesh, batching off", alone, "one_row_p50_ms", "one_row_p99_ms"),
                                  ("Pipemesh, batching on", batched, "one_row_p50_ms", "one_row_p99_ms")):
        print(f"| {label} | {median(rows, lambda r: r[p50]):.2f} | {median(rows, lambda r: r[p99]):.2f} |")
    print("\n| clients | batching off: requests/s, p50, p99 ms | batching on: requests/s, p50, p99 ms "
          "| on ÷ off | mesh CPU ms per request, off / on | Echo of the same bytes: requests/s | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for clients in CLIENTS:
        key = f"load_{clients}"
        figures = [f"{median(rows, lambda r: r[key]['requests_per_second']):.0f}, "
                   f"{median(rows, lambda r: r[key]['p50_ms']):.1f}, {median(rows, lambda r: r[key]['p99_ms']):.1f}"
                   for rows in (alone, batched)]
        on_off = ratio(batched, lambda r: r[key]["requests_per_second"], alone,
                       lambda r: r[key]["requests_per_second"])
        echo = median(batched, lambda r: r[f"echo_{clients}"]["requests_per_second"])
        errors = sum(r[key]["errors"] for r in alone + batched)
        cpu = " / ".join(f"{median(rows, lambda r: r[key]['mesh_cpu_ms_per_request']):.2f}" for rows in (alone, batched))
        print(f"| {clients} | {figures[0]} | {figures[1]} | {on_off:.2f}× | {cpu} | {echo:.0f} | {errors} |")


if __name__ == "__main__":
    main()
