"""Shared helpers of the deployment tests: the repository's paths, a parser
for unit and environment files, an install of the systemd files into a
temporary root, and rendering of the Helm chart."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
SYSTEMD = REPOSITORY / "systemd"
INSTALL_SYSTEMD = REPOSITORY / "scripts" / "install-systemd"
CHART = REPOSITORY / "helm" / "pipemesh"
HOST_UNITS = Path("/usr/lib/systemd/system")

# The units the repository ships and the names they are checked under: a
# template is checked through an instance, as systemd loads it.
UNITS = {
    "pipemesh-ps@.service": "pipemesh-ps@0.service",
    "pipemesh-partition@.service": "pipemesh-partition@0-1.service",
    "pipemesh-coordinator.service": "pipemesh-coordinator.service",
    "pipemesh.target": "pipemesh.target",
    "pipemesh.slice": "pipemesh.slice",
}
SERVICES = [name for name in UNITS if name.endswith(".service")]


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file, each an ordered list of (key, value): keys
    such as Environment= may repeat, so no dict per section."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"line {number} is outside any section: {line!r}"
        key, equals, value = line.partition("=")
        assert equals, f"line {number} is not KEY=value: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values_of(section: list[tuple[str, str]], key: str) -> list[str]:
    return [value for name, value in section if name == key]


def value_of(section: list[tuple[str, str]], key: str) -> str:
    found = values_of(section, key)
    assert len(found) == 1, f"{key}= is set {len(found)} times, expected once: {found}"
    return found[0]


ENVIRONMENT_LINE = re.compile(r"^(#?)\s*([A-Z][A-Z0-9_]*)=(.*)$")


def parse_environment(text: str) -> tuple[dict[str, str], set[str]]:
    """An environment file's active assignments and the names of the
    commented-out ones (the documented options)."""
    active: dict[str, str] = {}
    commented: set[str] = set()
    for line in text.splitlines():
        match = ENVIRONMENT_LINE.match(line.strip())
        if not match:
            assert not line.strip() or line.lstrip().startswith("#"), f"not NAME=value nor a comment: {line!r}"
            continue
        hashed, name, value = match.groups()
        if hashed:
            commented.add(name)
        else:
            active[name] = value
    return active, commented


def run(*command: str | os.PathLike[str], check: bool = False, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [os.fspath(part) for part in command], capture_output=True, text=True, timeout=timeout, check=check)


def write_stand_in_binary(path: Path) -> Path:
    """A stand-in for the pipemesh executable: verify only needs an
    executable file at the ExecStart path."""
    path.write_text("#!/bin/sh\necho 'stand-in for pipemesh' >&2\nexit 1\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def install_into(root: Path, binary: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """Installs with `binary`; a stand-in cannot make certificates, so
    without options the install makes none (--no-tls)."""
    return run(INSTALL_SYSTEMD, "--root", root, "--binary", binary, *(options or ("--no-tls",)), timeout=120)


@pytest.fixture(scope="session")
def stand_in_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_stand_in_binary(tmp_path_factory.mktemp("bin") / "pipemesh")


@pytest.fixture(scope="session")
def verify_root(tmp_path_factory: pytest.TempPathFactory, stand_in_binary: Path) -> Path:
    """A root with the units installed by scripts/install-systemd and the
    host's own system units (sysinit.target, network-online.target, ...) that
    ours depend on, so `systemd-analyze verify --root` resolves everything
    without a running systemd."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd): cannot verify unit files")
    if not HOST_UNITS.is_dir():
        pytest.skip(f"{HOST_UNITS} is missing: no system units to resolve the units' dependencies against")
    root = tmp_path_factory.mktemp("verify-root")
    result = install_into(root, stand_in_binary)
    assert result.returncode == 0, result.stderr
    shutil.copytree(HOST_UNITS, root / HOST_UNITS.relative_to("/"), symlinks=True)
    return root


def verify(root: Path, *units: str) -> subprocess.CompletedProcess[str]:
    return run("systemd-analyze", "verify", "--man=no", f"--root={root}", *units)
