"""Prints a Markdown table of the planner's split of each example spec at 2 and 3 stages (see
bench/planner/run)."""

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


def bounds(planned: dict) -> list[range]:
    return [range(stage.get("firstLayer", 0), stage["endLayer"]) for stage in planned["stages"]]


def imbalance(split: list[range], layer_seconds: list[float]) -> float:
    stage_seconds = [sum(layer_seconds[layer] for layer in stage) for stage in split]
    return max(stage_seconds) / (sum(stage_seconds) / len(stage_seconds))


def shown(split: list[range]) -> str:
    return " / ".join(f"{stage.start}–{stage.stop - 1}" if len(stage) > 1 else f"{stage.start}" for stage in split)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pipemesh", required=True)
    parser.add_argument("--rows", type=int, default=32, help="examples in the micro-batch the layers are timed on")
    arguments = parser.parse_args()
    print(f"| example | stages | split by measured times | imbalance | split by FLOPs | its imbalance | "
          f"goal ≤ {GOAL} |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for spec in sorted((REPOSITORY / "examples").glob("*.json")):
        for stages in (2, 3):
            measured = plan(arguments.pipemesh, spec, stages, arguments.rows, [])
            if isinstance(measured, str):
                print(f"| {spec.name} | {stages} | {measured} | | | | not met |")
                continue
            if not measured.get("layerTimes"):
                print(f"| {spec.name} | {stages} | not timed: planned by FLOPs | {measured['imbalance']:.3f} (FLOPs) "
                      f"| | | not met |")
                continue
            # Both splits judged by the one set of layer times the measured plan balanced.
            layer_seconds = [layer.get("forwardSeconds", 0) + layer.get("backwardSeconds", 0)
                             for layer in measured["layerTimes"]]
            estimated = plan(arguments.pipemesh, spec, stages, arguments.rows, ["--estimate"])
            ours = imbalance(bounds(measured), layer_seconds)
            theirs = imbalance(bounds(estimated), layer_seconds)
            verdict = "met" if ours <= GOAL else "not met"
            print(f"| {spec.name} | {stages} | {shown(bounds(measured))} | {ours:.3f} | {shown(bounds(estimated))} "
                  f"| {theirs:.3f} | {verdict} |")


if __name__ == "__main__":
    main()
