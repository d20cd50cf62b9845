"""Fixtures of the hostile-input suite: settings, stubs, and a session-wide
mesh (see hostile_mesh.py) that is stopped at the end even on failure."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hostile_mesh import SUMMARY_KEY, Mesh, MeshFactory, Settings, generate_stubs, settings_from_env  # noqa: E402


@pytest.fixture(scope="session")
def settings() -> Settings:
    return settings_from_env()


@pytest.fixture(scope="session")
def protos(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return generate_stubs(tmp_path_factory.mktemp("stubs"))


@pytest.fixture(scope="session")
def mesh_factory(settings: Settings, protos: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshFactory]:
    factory = MeshFactory(settings, protos, tmp_path_factory.mktemp("mesh"))
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def mesh(mesh_factory: MeshFactory) -> Mesh:
    return mesh_factory.start()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    """Prints the hostile run's report (tables and failures) even when output is captured."""
    summary = config.stash.get(SUMMARY_KEY, None)
    if summary:
        terminalreporter.section("hostile requests")
        terminalreporter.write_line(summary)
