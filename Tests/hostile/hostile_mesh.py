"""The hostile suite's settings and its mesh: Python stubs generated from
protos/ at test time, and a real local mesh (one ps, two partitions, a
coordinator) with one trained job, started from the built `pipemesh` binary;
every process started is stopped, even on failure."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest

from hostile_requests import MeshContext, PsVariable, StageTarget, select_rpcs

REPOSITORY = Path(__file__).resolve().parents[2]
PROTOS = REPOSITORY / "protos"
MODEL = REPOSITORY / "examples" / "mlp-digits.json"
TRAINED_JOB = "hostile-realism"  # trained through the coordinator before the attack
STAGE_JOB = "hostile-stage"  # loaded directly on both partitions
PS_MEMORY_BUDGET_MIB = 512  # given to the ps when it has --memory-budget-mib
RSS_ALLOWANCE_MIB = 256  # runtime overhead on top of the budget
# any service above this is killed (protects the host); PIPEMESH_HOSTILE_RSS_CAP_MIB overrides it
RSS_SAFETY_CAP_MIB = int(os.environ.get("PIPEMESH_HOSTILE_RSS_CAP_MIB", "") or 2048)
START_TIMEOUT = 30.0
CLIENT_OPTIONS = [("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20)]
SUMMARY_KEY = pytest.StashKey[str]()


@dataclass(frozen=True)
class Settings:
    """The knobs of a run, from PIPEMESH_HOSTILE_* variables."""

    binary: Path
    requests: int
    seconds: float
    seed: int
    only: tuple[int, ...]  # replay only these indices
    rpcs: str  # filter, "" for all
    concurrency: int
    deadline: float
    log: str  # a JSON-lines file of every answer, "" for none

    @property
    def ps_rss_bound_mib(self) -> int:
        return PS_MEMORY_BUDGET_MIB + RSS_ALLOWANCE_MIB


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def settings_from_env() -> Settings:
    """Settings from PIPEMESH_BIN and PIPEMESH_HOSTILE_*; fails the run on a missing binary."""
    binary = os.environ.get("PIPEMESH_BIN", "").strip()
    path = Path(binary) if binary else REPOSITORY / ".build" / "debug" / "pipemesh"
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"no pipemesh binary at {path}: build it or set PIPEMESH_BIN", pytrace=False)
    only = tuple(int(i) for i in os.environ.get("PIPEMESH_HOSTILE_ONLY", "").replace(" ", "").split(",") if i)
    rpcs = os.environ.get("PIPEMESH_HOSTILE_RPCS", "")
    select_rpcs(rpcs)  # fails early on a bad filter
    return Settings(
        binary=path, requests=_env_int("PIPEMESH_HOSTILE_REQUESTS", 5200),
        seconds=float(os.environ.get("PIPEMESH_HOSTILE_SECONDS", "") or 120), seed=_env_int("PIPEMESH_HOSTILE_SEED", 1),
        only=only, rpcs=rpcs, concurrency=_env_int("PIPEMESH_HOSTILE_CONCURRENCY", 32),
        deadline=float(os.environ.get("PIPEMESH_HOSTILE_DEADLINE", "") or 2.0), log=os.environ.get("PIPEMESH_HOSTILE_LOG", ""))


def generate_stubs(out: Path) -> SimpleNamespace:
    """The pipemesh.v1 message modules, generated from protos/ into `out` with grpc_tools.protoc."""
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.glob("pipemesh/**/*.proto"))
    result = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", str(PROTOS), f"--python_out={out}", *files],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"grpc_tools.protoc failed:\n{result.stderr}"
    sys.path.insert(0, str(out))
    from pipemesh.v1 import (coordinator_pb2, model_pb2, optimizer_pb2, parameter_server_pb2,  # noqa: E402
                             partition_pb2, tensor_pb2)
    return SimpleNamespace(coordinator=coordinator_pb2, partition=partition_pb2, parameter_server=parameter_server_pb2,
                           model=model_pb2, optimizer=optimizer_pb2, tensor=tensor_pb2)


# -- processes ---------------------------------------------------------------------------------


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process in MiB (VmRSS), None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return None


@dataclass
class Service:
    """One started pipemesh process."""

    name: str  # "ps", "partition-a", "partition-b", "coordinator"
    process: subprocess.Popen
    endpoint: str
    stderr_path: Path
    peak_rss_mib: float = 0.0
    rss_now_mib: float = 0.0  # the watchdog's latest sample
    window_peak_mib: float = 0.0  # the largest sample since the last mark()
    killed_for_memory: str = ""

    def mark(self) -> float:
        """Starts a new window for window_peak_mib; returns the current sample."""
        self.window_peak_mib = self.rss_now_mib
        return self.rss_now_mib

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def exit_description(self) -> str:
        code = self.process.poll()
        if code is None:
            return "running"
        if self.killed_for_memory:
            return f"killed by the suite: {self.killed_for_memory}"
        if code < 0:
            return f"killed by signal {signal.Signals(-code).name}"
        return f"exited with status {code}"

    def stderr_excerpt(self) -> str:
        """The crash in the service's stderr: Swift's fatal error line and the
        crashed thread's first frames in Sources/ (else stderr's last lines)."""
        try:
            text = [line.rstrip() for line in self.stderr_path.read_text(errors="replace").splitlines() if line.strip()]
        except FileNotFoundError:
            return ""
        picked = [line for line in text if re.search(r"Fatal error|Program crashed|Precondition failed|Assertion failed", line)]
        crashed = next((i for i, line in enumerate(text) if re.match(r"Thread \d+ .*crashed:", line)), None)
        if crashed is not None:
            frames = [line for line in text[crashed + 1:crashed + 40] if "/Sources/" in line][:3]
            picked += [re.sub(r"^\s*\d+\s+(\[\w+\]\s+)*0x[0-9a-f]+\s+", "  at ", f).replace(str(REPOSITORY) + "/", "") for f in frames]
        return "\n".join(line[:240] for line in (picked or text[-8:]))


def _start(binary: Path, role: str, name: str, args: list[str], logs: Path) -> Service:
    """Starts `pipemesh serve ROLE` in its own process group and waits for its `listening on` line."""
    stderr_path = logs / f"{name}.stderr"
    env = dict(os.environ, PIPEMESH_EXIT_WITH_PARENT="1")
    process = subprocess.Popen([str(binary), "serve", role, "--listen", "127.0.0.1:0", "--grace-seconds", "1", *args],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr_path.open("wb"),
                               env=env, start_new_session=True)
    lines: queue.Queue[str] = queue.Queue()

    def drain() -> None:  # reads the announcement, then keeps the pipe from filling
        for raw in process.stdout:  # type: ignore[union-attr]
            lines.put(raw.decode(errors="replace"))

    threading.Thread(target=drain, daemon=True, name=f"{name}-stdout").start()
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        match = re.search(rf"{role} listening on (127\.0\.0\.1:\d+)", line)
        if match:
            return Service(name, process, match.group(1), stderr_path)
    _stop_processes([process])
    raise RuntimeError(f"{name} did not announce its port within {START_TIMEOUT:.0f} s "
                       f"({'exited ' + str(process.poll()) if process.poll() is not None else 'still running'}):\n"
                       f"{stderr_path.read_text(errors='replace')[-2000:]}")


def _stop_processes(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to each process group, then SIGKILL to what is left after 5 s."""
    for process in processes:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:  # the group too: nothing the service may have started outlives it
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if process.stdout:
            process.stdout.close()


class Mesh:
    """A running mesh: its services, what the generator may aim at, and a
    watchdog that samples resident memory and kills a runaway process."""

    def __init__(self, services: list[Service], logs: Path, memory_option: bool) -> None:
        self.services = services
        self.logs = logs
        self.memory_option = memory_option
        self.context: MeshContext | None = None
        self._stop = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, daemon=True, name="rss-watchdog")
        self._watchdog.start()

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    @property
    def ps(self) -> Service:
        return self.service("ps")

    def dead(self) -> list[Service]:
        return [s for s in self.services if not s.alive]

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            for service in self.services:
                rss = rss_mib(service.process.pid) if service.alive else None
                if rss is None:
                    continue
                service.rss_now_mib = rss
                service.window_peak_mib = max(service.window_peak_mib, rss)
                service.peak_rss_mib = max(service.peak_rss_mib, rss)
                if rss > RSS_SAFETY_CAP_MIB and not service.killed_for_memory:
                    service.killed_for_memory = f"resident memory {rss:.0f} MiB over the suite's safety cap of {RSS_SAFETY_CAP_MIB} MiB"
                    try:
                        os.kill(service.process.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

    def stop(self) -> None:
        self._stop.set()
        _stop_processes([s.process for s in reversed(self.services)])


class MeshFactory:
    """Starts meshes and stops every one it started."""

    def __init__(self, settings: Settings, protos: SimpleNamespace, root: Path) -> None:
        self.settings = settings
        self.pb = protos
        self.root = root
        self.meshes: list[Mesh] = []
        help_text = subprocess.run([str(settings.binary), "serve", "ps", "--help"], capture_output=True, text=True, timeout=60).stdout
        self.memory_option = "--memory-budget-mib" in help_text

    def start(self) -> Mesh:
        """Starts ps, two partitions and a coordinator, trains a job and loads a stage."""
        logs = self.root / f"mesh{len(self.meshes)}"
        (logs / "checkpoints").mkdir(parents=True)
        services: list[Service] = []
        mesh = Mesh(services, logs, self.memory_option)
        self.meshes.append(mesh)
        binary = self.settings.binary
        ps_args = ["--checkpoint-dir", str(logs / "checkpoints")]
        if self.memory_option:
            ps_args += ["--memory-budget-mib", str(PS_MEMORY_BUDGET_MIB)]
        services.append(_start(binary, "ps", "ps", ps_args, logs))
        services.append(_start(binary, "partition", "partition-a", [], logs))
        services.append(_start(binary, "partition", "partition-b", [], logs))
        partitions = f"{services[1].endpoint};{services[2].endpoint}"
        services.append(_start(binary, "coordinator", "coordinator", ["--ps", services[0].endpoint, "--partitions", partitions], logs))
        mesh.context = self._prepare(mesh)
        return mesh

    def _prepare(self, mesh: Mesh) -> MeshContext:
        """Trains TRAINED_JOB (one epoch of digits), loads STAGE_JOB on both
        partitions and finds the trained job's stage ids and the ps variables."""
        pb = self.pb
        from google.protobuf import json_format

        model_json = MODEL.read_text()
        spec = json_format.Parse(model_json, pb.model.ModelSpec())
        coordinator = mesh.service("coordinator").endpoint
        with grpc.insecure_channel(coordinator, options=CLIENT_OPTIONS) as channel:
            train = channel.unary_stream("/pipemesh.v1.Coordinator/Train", request_serializer=pb.coordinator.TrainRequest.SerializeToString,
                                         response_deserializer=pb.coordinator.TrainProgress.FromString)
            # Split at one place, so that the trained job's stages are those the plan below names.
            request = pb.coordinator.TrainRequest(job=TRAINED_JOB, model=spec, epochs=1, batch_size=64, micro_batches=4, split_points=[1],
                                                  data=pb.coordinator.DataSource(dataset=pb.coordinator.DatasetReference(uri="digits")))
            progress = list(train(request, timeout=300))
            assert progress and progress[-1].done, f"training {TRAINED_JOB} did not finish: {progress[-1:]}"
            plan = channel.unary_unary("/pipemesh.v1.Coordinator/Plan", request_serializer=pb.coordinator.PlanRequest.SerializeToString,
                                       response_deserializer=pb.coordinator.PlanResponse.FromString)(
                pb.coordinator.PlanRequest(model=spec, stages=2, split_points=[1]), timeout=30)
        # Each stage loads the part the plan gives it.
        ranges = [((s.first_layer, s.first_layer_inputs), (s.end_layer, s.end_layer_inputs)) for s in plan.stages]
        stages: list[StageTarget] = []
        for index, (first, end) in enumerate(ranges):
            partition = mesh.services[1 + index].endpoint
            with grpc.insecure_channel(partition, options=CLIENT_OPTIONS) as channel:
                load = channel.unary_unary("/pipemesh.v1.Partition/LoadStage",
                                           request_serializer=pb.partition.LoadStageRequest.SerializeToString,
                                           response_deserializer=pb.partition.LoadStageResponse.FromString)
                loaded = load(pb.partition.LoadStageRequest(job=STAGE_JOB, model=spec, stage=index, first_layer=first[0],
                                                            first_layer_inputs=first[1], end_layer=end[0], end_layer_inputs=end[1],
                                                            parameter_servers=[mesh.ps.endpoint]), timeout=60)
            width = lambda shape: int(shape[-1]) if len(shape) else 1  # noqa: E731
            stages.append(StageTarget(index, STAGE_JOB, width(loaded.input_shape), width(loaded.output_shape), index == len(ranges) - 1))
        # The trained job's stages are known to the partitions by a run id; the ps checkpoint names it.
        run_id, variables = self._ps_variables(mesh)
        if run_id:
            stages += [StageTarget(s.partition, run_id, s.input_width, s.output_width, s.last) for s in stages]
        return MeshContext(coordinator=coordinator, ps=mesh.ps.endpoint, partitions=(mesh.services[1].endpoint, mesh.services[2].endpoint),
                           trained_job=TRAINED_JOB, model_json=model_json, stages=tuple(stages), variables=tuple(variables))

    def _ps_variables(self, mesh: Mesh) -> tuple[str | None, list[PsVariable]]:
        """The trained job's run id and every ps variable, from a checkpoint's safetensors header."""
        pb = self.pb
        with grpc.insecure_channel(mesh.ps.endpoint, options=CLIENT_OPTIONS) as channel:
            checkpoint = channel.unary_unary("/pipemesh.v1.ParameterServer/Checkpoint",
                                             request_serializer=pb.parameter_server.CheckpointRequest.SerializeToString,
                                             response_deserializer=pb.parameter_server.CheckpointResponse.FromString)
            path = Path(checkpoint(pb.parameter_server.CheckpointRequest(), timeout=60).path)
        with path.open("rb") as file:
            (size,) = struct.unpack("<Q", file.read(8))
            header = json.loads(file.read(size))
        variables = [PsVariable(name.split("/", 1)[0], name.split("/", 1)[1], tuple(entry["shape"]))
                     for name, entry in header.items() if name != "__metadata__" and "/" in name]
        run_ids = sorted({v.job for v in variables if v.job.startswith(TRAINED_JOB + ".")})
        assert any(v.job == STAGE_JOB for v in variables), f"the ps checkpoint {path} holds no variable of {STAGE_JOB}"
        return (run_ids[0] if run_ids else None), variables

    def close(self) -> None:
        for mesh in self.meshes:
            mesh.stop()
