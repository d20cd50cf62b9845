"""What the benches that start a mesh of `pipemesh serve` processes share: the processes, and the
MLP and random data they train. Imported by bench/scale/scale.py and bench/links/links.py."""
import json
import os
import subprocess
import threading


class Service:
    """One `pipemesh serve ROLE` process, started from `argv` (which may run it through another
    command: `ip netns exec`, a memory cgroup) and ready once it printed its 'listening on' line;
    `endpoint` is the address that line gives."""

    def __init__(self, argv, role, log_path, name, env=None):
        self.name = name
        self.log = open(log_path, "a")
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                        env={**os.environ, **(env or {})})
        prefix = f"{role} listening on "
        # A service that never says it listens is killed after 60 s, which ends its output.
        timer = threading.Timer(60, self.process.kill)
        timer.start()
        endpoint = None
        try:
            for line in self.process.stdout:
                if line.startswith(prefix):
                    endpoint = line[len(prefix):].strip()
                    break
        except BaseException:
            self.stop()
            raise
        finally:
            timer.cancel()
        if endpoint is None or self.process.poll() is not None:
            self.stop()
            raise RuntimeError(f"{name} exited or did not listen within 60 s; see {log_path}")
        self.endpoint = endpoint

    def status_bytes(self, field):
        """A byte count of /proc/PID/status (VmRSS, VmHWM); 0 once the process is gone."""
        try:
            with open(f"/proc/{self.process.pid}/status") as status:
                for line in status:
                    if line.startswith(field + ":"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def peak_rss_bytes(self):
        return self.status_bytes("VmHWM")

    def stop(self):
        """SIGTERM, then SIGKILL after 30 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()
        self.log.close()


def write_mlp(work, name, layers, examples):
    """Writes model.json (an MLP of `layers` widths, ReLU between, softmax cross-entropy) and
    data.npz (`examples` rows of standard-normal inputs and random classes) into `work`."""
    import numpy as np

    spec = {"name": name, "inputShape": [str(layers[0])], "seed": "7",
            "layers": [{"dense": {"units": str(u), **({"activation": "ACTIVATION_RELU"} if i < len(layers) - 2 else {})}}
                       for i, u in enumerate(layers[1:])],
            "loss": {"softmaxCrossEntropy": {}}}
    with open(os.path.join(work, "model.json"), "w") as f:
        json.dump(spec, f)
    rng = np.random.default_rng(0)
    np.savez(os.path.join(work, "data.npz"), x=rng.standard_normal((examples, layers[0]), dtype=np.float32),
             y=rng.integers(0, layers[-1], examples).astype(np.int32))
