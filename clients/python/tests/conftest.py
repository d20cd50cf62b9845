"""A real local mesh for the client's tests: `pipemesh serve` processes from PIPEMESH_BIN (the debug
build when unset) on 127.0.0.1 ports they pick, each stopped at the end, even on failure."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPOSITORY / "clients" / "python" / "src"))


def binary() -> Path:
    path = Path(os.environ.get("PIPEMESH_BIN", "") or REPOSITORY / ".build" / "debug" / "pipemesh")
    if not path.is_file():
        pytest.fail(f"no pipemesh binary at {path}: build it or set PIPEMESH_BIN", pytrace=False)
    return path


class Service:
    """One `pipemesh serve ROLE` process, its address read from its 'listening on' line."""

    def __init__(self, role: str, arguments: list[str], log: Path):
        self.log = open(log, "w")
        self.process = subprocess.Popen([str(binary()), "serve", role, "--listen", "127.0.0.1:0", *arguments],
                                        stdout=subprocess.PIPE, stderr=self.log, text=True)
        deadline = time.monotonic() + 30
        prefix = f"{role} listening on "
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            if line.startswith(prefix):
                self.endpoint = line[len(prefix):].strip()
                return
        self.stop()
        pytest.fail(f"{role} did not start; see {log}: {log.read_text()[-2000:]}", pytrace=False)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


class Mesh:
    """A ps, `partitions` partitions and a coordinator over them (its default shape: one stage per
    partition), with `coordinator_arguments` added to the coordinator's command line and
    `role_arguments(role)` to each process's (TLS)."""

    def __init__(self, folder: Path, partitions: int = 2, coordinator_arguments=(), role_arguments=lambda role: []):
        folder.mkdir(exist_ok=True)
        self.folder = folder
        self.services: list[Service] = []
        try:
            ps = self.start("ps", role_arguments("ps"))
            members = [self.start("partition", role_arguments("partition"), f"partition{i}")
                       for i in range(partitions)]
            self.coordinator = self.start(
                "coordinator", ["--ps", ps.endpoint, "--partitions", ";".join(m.endpoint for m in members),
                                *coordinator_arguments, *role_arguments("coordinator")])
        except BaseException:
            self.stop()
            raise

    def start(self, role: str, arguments: list[str], name: str | None = None) -> Service:
        service = Service(role, arguments, self.folder / f"{name or role}.log")
        self.services.append(service)
        return service

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()


@pytest.fixture(scope="session")
def folder():
    with tempfile.TemporaryDirectory(prefix="pipemesh-python-") as path:
        yield Path(path)


@pytest.fixture(scope="session")
def mesh(folder):
    """A mesh without authentication, shared by the tests that do not change who may call."""
    mesh = Mesh(folder / "open")
    yield mesh
    mesh.stop()
