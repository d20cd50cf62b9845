#!/usr/bin/env python3
"""bench/links: a pipeline across hosts joined by links slower than loopback.

Three hosts in network namespaces this script creates (it needs root), joined by a bridge in a
namespace of its own: the ps, the coordinator and the client on one, a stage on each of the other
two. Each run shapes every host's link with `tc tbf` (in both directions, as each host's egress)
at one rate, or leaves it unshaped, and trains the same job on the same mesh, with its activations
and gradients travelling between the stages as float32 and, in a run of its own, in each two-byte
format asked for (`pipemesh train --transfer-dtype`). The runs alternate within each round, and the
round's unshaped float32 run is the reference each run is divided by.
This kernel has no netem, so the links add no delay: only bandwidth is shaped.

Besides samples/s it reports the bytes each host sent per step in the steady state (read from the
hosts' interface counters after the first step and after the next to last one the client saw,
so steps 2 … N-1, without the last step's hand-over to the ps), which shows what
crosses the links: activations and gradients between the stages, inputs and labels from the
coordinator, variables to and from the ps.

  bench/links/run                                    1F1B, M = 4, unshaped, 10 Gbit/s, 1 Gbit/s, 100 Mbit/s,
                                                     float32 and bfloat16 transfers
  bench/links/run --quick                            fewer steps, one round: checks that it works
  bench/links/run --rates unshaped,1gbit --rounds 5 --micro-batches 8 --schedule zb-h1
  bench/links/run --transfer-dtypes float32,bfloat16,float16
  bench/links/run --train-option=--whole-layers      an option for `pipemesh train`, in every run

Prints one JSON object per line, then a Markdown table.
"""
import argparse
import atexit
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import benchmesh  # noqa: E402  (bench/benchmesh.py)

SUBNET = "10.214.0"
HOSTS = ["ps", "stage0", "stage1"]  # the ps host also runs the coordinator and the client


def run(*argv):
    subprocess.run(argv, check=True, capture_output=True, text=True)


class Network:
    """One namespace per host on SUBNET.0/24, joined by a bridge in a switch namespace."""

    def __init__(self):
        tag = format(os.getpid(), "x")
        self.switch = f"pml-sw-{tag}"
        self.namespaces = {host: f"pml-{host}-{tag}" for host in HOSTS}
        self.address = {host: f"{SUBNET}.{index + 2}" for index, host in enumerate(HOSTS)}
        atexit.register(self.remove)
        run("ip", "netns", "add", self.switch)
        run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.switch, "link", "set", "br0", "up")
        for index, host in enumerate(HOSTS):
            namespace, port = self.namespaces[host], f"p{index}-{tag}"
            run("ip", "netns", "add", namespace)
            run("ip", "-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", namespace)
            run("ip", "-n", self.switch, "link", "set", port, "master", "br0", "up")
            run("ip", "-n", namespace, "addr", "add", f"{self.address[host]}/24", "dev", "eth0")
            run("ip", "-n", namespace, "link", "set", "eth0", "up")
            run("ip", "-n", namespace, "link", "set", "lo", "up")

    def shape(self, rate):
        """Every host's egress at `rate` (tc's syntax: 1gbit, 100mbit), or unshaped for None."""
        for namespace in self.namespaces.values():
            subprocess.run(["tc", "-n", namespace, "qdisc", "del", "dev", "eth0", "root"], capture_output=True)
            if rate:
                # A bucket of 1 ms at the rate (at least 64 KiB, one segmentation-offloaded packet):
                # a burst cannot carry a whole micro-batch past the shaping.
                burst = max(rate_bits(rate) // 8 // 1000, 64 * 1024)
                run("tc", "-n", namespace, "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", rate,
                    "burst", str(burst), "latency", "50ms")

    def serve(self, host, role, args, log_dir, name):
        """`pipemesh serve ROLE ARGS` on `host`, once it listens."""
        return benchmesh.Service(["ip", "netns", "exec", self.namespaces[host], PIPEMESH, "serve", role, *args], role,
                                 os.path.join(log_dir, f"{name}.log"), name)

    def popen(self, host, argv, **kwargs):
        return subprocess.Popen(["ip", "netns", "exec", self.namespaces[host], *argv], **kwargs)

    def remove(self):
        for namespace in [*self.namespaces.values(), self.switch]:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


def rate_bits(rate):
    units = {"kbit": 10**3, "mbit": 10**6, "gbit": 10**9}
    for suffix, scale in units.items():
        if rate.endswith(suffix):
            return int(float(rate[:-len(suffix)]) * scale)
    raise ValueError(f"rate {rate!r}: give it as tc does, e.g. 1gbit or 100mbit")


def sent_bytes(pid):
    """Bytes the namespace of process `pid` sent on eth0."""
    with open(f"/proc/{pid}/net/dev") as counters:
        for line in counters:
            name, _, values = line.partition(":")
            if name.strip() == "eth0":
                return int(values.split()[8])
    raise RuntimeError(f"process {pid} sees no eth0")


def train(a, network, services, work, label, transfer_dtype):
    """One job of steps+1 batches. Its samples/s leave out the first step (which includes the stages'
    first pulls); the steady figures leave out the last one too, whose commit hands the stages'
    variables (and optimizer slots) to the ps, once per job. Each host's bytes per step are counted
    over the steady steps, 2 … N-1."""
    with open(os.path.join(work, "logs", f"{label}.log"), "w") as log:
        client = network.popen(
            "ps",
            [PIPEMESH, "train", "--coordinator", f"{network.address['ps']}:7000", "--model",
             os.path.join(work, "model.json"), "--dataset", "data.npz", "--epochs", "1", "--batch-size", str(a.batch),
             "--micro-batches", str(a.micro_batches), "--schedule", a.schedule, "--optimizer", a.optimizer,
             "--learning-rate", "0.01", "--validation", "0", "--transfer-dtype", transfer_dtype, "--job", label,
             "--json", *a.train_option],
            stdout=subprocess.PIPE, stderr=log, text=True)
        steps, counters = [], []
        try:
            for line in client.stdout:
                if not line.startswith("{"):
                    continue
                step = json.loads(line)
                if step.get("samplesPerSecond") and not step.get("done") and not step.get("evaluated"):
                    steps.append(step)
                    counters.append({host: sent_bytes(services[host].process.pid) for host in HOSTS})
        except BaseException:
            client.kill()  # the network namespace's removal would not end it
            raise
        finally:
            status = client.wait()
            client.stdout.close()
    if status != 0:
        raise RuntimeError(f"pipemesh train failed ({status}); see {log.name}")
    if len(steps) < 4:
        raise RuntimeError(f"{len(steps)} steps reported: give --steps 3 or more")

    def rate(measured):
        return a.batch * len(measured) / sum(a.batch / s["samplesPerSecond"] for s in measured)

    steady = len(counters) - 2  # steps 2 … N-1: between the counters read after steps 1 and N-1
    return {
        "samples_per_second": rate(steps[1:]),
        "steady_samples_per_second": rate(steps[1:-1]),
        "last_step_seconds": a.batch / steps[-1]["samplesPerSecond"],
        "mib_sent_per_step": {host: (counters[-2][host] - counters[0][host]) / steady / 2**20 for host in HOSTS},
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pipemesh", required=True)
    parser.add_argument("--rates", default="unshaped,10gbit,1gbit,100mbit",
                        help="comma-separated tc rates; 'unshaped' is the reference and always runs")
    parser.add_argument("--transfer-dtypes", default="float32,bfloat16",
                        help="how activations and gradients travel: float32 (the reference; always runs), "
                             "bfloat16, float16")
    parser.add_argument("--layers", default="784,1024,1024,1024,10")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--micro-batches", type=int, default=4)
    parser.add_argument("--schedule", default="1f1b", help="gpipe, 1f1b, zb-h1 or 2bw")
    parser.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    parser.add_argument("--steps", type=int, default=20, help="measured steps per run, after one warm-up step")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-option", action="append", default=[], metavar="OPTION",
                        help="an option for `pipemesh train` in every run (repeat it for several)")
    parser.add_argument("--quick", action="store_true")
    a = parser.parse_args()
    if a.quick:
        a.steps, a.rounds = 4, 1
    global PIPEMESH
    PIPEMESH = a.pipemesh
    rates = [r for r in a.rates.split(",") if r != "unshaped"]
    for rate in rates:
        rate_bits(rate)
    dtypes = ["float32", *(d for d in a.transfer_dtypes.split(",") if d != "float32")]
    if not set(dtypes) <= {"float32", "bfloat16", "float16"}:
        parser.error(f"--transfer-dtypes {a.transfer_dtypes}: give float32, bfloat16 or float16")
    runs = [f"{rate} {dtype}" for rate in ["unshaped", *rates] for dtype in dtypes]
    layers = [int(v) for v in a.layers.split(",")]

    work = tempfile.mkdtemp(prefix="pipemesh-links-")
    benchmesh.write_mlp(work, "links", layers, a.batch * (a.steps + 1))

    network = Network()
    logs = os.path.join(work, "logs")
    os.makedirs(logs)
    services = {}
    try:
        address = network.address
        peers = ",".join(address[h] for h in HOSTS)
        services["ps"] = network.serve("ps", "ps", ["--listen", f"{address['ps']}:7100"], logs, "ps")
        for host in ["stage0", "stage1"]:
            services[host] = network.serve(
                host, "partition",
                ["--listen", f"{address[host]}:7200", "--blas-threads", "1", "--peers", peers], logs, host)
        services["coordinator"] = network.serve(
            "ps", "coordinator",
            ["--listen", f"{address['ps']}:7000", "--ps", f"{address['ps']}:7100", "--partitions",
             f"{address['stage0']}:7200;{address['stage1']}:7200", "--data-dir", work], logs, "coordinator")
        print(json.dumps({"layers": layers, "batch": a.batch, "microBatches": a.micro_batches, "schedule": a.schedule,
                          "steps": a.steps, "rounds": a.rounds, "rates": ["unshaped", *rates], "transferDtypes": dtypes,
                          "trainOptions": a.train_option, "work": work}), flush=True)
        rounds = []
        for index in range(a.rounds):
            row = {"round": index + 1}
            # Alternate the order, so drift in the machine's speed favours no run.
            for run_name in runs if index % 2 == 0 else reversed(runs):
                rate, dtype = run_name.split()
                network.shape(None if rate == "unshaped" else rate)
                row[run_name] = train(a, network, services, work, f"links-{index + 1}-{rate}-{dtype}", dtype)
            network.shape(None)
            rounds.append(row)
            print(json.dumps(row), flush=True)
    finally:
        for service in reversed(list(services.values())):
            service.stop()
        network.remove()

    def median(run_name, key):
        return statistics.median(r[run_name][key] for r in rounds)

    def ratios(run_name, key):
        values = [r[run_name][key] / r["unshaped float32"][key] for r in rounds]
        return f"{statistics.median(values):.2f}× ({min(values):.2f}–{max(values):.2f})"

    print(f"\nMLP {'-'.join(map(str, layers))}, batch {a.batch}, {a.optimizer}, {a.schedule}, M = {a.micro_batches}, "
          f"2 stages on 2 hosts, the ps and the coordinator on a third; medians of {a.rounds} round(s) of {a.steps} "
          f"steps, ratios to the unshaped links with float32 transfers as the median (range) of per-round ratios"
          + (f"; train {' '.join(a.train_option)}" if a.train_option else "") + "\n")
    print("| link | transfers | steady samples/s | of unshaped | samples/s with the last step | of unshaped "
          "| last step (s) | MiB sent per steady step: ps host, stage 0, stage 1 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for run_name in runs:
        sent = {h: statistics.median(r[run_name]["mib_sent_per_step"][h] for r in rounds) for h in HOSTS}
        print(f"| {' | '.join(run_name.split())} | {median(run_name, 'steady_samples_per_second'):,.0f} "
              f"| {ratios(run_name, 'steady_samples_per_second')} "
              f"| {median(run_name, 'samples_per_second'):,.0f} | {ratios(run_name, 'samples_per_second')} "
              f"| {median(run_name, 'last_step_seconds'):.2f} | {', '.join(f'{sent[h]:.2f}' for h in HOSTS)} |")


if __name__ == "__main__":
    main()
