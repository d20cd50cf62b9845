"""Runs each examples/README.md command as written and prints a Markdown table of what it
reached (see bench/examples/run)."""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]


def rows() -> list[tuple[str, list[str], str]]:
    found = []
    for line in (REPOSITORY / "examples" / "README.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`") and cells[0].endswith(".json`"):
            found.append((cells[0].strip("`"), shlex.split(cells[2].strip("`")), cells[3]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pipemesh", required=True)
    parser.add_argument("--only", action="append", help="a spec file name (repeatable)")
    parser.add_argument("--transfer-dtypes", default="",
                        help="run each command once per dtype of --transfer-dtype (comma-separated: float32, "
                             "bfloat16, float16) instead of as written")
    parser.add_argument("--seeds", default="", help="run each command once per --seed (comma-separated)")
    arguments = parser.parse_args()
    variants = [[]]
    if arguments.transfer_dtypes:
        variants = [["--transfer-dtype", dtype] for dtype in arguments.transfer_dtypes.split(",")]
    if arguments.seeds:
        variants = [variant + ["--seed", seed] for seed in arguments.seeds.split(",") for variant in variants]
    print("| example | command | stated | validation loss | accuracy | wall |")
    print("| --- | --- | --- | --- | --- | --- |")
    for spec, written, stated in rows():
        if arguments.only and spec not in arguments.only:
            continue
        for variant in variants:
            run_example(arguments.pipemesh, spec, written + variant, stated)


def run_example(pipemesh: str, spec: str, words: list[str], stated: str) -> None:
    """Runs one command in a folder of its own and prints its row."""
    with tempfile.TemporaryDirectory(prefix="bench-examples-") as folder:
        (Path(folder) / "examples").symlink_to(REPOSITORY / "examples")
        started = time.monotonic()
        run = subprocess.run([pipemesh, "up", *words[1:]], cwd=folder, capture_output=True, text=True)
        wall = time.monotonic() - started
        if run.returncode != 0:
            print(f"| {spec} | `{' '.join(words)}` | {stated} | failed ({run.returncode}) | | {wall:.0f} s |")
            print(run.stdout[-2000:], run.stderr[-2000:])
            return
        (run_folder,) = (Path(folder) / "runs").iterdir()
        final = json.loads((run_folder / "metrics.json").read_text())["evaluations"][-1]
        loss = final["validation_loss"]
        text = "--dataset shakespeare" in " ".join(words) or ".txt" in " ".join(words)
        shown = f"{loss:.4f}" + (f" ({loss / math.log(2):.3f} bits/byte)" if text else "")
        accuracy = final.get("validation_accuracy")
        accuracy_shown = f"{accuracy * 100:.1f} %" if accuracy is not None and "--regression" not in words else "—"
        print(f"| {spec} | `{' '.join(words)}` | {stated} | {shown} | {accuracy_shown} | {wall:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
