"""RISE and SobolAttribution against the bare batched forward passes they need.

A small CNN on 224 x 224 images. For each method the bare reference runs the same number of
forward passes (``N * nb_samples`` for RISE, ``N * nb_design * (grid_size^2 + 2)`` for Sobol)
on pre-built inputs, ``batch_size`` at a time; the ratio method / bare is the overhead of
building masks, perturbing inputs and estimating (target: <= 1.15x). Runs are interleaved and
the best of ``--repeats`` is kept, so the load of other processes weighs on both sides alike;
wall-clock and process CPU time are both reported.

    python benchmarks/bench_rise_sobol.py [--repeats 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

from pellucid.explain.perturbation.rise import Rise
from pellucid.explain.perturbation.sobol import SobolAttribution


def small_cnn(n_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, n_classes),
    ).eval()


def bare_forward(model: nn.Module, batch: torch.Tensor, n_passes: int) -> None:
    """``n_passes`` forward passes of pre-built inputs, ``len(batch)`` at a time, plus the
    softmax every score gets."""
    with torch.inference_mode():
        for start in range(0, n_passes, len(batch)):
            torch.softmax(model(batch[:min(len(batch), n_passes - start)]), dim=1)


def timed(function) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one call (CPU time is less sensitive to other
    processes sharing the cores)."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = small_cnn()
    images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    batch = torch.rand(args.batch_size, 3, 224, 224)
    rise = Rise(model, nb_samples=128, batch_size=args.batch_size, progress=False)
    sobol = SobolAttribution(model, grid_size=8, nb_design=2, batch_size=args.batch_size,
                             progress=False)
    cases = {
        "Rise(nb_samples=128)": (lambda: rise(images, 0), len(images) * rise.nb_samples),
        "SobolAttribution(grid 8, nb_design 2)": (
            lambda: sobol(images, 0),
            len(images) * sobol.nb_design * (sobol.grid_size ** 2 + 2)),
    }
    bare_forward(model, batch, args.batch_size)  # warm-up
    print(f"small CNN, 224 x 224, {len(images)} images, batch_size {args.batch_size}, "
          f"{args.threads} threads; best of {args.repeats}")
    for name, (explain, n_passes) in cases.items():
        method, bare = [], []
        for _ in range(args.repeats):  # interleaved, so load changes hit both
            method.append(timed(explain))
            bare.append(timed(lambda: bare_forward(model, batch, n_passes)))
        (method_wall, method_cpu), (bare_wall, bare_cpu) = (
            [min(column) for column in zip(*runs)] for runs in (method, bare))
        print(f"{name:38s} {n_passes:4d} passes ({math.ceil(n_passes / args.batch_size)} "
              f"batches): wall {method_wall:5.2f} s vs bare {bare_wall:5.2f} s = "
              f"{method_wall / bare_wall:.2f}x; CPU {method_cpu:5.2f} s vs {bare_cpu:5.2f} s = "
              f"{method_cpu / bare_cpu:.2f}x")


if __name__ == "__main__":
    main()
