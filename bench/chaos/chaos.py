#!/usr/bin/env python3
"""bench/chaos: what a fault costs a training job on a local mesh (see bench/chaos/run).

One mesh — a ps with a checkpoint directory, a coordinator with a state directory and a pool of
three partitions that join it (`--join`) — runs rounds of a 2-stage job: undisturbed ("clean"),
then with a fault at a step on one of the job's two partitions: killed (kill -9) and started
again at its address after --restart-delay seconds ("kill"); stopped (SIGSTOP) and continued after
--stop-seconds ("stop"); killed for good, the third partition being free ("spare"); and stopped
gracefully (SIGTERM), leaving the pool ("drain"). After a spare or drain run the partition is
started again and rejoins. Every job checkpoints every --checkpoint-every steps and may restart.
For each faulted run it reports: wall time over the clean run's of the same round, seconds from
the fault to the first step after it, steps run twice (from the job's record), and whether its
final weights equal the clean run's (max abs difference). One JSON object per line, then a
Markdown table of medians.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scale"))
from scale import Service  # noqa: E402  (one definition of a bench's service process)

MODEL = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "mlp-digits.json")


def parser(description, rounds, epochs, checkpoint_every):
    """The options every chaos bench takes, with its own defaults."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipemesh", required=True)
    p.add_argument("--rounds", type=int, default=rounds)
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--checkpoint-every", type=int, default=checkpoint_every)
    p.add_argument("--restart-delay", type=float, default=2.0, help="systemd's RestartSec")
    p.set_defaults(memory_limit_mib=None)  # Service's option: no memory cgroups here
    return p


def parse():
    p = parser(__doc__, rounds=2, epochs=30, checkpoint_every=10)
    p.add_argument("--fault-step", type=int, default=255, help="the step the fault comes at")
    p.add_argument(
        "--stop-seconds", type=float, default=20.0, help="past the 10 s step deadline and its 5 s health check"
    )
    return p.parse_args()


FAULTS = ("kill", "stop", "spare", "drain")


def main():
    a = parse()
    with tempfile.TemporaryDirectory(prefix="pipemesh-chaos-") as work:
        logs = os.path.join(work, "logs")
        os.makedirs(logs)
        ps = Service(a, "ps", ["--checkpoint-dir", os.path.join(work, "ps"), "--checkpoint-seconds", "0"], logs, "ps")
        coordinator = Service(a, "coordinator", ["--ps", ps.endpoint, "--state-dir", os.path.join(work, "state")],
                              logs, "coordinator")
        partitions = [partition(a, coordinator, logs, f"partition{i}") for i in range(3)]
        wait_for_pool(a, coordinator, 3)
        results = []
        try:
            for round_ in range(a.rounds):
                clean = train(a, coordinator, f"clean-{round_}", partitions, None)
                for fault in FAULTS:
                    run = train(a, coordinator, f"{fault}-{round_}", partitions, fault)
                    run["round"] = round_
                    run["wall_ratio"] = run["seconds"] / clean["seconds"]
                    run["max_weight_difference"] = weight_difference(a, coordinator, work, clean["job"], run["job"])
                    print(json.dumps(run), flush=True)
                    results.append(run)
                print(json.dumps({"round": round_, "fault": None, **clean}), flush=True)
        finally:
            for service in partitions + [coordinator, ps]:  # partitions as restarted
                service.stop()
    table(a, results)


def partition(a, coordinator, logs, name, listen="127.0.0.1:0"):
    """A partition that joins the coordinator's pool."""
    return Service(a, "partition", ["--blas-threads", "1", "--join", coordinator.endpoint], logs, name, listen=listen)


def wait_for_pool(a, coordinator, count):
    """Waits until `count` partitions of the pool are free."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pool = json.loads(subprocess.run([a.pipemesh, "status", "--coordinator", coordinator.endpoint, "--json"],
                                         check=True, capture_output=True, text=True).stdout)
        if sum(m.get("state") == "MEMBER_STATE_FREE" for m in pool.get("members", [])) == count:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the pool never had {count} free partitions")


def train(a, coordinator, job, partitions, fault):
    """Runs `pipemesh train` for `job`, bringing on `fault` at --fault-step; returns its figures."""
    argv = [a.pipemesh, "train", "--coordinator", coordinator.endpoint, "--job", job, "--json", "--model", MODEL,
            "--stages", "2", "--epochs", str(a.epochs), "--micro-batches", "2",
            "--checkpoint-every", str(a.checkpoint_every), "--max-restarts", "3"]
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    faulted_at, victim = None, None
    for line in process.stdout:
        progress = json.loads(line)
        step = int(progress.get("step", 0))
        if fault and faulted_at is None and step >= a.fault_step and not progress.get("evaluated"):
            faulted_at = time.time()
            victim = bring_on(a, fault, coordinator, job, partitions)
    process.wait()
    seconds = time.monotonic() - started
    if fault in ("spare", "drain"):  # back in the pool for the next run
        victim.process.wait()
        partitions[partitions.index(victim)] = partition(
            a, coordinator, os.path.dirname(victim.log.name), victim.name, listen=victim.endpoint)
        wait_for_pool(a, coordinator, 3)
    if process.returncode != 0:
        raise RuntimeError(f"{job} failed: {process.stderr.read()[-2000:]}")
    record = json.loads(subprocess.run(
        [a.pipemesh, "jobs", "show", job, "--coordinator", coordinator.endpoint, "--json"],
        check=True, capture_output=True, text=True).stdout)
    result = {"job": job, "fault": fault, "seconds": seconds, "resumes": record.get("resumes", 0)}
    if fault:
        faults = record.get("faults", [])
        if not faults:
            raise RuntimeError(f"{job}: the fault did not stop the job: {record}")
        # From the fault to the end of the job's first step after it, by the coordinator's record
        # (lines already in the pipe when the fault came would read as stepping again).
        result["recovery_seconds"] = faults[0]["unixSeconds"] + faults[0].get("recoverySeconds", 0) - faulted_at
        result["stop_detected_seconds"] = faults[0]["unixSeconds"] - faulted_at
        result["fault_step"] = int(faults[0]["step"])
        result["steps_redone"] = int(faults[0].get("stepsRedone", 0))
        result["moved_to_spare"] = victim.endpoint not in record.get("partitions", [])
    return result


def bring_on(a, fault, coordinator, job, partitions):
    """Brings `fault` on the job's second partition; returns it."""
    record = json.loads(subprocess.run(
        [a.pipemesh, "jobs", "show", job, "--coordinator", coordinator.endpoint, "--json"],
        check=True, capture_output=True, text=True).stdout)
    victim = next(p for p in partitions if p.endpoint == record["partitions"][-1])
    if fault in ("kill", "spare"):
        victim.process.kill()
        victim.process.wait()
        if fault == "kill":
            time.sleep(a.restart_delay)  # systemd's RestartSec: the fault being measured, not a wait for readiness
            partitions[partitions.index(victim)] = partition(
                a, coordinator, os.path.dirname(victim.log.name), victim.name, listen=victim.endpoint)
    elif fault == "drain":
        victim.process.send_signal(signal.SIGTERM)
    else:
        victim.process.send_signal(signal.SIGSTOP)
        time.sleep(a.stop_seconds)  # the length of the hang being measured
        victim.process.send_signal(signal.SIGCONT)
    return victim


def weight_difference(a, coordinator, work, clean, faulted):
    """Largest absolute difference between two jobs' registered weights."""
    folder = os.path.join(work, "export")
    for job in (clean, faulted):
        subprocess.run([a.pipemesh, "models", "export", job, "--coordinator", coordinator.endpoint, "--out", folder],
                       check=True, capture_output=True)
    from safetensors.numpy import load_file
    x, y = load_file(f"{folder}/{clean}-v1.safetensors"), load_file(f"{folder}/{faulted}-v1.safetensors")
    return float(max(abs(x[name] - y[name]).max() for name in x))


def table(a, results):
    print(f"\n{a.rounds} rounds, digits MLP, {a.epochs} epochs, checkpoint every {a.checkpoint_every} steps, "
          f"fault at step {a.fault_step}; medians")
    print("| fault | wall time / clean | fault → stepping again (s) | steps run twice | max weight difference |")
    print("| --- | --- | --- | --- | --- |")
    for fault, label in (("kill", f"kill -9 of a partition, back after {a.restart_delay:g} s"),
                         ("stop", f"SIGSTOP of a partition for {a.stop_seconds:g} s"),
                         ("spare", "kill -9 of a partition that stays down, a spare free"),
                         ("drain", "SIGTERM of a partition (leaves the pool), a spare free")):
        runs = [r for r in results if r["fault"] == fault]
        print(f"| {label} | {statistics.median(r['wall_ratio'] for r in runs):.2f}× "
              f"| {statistics.median(r['recovery_seconds'] for r in runs):.1f} "
              f"| {statistics.median(r['steps_redone'] for r in runs):.0f} "
              f"| {max(r['max_weight_difference'] for r in runs):.1e} |")


if __name__ == "__main__":
    main()
