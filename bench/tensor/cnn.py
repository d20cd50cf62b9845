#!/usr/bin/env python3
"""bench/tensor --cnn: the pipeline issue's CNN trained in one process, Pipemesh against PyTorch.

Each round runs `tensor-bench --cnn` and `cnn_torch.py` once each, with the same model, batch,
optimizer and thread count, the side that goes first alternating from round to round. Prints each
run's JSON line, then a Markdown table: the median samples/s of each side and the median of the
per-round ratios.
"""
import argparse
import json
import os
import statistics
import subprocess


def run(command):
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited with {finished.returncode}:\n{finished.stderr}")
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tensor-bench", required=True)
    parser.add_argument("--python", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    shared = ["--threads", str(args.threads), "--batch", str(args.batch),
              "--windows", str(args.windows), "--steps", str(args.steps)]
    sides = {
        "pipemesh": [args.tensor_bench, "--cnn"] + shared,
        "pytorch": [args.python, os.path.join(os.path.dirname(__file__), "cnn_torch.py")] + shared,
    }
    rounds = []
    for index in range(args.rounds):
        order = ["pytorch", "pipemesh"] if index % 2 == 0 else ["pipemesh", "pytorch"]
        rounds.append({side: run(sides[side]) for side in order})
    mesh = [r["pipemesh"]["samples_per_second"] for r in rounds]
    torch = [r["pytorch"]["samples_per_second"] for r in rounds]
    ratios = [m / t for m, t in zip(mesh, torch)]
    print()
    print(f"CNN 3x32x32 conv32-pool-conv64-pool-dense256-10, batch {args.batch}, SGD, {args.threads} "
          f"thread(s), {args.rounds} rounds ({rounds[0]['pipemesh']['kernels']} kernels, "
          f"torch {rounds[0]['pytorch']['torch']})")
    print()
    print("| | samples/s (median) | rounds |")
    print("| --- | --- | --- |")
    print(f"| PyTorch | {statistics.median(torch):.0f} | {', '.join(f'{v:.0f}' for v in torch)} |")
    print(f"| Pipemesh | {statistics.median(mesh):.0f} | {', '.join(f'{v:.0f}' for v in mesh)} |")
    print(f"| Pipemesh ÷ PyTorch | {statistics.median(ratios):.2f}× | {', '.join(f'{v:.2f}' for v in ratios)} |")


if __name__ == "__main__":
    main()
