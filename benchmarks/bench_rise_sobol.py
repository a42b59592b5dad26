"""RISE and SobolAttribution against the bare batched forward passes they need.

Three cases, each run for both methods:

- ``small CNN 224`` (torch module): a 3-conv CNN on 224 x 224 images, where building masks and
  perturbed inputs weighs most against a cheap model;
- ``ResNet-18 64`` (torch module): a ResNet-18-like network (BasicBlock x [2, 2, 2, 2], written
  here from ``torch.nn``; no torchvision) on 64 x 64 images;
- ``callable CNN 224``: the small CNN behind a numpy callable
  (``lambda a: model(torch.from_numpy(a)).numpy()``), the path of a non-torch model.

For each method the bare reference runs the same number of forward passes (``N * nb_samples``
for RISE, ``N * nb_design * (grid_size^2 + 2)`` for Sobol) on pre-built inputs, ``batch_size``
at a time, with the method's output treatment (RISE: softmax, its default
``probabilities=True``; Sobol: raw outputs, its default ``probabilities=False``); the bare
callable is called on a pre-built numpy batch. The ratio method / bare is the overhead of
building masks, perturbing inputs, scoring and estimating (targets: Sobol <= 1.05x on torch
models, <= 1.15x through callables). Runs are interleaved and the best of ``--repeats`` is kept,
so the load of other processes weighs on both sides alike; wall-clock and process CPU time are
both reported, and the milliseconds the method spends outside the model's own forward calls
(its overhead proper, less noisy than the ratio when other processes share the cores).

    python benchmarks/bench_rise_sobol.py [--repeats 5] [--threads 1] [--batch-size 64]
"""
from __future__ import annotations

import argparse
import functools
import math
import time
from collections.abc import Callable

import numpy as np
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


class BasicBlock(nn.Module):
    """The two 3 x 3 convolutions of ResNet-18/34 with an identity (or 1 x 1) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet18(n_classes: int = 1000) -> nn.Module:
    """ResNet-18 (He et al., 2016) as torchvision builds it: 7 x 7 stem, max-pool, BasicBlock
    x [2, 2, 2, 2] at 64 / 128 / 256 / 512 channels, global average pool, linear head."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                               nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    in_planes = 64
    for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)]
        in_planes = planes
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, n_classes)]
    return nn.Sequential(*layers).eval()


def numpy_callable(model: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """``model`` as a numpy -> numpy function (what a non-torch model looks like)."""
    def function(array: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(array)).numpy()
    return function


class ModelClock:
    """Seconds spent inside ``model``'s forward calls (forward hooks on the module)."""

    def __init__(self, model: nn.Module):
        self.seconds, self._start = 0.0, 0.0
        model.register_forward_pre_hook(self._enter)
        model.register_forward_hook(self._leave)

    def _enter(self, *_):
        self._start = time.perf_counter()

    def _leave(self, *_):
        self.seconds += time.perf_counter() - self._start


def bare_forward(forward: Callable, batch, n_passes: int, softmax: bool) -> None:
    """``n_passes`` forward passes of pre-built inputs, ``len(batch)`` at a time, plus the
    softmax when the method scores probabilities."""
    with torch.inference_mode():
        for start in range(0, n_passes, len(batch)):
            out = forward(batch[:min(len(batch), n_passes - start)])
            if softmax:
                torch.softmax(torch.as_tensor(out), dim=1)


def timed(function) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one call (CPU time is less sensitive to other
    processes sharing the cores)."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cases", default="small,resnet,callable",
                        help="comma-separated subset of small, resnet, callable")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch_size = args.batch_size

    cnn, resnet = small_cnn(), resnet18()
    clocks = {id(cnn): ModelClock(cnn), id(resnet): ModelClock(resnet)}
    models = {  # name: (model given to the method, bare forward, input side)
        "small": ("small CNN 224", cnn, cnn, 224),
        "resnet": ("ResNet-18 64", resnet, resnet, 64),
        "callable": ("callable CNN 224", numpy_callable(cnn), numpy_callable(cnn), 224),
    }
    print(f"2 images, batch_size {batch_size}, {args.threads} thread(s), best of "
          f"{args.repeats}; ratio = method / bare passes")
    for key in args.cases.split(","):
        label, model, forward, side = models[key]
        clock = clocks[id(cnn if key == "callable" else model)]
        images = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(0))
        batch = torch.rand(batch_size, 3, side, side, generator=torch.Generator().manual_seed(1))
        if key == "callable":
            batch = batch.numpy()
        rise = Rise(model, nb_samples=128, batch_size=batch_size, progress=False)
        sobol = SobolAttribution(model, grid_size=8, nb_design=2, batch_size=batch_size,
                                 progress=False)
        methods = {
            "Rise(nb_samples=128)": (lambda rise=rise, images=images: rise(images, 0),
                                     len(images) * rise.nb_samples, rise.probabilities),
            "Sobol(grid 8, nb_design 2)": (
                lambda sobol=sobol, images=images: sobol(images, 0),
                len(images) * sobol.nb_design * (sobol.grid_size ** 2 + 2), sobol.probabilities),
        }
        bare_forward(forward, batch, batch_size, False)  # warm-up
        for name, (explain, n_passes, softmax) in methods.items():
            explain()  # warm-up
            method, bare, outside = [], [], []
            for _ in range(args.repeats):  # interleaved, so load changes hit both
                clock.seconds = 0.0
                method.append(timed(explain))
                outside.append(method[-1][0] - clock.seconds)
                bare.append(timed(functools.partial(bare_forward, forward, batch, n_passes,
                                                    softmax)))
            (method_wall, method_cpu), (bare_wall, bare_cpu) = (
                [min(column) for column in zip(*runs)] for runs in (method, bare))
            print(f"{label:17s} {name:27s} {n_passes:4d} passes "
                  f"({math.ceil(n_passes / batch_size)} batches): wall {method_wall:5.2f} s vs "
                  f"bare {bare_wall:5.2f} s = {method_wall / bare_wall:.2f}x; CPU "
                  f"{method_cpu:5.2f} s vs {bare_cpu:5.2f} s = {method_cpu / bare_cpu:.2f}x; "
                  f"outside the model {1000 * min(outside):3.0f} ms "
                  f"({100 * min(outside) / bare_wall:.1f}% of bare)", flush=True)


if __name__ == "__main__":
    main()
