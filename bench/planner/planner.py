"""Prints a Markdown table of the planner's split of each example spec at 2 and 3 stages (see
bench/planner/run): the split it makes on layer times measured here, beside the best split at whole
layers, each judged by its stages timed as partitions run them."""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
GOAL = 1.15


def plan(pipemesh: str, spec: Path, stages: int, rows: int, extra: list[str]) -> dict | str:
    """The plan as `pipemesh plan --json` gives it, or why there is none."""
    command = [pipemesh, "plan", "--model", str(spec), "--stages", str(stages), "--micro-batch-rows", str(rows),
               "--json", *extra]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return done.stderr.strip().removeprefix("pipemesh: ")
    return json.loads(done.stdout)


def place(layer: int, inputs: int) -> str:
    """LAYER, or LAYER:INPUTS inside a layer, as `pipemesh plan --split` reads it."""
    return f"{layer}:{inputs}" if inputs else f"{layer}"


def starts(planned: dict) -> list[str]:
    return [place(stage.get("firstLayer", 0), stage.get("firstLayerInputs", 0)) for stage in planned["stages"]]


def shown(planned: dict) -> str:
    ends = [place(stage["endLayer"], stage.get("endLayerInputs", 0)) for stage in planned["stages"]]
    return " / ".join(f"{start}–{end}" for start, end in zip(starts(planned), ends))


def imbalance(bench: str, spec: Path, planned: dict, rows: int) -> float:
    """The slowest stage over the mean, each stage timed as a partition runs it."""
    command = [bench, "--stage-times", str(spec), "--split", ",".join(starts(planned)[1:]), "--rows", str(rows)]
    stages = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)["stages"]
    seconds = [stage["forward"] + stage["backward"] for stage in stages]
    return max(seconds) / (sum(seconds) / len(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pipemesh", required=True)
    parser.add_argument("--pipeline-bench", required=True)
    parser.add_argument("--rows", type=int, default=32, help="examples in the micro-batch the layers are timed on")
    parser.add_argument("--stages", default="2,3", help="the stage counts to plan, comma-separated")
    parser.add_argument("--example", default="", help="only the examples whose file name contains this")
    arguments = parser.parse_args()
    counts = [int(count) for count in arguments.stages.split(",")]
    print(f"| example | stages | split | imbalance | split at whole layers | its imbalance | goal ≤ {GOAL} |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    pattern = f"*{arguments.example}*.json" if arguments.example else "*.json"
    for spec in sorted((REPOSITORY / "examples").glob(pattern)):
        for stages in counts:
            planned = plan(arguments.pipemesh, spec, stages, arguments.rows, [])
            if isinstance(planned, str):
                print(f"| {spec.name} | {stages} | {planned} | | | | not met |")
                continue
            whole = plan(arguments.pipemesh, spec, stages, arguments.rows, ["--whole-layers"])
            ours = imbalance(arguments.pipeline_bench, spec, planned, arguments.rows)
            verdict = "met" if ours <= GOAL else "not met"
            if isinstance(whole, str):
                theirs = ("none", whole)
            else:
                theirs = (shown(whole), f"{imbalance(arguments.pipeline_bench, spec, whole, arguments.rows):.3f}")
            print(f"| {spec.name} | {stages} | {shown(planned)} | {ours:.3f} | {theirs[0]} | {theirs[1]} | {verdict} |")


if __name__ == "__main__":
    main()
