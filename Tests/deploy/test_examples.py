"""Every example of examples/README.md trains with its command as written:
each row's command runs with the binary just built, in one process (a text
cut to its first 32 KB, so that it is brief), and its loss must fall well
below where it started. The figure each row states for the full command is
measured by bench/examples/run and recorded in docs/benchmarks.md."""

from __future__ import annotations

import csv
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from conftest import REPOSITORY
from test_doc_commands import binary

README = REPOSITORY / "examples" / "README.md"


def rows() -> list[tuple[str, list[str], str]]:
    """(spec, command words, stated figure) of each row of the examples table."""
    found = []
    for line in README.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`") and cells[0].endswith(".json`"):
            found.append((cells[0].strip("`"), shlex.split(cells[2].strip("`")), cells[3]))
    return found


ROWS = rows()


def test_every_spec_has_a_row_with_a_figure() -> None:
    specs = sorted(path.name for path in (REPOSITORY / "examples").glob("*.json"))
    assert sorted(spec for spec, _, _ in ROWS) == specs
    for spec, words, figure in ROWS:
        assert words[:3] == ["scripts/up", "--model", f"examples/{spec}"], f"{spec}: {words}"
        assert re.search(r"\d", figure), f"{spec} states no figure: {figure!r}"


def short(words: list[str], text_excerpt: Path) -> list[str]:
    """The command's options, run in one process, on an excerpt of a text."""
    options = list(words[1:])
    if "--dataset" in options:
        index = options.index("--dataset") + 1
        if options[index] == "shakespeare":
            options[index] = str(text_excerpt)
    return options + ["--in-process"]


@pytest.mark.parametrize("spec, words, figure", ROWS, ids=[spec for spec, _, _ in ROWS])
def test_each_example_lowers_its_loss(spec: str, words: list[str], figure: str, tmp_path: Path) -> None:
    pipemesh = binary()
    assert pipemesh.is_file(), f"{pipemesh} is not built: run swift build first"
    (tmp_path / "examples").symlink_to(REPOSITORY / "examples")
    excerpt = tmp_path / "excerpt.txt"
    excerpt.write_bytes((REPOSITORY / "datasets" / "shakespeare" / "tragedies.txt").read_bytes()[:32_768])
    options = short(words, excerpt)
    run = subprocess.run([str(pipemesh), "up", *options], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PIPEMESH_EXIT_WITH_PARENT": "1"})
    assert run.returncode == 0, f"pipemesh up {' '.join(options)}:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
    (folder,) = (tmp_path / "runs").iterdir()
    with open(folder / "metrics.csv") as file:
        losses = [float(row["loss"]) for row in csv.DictReader(file)]
    assert len(losses) >= 10, losses
    first = sum(losses[:3]) / 3
    last = sum(losses[-3:]) / 3
    assert last < 0.8 * first, f"{spec}: the loss went from {first:.4f} to {last:.4f} ({losses})"
