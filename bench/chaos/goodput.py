#!/usr/bin/env python3
"""bench/chaos goodput: useful training per second of a 2-stage pipeline under a kill -9 every 30-60 s.

Each round runs the same job three times, each on a fresh mesh of its own (a ps with a checkpoint
directory, a coordinator with a state directory, three partitions that join it: the job's two
and a spare), in turn:

- "clean": no fault;
- "pipemesh": every --min-gap to --max-gap seconds (seeded, the same gaps in every round) one of
  the job's partitions is killed (kill -9) and started again --restart-delay seconds later, as
  systemd's Restart=always with RestartSec would; the coordinator handles the rest by itself
  (the job may restart as often as it needs);
- "restart-all": the same kills, met the way a job without fault tolerance of its own is: every
  process of the mesh is killed at once, all are started again after the same delay, and the
  restarted coordinator resumes the job from its newest checkpoint. The kill is noticed at once
  (no launcher's polling interval) and the processes start in a fraction of a second (no
  framework import), so this is the least such a restart costs.

Goodput is the job's training examples over its wall time (from Train to the job's end, by the
coordinator's record): steps run twice are not counted again. One JSON object per run, then a
Markdown table of medians.
"""
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from chaos import Service, parser, partition, wait_for_pool  # noqa: E402  (one definition of each)

# Wide enough that a step is tens of milliseconds of work, not the few of the digits MLP.
MODEL = {
    "name": "mlp-digits-wide", "inputShape": ["64"], "seed": "7",
    "layers": [{"dense": {"units": "1024", "activation": "ACTIVATION_RELU"}},
               {"dense": {"units": "1024", "activation": "ACTIVATION_RELU"}},
               {"dense": {"units": "10"}}],
    "loss": {"softmaxCrossEntropy": {}},
}
MODES = ("clean", "pipemesh", "restart-all")


def parse():
    p = parser(__doc__, rounds=1, epochs=300, checkpoint_every=50)
    p.add_argument("--min-gap", type=float, default=30.0, help="least seconds between two kills")
    p.add_argument("--max-gap", type=float, default=60.0, help="most seconds between two kills")
    p.add_argument("--seed", type=int, default=1, help="seeds the gaps and the victims")
    return p.parse_args()


class Mesh:
    """A ps, a coordinator and three joined partitions, each restartable at its address."""

    def __init__(self, a, work):
        self.a, self.work = a, work
        self.logs = os.path.join(work, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.ps = self.coordinator = None
        self.partitions = []
        self.start()

    def start(self, listens=None):
        """Starts every process (at `listens`' addresses: ps, coordinator, partitions, when given)."""
        listens = listens or ["127.0.0.1:0"] * 5
        a, work = self.a, self.work
        self.ps = Service(a, "ps", ["--checkpoint-dir", os.path.join(work, "ps"), "--checkpoint-seconds", "0"],
                          self.logs, "ps", listen=listens[0])
        self.coordinator = Service(a, "coordinator", ["--ps", self.ps.endpoint, "--state-dir",
                                                      os.path.join(work, "state")],
                                   self.logs, "coordinator", listen=listens[1])
        self.partitions = [partition(a, self.coordinator, self.logs, f"partition{i}", listen=listen)
                           for i, listen in enumerate(listens[2:])]

    @property
    def endpoints(self):
        return [s.endpoint for s in [self.ps, self.coordinator] + self.partitions]

    def kill_all(self):
        """kill -9 of every process; returns their addresses."""
        endpoints = self.endpoints
        for service in [self.ps, self.coordinator] + self.partitions:
            service.process.kill()
            service.process.wait()
            service.log.close()
        return endpoints

    def restart_partition(self, victim, delay):
        """Starts `victim` again at its address after `delay` seconds (in the background)."""
        def again():
            time.sleep(delay)
            self.partitions[self.partitions.index(victim)] = partition(
                self.a, self.coordinator, self.logs, victim.name, listen=victim.endpoint)
        thread = threading.Thread(target=again)
        thread.start()
        return thread

    def record(self, job):
        shown = subprocess.run([self.a.pipemesh, "jobs", "show", job, "--coordinator", self.coordinator.endpoint,
                                "--json"], capture_output=True, text=True)
        return json.loads(shown.stdout) if shown.returncode == 0 else None

    def stop(self):
        for service in self.partitions + [self.coordinator, self.ps]:
            service.stop()


def run(a, mode, round_, gaps, victims):
    """One run of the job in `mode`; returns its figures."""
    with tempfile.TemporaryDirectory(prefix=f"pipemesh-goodput-{mode}-") as work:
        model = os.path.join(work, "model.json")
        with open(model, "w") as f:
            json.dump(MODEL, f)
        mesh = Mesh(a, work)
        job = f"{mode}-{round_}"
        try:
            wait_for_pool(a, mesh.coordinator, 3)
            argv = [a.pipemesh, "train", "--coordinator", mesh.coordinator.endpoint, "--job", job, "--json",
                    "--model", model, "--stages", "2", "--epochs", str(a.epochs), "--micro-batches", "4",
                    "--checkpoint-every", str(a.checkpoint_every), "--max-restarts", "100"]
            started = time.time()
            train = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            kills, restarts, kill_times = 0, [], []
            next_fault = started + gaps[0] if mode != "clean" else None
            while True:
                record = mesh.record(job)
                state = record and record.get("state")
                if state in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
                    break
                if next_fault and time.time() >= next_fault and state == "JOB_STATE_RUNNING":
                    held = [p for p in mesh.partitions if p.endpoint in record.get("partitions", [])]
                    victim = held[victims[kills] % len(held)]
                    kill_times.append(time.time())
                    if mode == "pipemesh":
                        victim.process.kill()
                        victim.process.wait()
                        restarts.append(mesh.restart_partition(victim, a.restart_delay))
                    else:
                        victim.process.kill()
                        train.kill()
                        listens = mesh.kill_all()
                        time.sleep(a.restart_delay)
                        mesh.start(listens)
                    kills += 1
                    next_fault = time.time() + gaps[kills % len(gaps)]
                time.sleep(0.25)
            for thread in restarts:
                thread.join()
            train.kill()
            train.wait()
            if record["state"] != "JOB_STATE_SUCCEEDED":
                raise RuntimeError(f"{job} ended {record['state']}: {record.get('error')}")
            seconds = record["endedUnixSeconds"] - started
            steps = int(record["totalSteps"])
            examples = steps * 64  # batch-size 64, one replica
            faults = record.get("faults", [])
            # Each kill's stop, in order: from the kill to the job stepping again.
            stepping_again = [round(f["unixSeconds"] + f.get("recoverySeconds", 0) - killed, 2)
                              for killed, f in zip(kill_times, faults)]
            return {"mode": mode, "round": round_, "seconds": seconds, "kills": kills, "steps": steps,
                    "goodput": examples / seconds,
                    "steps_redone": sum(int(f.get("stepsRedone", 0)) for f in faults),
                    "kill_to_stepping_seconds": stepping_again}
        finally:
            mesh.stop()


def main():
    a = parse()
    rng = random.Random(a.seed)
    gaps = [rng.uniform(a.min_gap, a.max_gap) for _ in range(100)]
    victims = [rng.randrange(2) for _ in range(100)]
    results = []
    for round_ in range(a.rounds):
        for mode in MODES:
            result = run(a, mode, round_, gaps, victims)
            print(json.dumps(result), flush=True)
            results.append(result)
    table(a, results)


def table(a, results):
    def median(mode, key):
        return statistics.median(r[key] for r in results if r["mode"] == mode)
    clean = median("clean", "goodput")
    print(f"\n{a.rounds} round(s), MLP 64-1024-1024-10 on digits in 2 stages, {a.epochs} epochs, checkpoint every "
          f"{a.checkpoint_every} steps, kill -9 every {a.min_gap:g}-{a.max_gap:g} s, restarted after "
          f"{a.restart_delay:g} s; medians")
    print("| run | kills | wall time (s) | goodput (examples/s) | / fault-free | steps run twice |")
    print("| --- | --- | --- | --- | --- | --- |")
    for mode in MODES:
        goodput = median(mode, "goodput")
        print(f"| {mode} | {median(mode, 'kills'):.0f} | {median(mode, 'seconds'):.1f} | {goodput:.0f} "
              f"| {goodput / clean:.3f} | {median(mode, 'steps_redone'):.0f} |")
    lost = {mode: 1 - median(mode, "goodput") / clean for mode in ("pipemesh", "restart-all")}
    if lost["pipemesh"] > 0:
        print(f"\ngoodput lost to the kills: pipemesh {lost['pipemesh']:.1%}, restart-all {lost['restart-all']:.1%} "
              f"({lost['restart-all'] / lost['pipemesh']:.1f}× pipemesh's)")


if __name__ == "__main__":
    main()
