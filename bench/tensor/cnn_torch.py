#!/usr/bin/env python3
"""The pipeline issue's CNN trained by PyTorch in one process: the reference for `tensor-bench --cnn`.

3x32x32 input, conv 32 (3x3, padding 1, ReLU) - max pool 2 - conv 64 (3x3, padding 1, ReLU) -
max pool 2 - dense 256 (ReLU) - dense 10, softmax cross-entropy, SGD 0.01, random data (8 batches
made beforehand, cycled). After --warmup steps, --windows windows of --steps steps each are timed;
prints one JSON line: {"side": "pytorch", "samples_per_second": median of windows, "windows": [...]}.

  python cnn_torch.py [--threads 1] [--batch 64] [--windows 5] [--steps 20] [--warmup 5]
"""
import argparse
import json
import statistics
import time

import torch


def model():
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(64 * 8 * 8, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    network = model()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01)
    loss_function = torch.nn.CrossEntropyLoss()
    data = [(torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))) for _ in range(8)]

    def step(index):
        images, labels = data[index % len(data)]
        optimizer.zero_grad(set_to_none=True)
        loss_function(network(images), labels).backward()
        optimizer.step()

    for index in range(args.warmup):
        step(index)
    windows = []
    for _ in range(args.windows):
        start = time.perf_counter()
        for index in range(args.steps):
            step(index)
        windows.append(args.batch * args.steps / (time.perf_counter() - start))
    print(json.dumps({
        "side": "pytorch", "threads": args.threads, "torch": torch.__version__,
        "samples_per_second": statistics.median(windows), "windows": windows}))


if __name__ == "__main__":
    main()
