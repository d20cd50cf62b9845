"""The shell blocks of README.md, docs/operations.md and docs/models.md against the code, so
that they cannot drift from it again: each block parses as bash; every
`pipemesh` command names subcommands the binary has and only options they
declare; every repository path a block names exists (scripts executable, with
the options used); every systemd unit named ships in systemd/; every Helm
--set names a value of the chart; every gRPC method named is in protos/;
coordinator addresses use its documented port. What this machine can run as
written runs: every `$BIN/pipemesh` line of the README's tour (with the
binary just built: a plan, and local meshes that train and write run
folders); what needs root, systemd, Kubernetes or other hosts is checked
as above only. And every help page of the binary wraps evenly: no word left
on a line it would have fit on the line before (a hard newline in a help
string)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

from conftest import CHART, REPOSITORY, SYSTEMD

DOCUMENTS = ["README.md", "docs/operations.md", "docs/models.md"]
SEPARATORS = {";", "|", "&&", "||", "&", "(", ")"}
# Folders of the repository a command may name files in.
REPOSITORY_FOLDERS = ("examples/", "scripts/", "helm/", "clients/", "systemd/", "docs/", "datasets/")


def binary() -> Path:
    """The pipemesh the test command just built."""
    if os.environ.get("PIPEMESH_BIN"):
        return Path(os.environ["PIPEMESH_BIN"]).resolve()
    folder = subprocess.run(["swift", "build", "--show-bin-path"], cwd=REPOSITORY, capture_output=True, text=True,
                            check=True).stdout.strip()
    return Path(folder) / "pipemesh"


@pytest.fixture(scope="module")
def pipemesh() -> Path:
    path = binary()
    assert path.is_file(), f"{path} is not built: run swift build first"
    return path


def blocks() -> list[tuple[str, int, str]]:
    """(document, line, text) of every ```sh block."""
    found = []
    for document in DOCUMENTS:
        text = (REPOSITORY / document).read_text()
        for match in re.finditer(r"^```sh\n(.*?)^```", text, re.S | re.M):
            found.append((document, text[:match.start()].count("\n") + 1, match.group(1)))
    return found


BLOCKS = blocks()
BLOCK_IDS = [f"{document}:{line}" for document, line, _ in BLOCKS]


def commands(block: str) -> list[list[str]]:
    """Each simple command of a block as words, without `sudo` and leading
    variable assignments; comments and line continuations gone."""
    joined = re.sub(r"\\\n", " ", block)
    found = []
    for line in joined.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words: list[str] = []
        for token in list(lexer) + [";"]:
            if token in SEPARATORS:
                while words and (words[0] == "sudo" or re.fullmatch(r"[A-Z_]+=.*", words[0])):
                    words.pop(0)
                if words:
                    found.append(words)
                words = []
            else:
                words.append(token)
    return found


@lru_cache(maxsize=None)
def help_text(pipemesh: Path, path: tuple[str, ...]) -> str:
    # 80 columns, whatever the terminal running the tests is.
    run = subprocess.run([str(pipemesh), *path, "--help"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "COLUMNS": "80"})
    assert run.returncode == 0, f"pipemesh {' '.join(path)} --help failed: {run.stderr}"
    return run.stdout


def subcommands(help_page: str) -> list[str]:
    section = help_page.split("SUBCOMMANDS:", 1)
    if len(section) == 1:
        return []
    return re.findall(r"^  ([a-z][a-z-]*)", section[1], re.M)


def options(pipemesh: Path, path: tuple[str, ...]) -> set[str]:
    """What `pipemesh PATH` takes: its options, and its default subcommand's."""
    page = help_text(pipemesh, path)
    # Only the OPTIONS section's entries, not options its prose mentions.
    section = page.split("OPTIONS:", 1)[1].split("SUBCOMMANDS:", 1)[0] if "OPTIONS:" in page else ""
    entries = re.findall(r"^\s+((?:-\w, )?--[a-z0-9][a-z0-9-]*)", section, re.M)
    declared = {entry.split(", ")[-1] for entry in entries} | {"--help", "--version"}
    default = re.search(r"^  ([a-z][a-z-]*) \(default\)", page, re.M)
    return declared | (options(pipemesh, path + (default.group(1),)) if default else set())


def as_pipemesh(words: list[str]) -> list[str] | None:
    """`words` as the pipemesh command it runs: a pipemesh command itself, or
    a script that passes its arguments on to one (scripts/up)."""
    if words[0].endswith("pipemesh"):
        return words
    script = REPOSITORY / words[0]
    if words[0].startswith("scripts/") and script.is_file():
        passed = re.search(r'pipemesh"? ([a-z ]+) "\$@"', script.read_text())
        if passed:
            return ["pipemesh", *passed.group(1).split(), *words[1:]]
    return None


@pytest.mark.parametrize("document, line, block", BLOCKS, ids=BLOCK_IDS)
def test_every_block_parses_as_bash(document: str, line: int, block: str) -> None:
    run = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True)
    assert run.returncode == 0, f"{document}:{line}: {run.stderr}"


def test_the_documents_have_blocks_to_check() -> None:
    # The README's set-up and tour, the operations guide's installs, backups and checks.
    assert len([b for b in BLOCKS if b[0] == "README.md"]) >= 3
    assert len([b for b in BLOCKS if b[0] == "docs/operations.md"]) >= 8


@pytest.mark.parametrize("document, line, block", BLOCKS, ids=BLOCK_IDS)
def test_pipemesh_commands_name_real_subcommands_and_options(pipemesh: Path, document: str, line: int,
                                                            block: str) -> None:
    for words in filter(None, map(as_pipemesh, commands(block))):
        path: list[str] = []
        rest = words[1:]
        while rest and not rest[0].startswith("-") and rest[0] in subcommands(help_text(pipemesh, tuple(path))):
            path.append(rest.pop(0))
        where = f"{document}:{line}: pipemesh {' '.join(path)}"
        assert path, f"{document}:{line}: {' '.join(words)} names no subcommand"
        declared = options(pipemesh, tuple(path))
        used = {word.split("=", 1)[0] for word in rest if word.startswith("--")}
        assert used <= declared, f"{where} has no {sorted(used - declared)}"
        for before, word in zip([""] + rest, rest):
            # A coordinator is reached on its documented port.
            if word.startswith("--coordinator=") or before in ("--coordinator", "--join"):
                assert word.split("=")[-1].endswith(":7000"), f"{where}: {word} is not the coordinator's port 7000"


@pytest.mark.parametrize("document, line, block", BLOCKS, ids=BLOCK_IDS)
def test_named_files_units_values_and_methods_exist(document: str, line: int, block: str) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    methods = set()
    for proto in (REPOSITORY / "protos").rglob("*.proto"):
        text = proto.read_text()
        package = re.search(r"^package ([\w.]+);", text, re.M).group(1)
        for service, body in re.findall(r"^service (\w+) \{(.*?)^\}", text, re.S | re.M):
            methods |= {f"{package}.{service}/{method}" for method in re.findall(r"rpc (\w+)\(", body)}
    methods.add("grpc.health.v1.Health/Check")
    for words in commands(block):
        where = f"{document}:{line}: {' '.join(words)}"
        for word in words:
            if word.startswith(REPOSITORY_FOLDERS) or word.startswith("./clients/"):
                assert (REPOSITORY / word).exists(), f"{where}: no {word} in the repository"
        if words[0].startswith("scripts/"):
            script = REPOSITORY / words[0]
            assert os.access(script, os.X_OK), f"{where}: {words[0]} is not executable"
            if as_pipemesh(words) is None:
                for option in (word.split("=")[0] for word in words[1:] if word.startswith("--")):
                    assert option in script.read_text(), f"{where}: {words[0]} takes no {option}"
        if words[0] in ("systemctl", "journalctl"):
            for word in words[1:]:
                for unit in re.findall(r"pipemesh[\w@.*-]*", word.split("=")[-1]):
                    if "*" in unit or unit in ("pipemesh", "pipemesh-"):
                        continue
                    template = re.sub(r"@[^.]+", "@", unit)
                    shipped = [template, f"{template}.service"]
                    assert any((SYSTEMD / name).is_file() for name in shipped), f"{where}: no unit {unit} in systemd/"
        if words[0] == "helm":
            for flag, setting in zip(words, words[1:]):
                if flag in ("--set", "--set-json", "--set-string"):
                    node = values
                    for key in setting.split("=", 1)[0].split("."):
                        assert isinstance(node, dict) and key in node, f"{where}: the chart has no value {setting}"
                        node = node[key]
        if words[0] == "grpcurl":
            named = [word for word in words[1:] if re.fullmatch(r"[\w.]+/\w+", word)]
            for method in named:
                assert method in methods, f"{where}: no method {method} in protos/"


def test_what_this_machine_can_run_runs_as_written(pipemesh: Path, tmp_path: Path) -> None:
    """Every `$BIN/pipemesh` line of the README runs as written and ends well;
    each `up` leaves a run folder with what the README lists."""
    (tmp_path / "examples").symlink_to(REPOSITORY / "examples")
    ran = []
    for document, line, block in BLOCKS:
        for words in commands(block):
            if words[0] != "$BIN/pipemesh":
                continue
            before = set((tmp_path / "runs").iterdir()) if (tmp_path / "runs").exists() else set()
            run = subprocess.run([str(pipemesh), *words[1:]], cwd=tmp_path, capture_output=True, text=True,
                                 timeout=600, env={**os.environ, "PIPEMESH_EXIT_WITH_PARENT": "1"})
            where = f"{document}:{line}: pipemesh {' '.join(words[1:])}"
            assert run.returncode == 0, f"{where} failed ({run.returncode}):\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
            if words[1] == "up":
                folders = set((tmp_path / "runs").iterdir()) - before
                assert len(folders) == 1, f"{where}: {folders}"
                written = {path.name for path in folders.pop().iterdir()}
                expected = {"options.json", "metrics.csv", "metrics.json", "loss.svg", "trace.json", "model.json", "job.json",
                            "checkpoint.safetensors", "ps-checkpoints"}
                assert expected <= written, f"{where} wrote {sorted(written)}"
            ran.append(words[1])
    assert ran.count("plan") >= 1 and ran.count("up") >= 5, ran


def every_command_path(pipemesh: Path, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name in subcommands(help_text(pipemesh, path)):
        if name != "help":
            found += every_command_path(pipemesh, path + (name,))
    return found


def test_help_pages_wrap_evenly(pipemesh: Path) -> None:
    """A line that ends where the next line's first word would still have
    fit comes from a hard newline in a help string."""
    ragged = []
    paths = every_command_path(pipemesh)
    assert len(paths) > 20, paths
    # swift-argument-parser wraps help to 80 columns: lines of at most 79 characters.
    width = 79
    for path in paths:
        lines = help_text(pipemesh, path).splitlines()
        in_usage = False
        for before, after in zip(lines, lines[1:]):
            in_usage = before.startswith("USAGE:") or (in_usage and before.strip() != "")
            if in_usage or not before.strip() or not after.strip() or after.lstrip().startswith("-"):
                continue
            # An option whose name fills its column starts its help on the next line.
            if before.lstrip().startswith("-") and "  " not in before.strip():
                continue
            # A new entry of a list of subcommands, or a section's heading.
            if re.match(r"  [a-z][\w-]*( \(default\))?  ", after) or re.fullmatch(r"[A-Z ]+:.*", after.strip()):
                continue
            if before.rstrip().endswith(":"):
                continue
            if len(before.rstrip()) + 1 + len(after.split()[0]) <= width:
                ragged.append(f"pipemesh {' '.join(path)}: {before.strip()!r} / {after.strip()!r}")
    assert not ragged, "\n".join(ragged)
