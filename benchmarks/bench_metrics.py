"""Speed of Deletion + Insertion (RISE protocol) on 100 images of 64x64 and a small CNN.

Compares, in one run and on the same model, images, heatmaps and step:
- pellucid's Deletion + Insertion (every curve point of a batch built lazily and sent through
  the model in large batches);
- the RISE reference protocol as its code runs it: one image at a time, one forward pass per
  step (``CausalMetric.single_run`` without the plotting), and checks that both give the same
  curves;
- the bare batched forward passes the metric needs (the floor any implementation pays);
- Quantus ``PixelFlipping`` (deletion only, per-step batches over samples) if quantus is
  installed, against pellucid's Deletion with the same number of steps.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_metrics.py [--images 100] [--size 64]``.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from torch import nn

from pellucid.metrics import Deletion, Insertion
from pellucid._imaging import gaussian_blur


def small_cnn(n_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, n_classes)).eval()


@torch.no_grad()
def rise_loop(model: nn.Module, images: torch.Tensor, heatmaps: torch.Tensor, mode: str,
              step: int) -> np.ndarray:
    """The reference protocol, one image and one step at a time."""
    softmax_model = nn.Sequential(model, nn.Softmax(dim=1))
    n, channels, height, width = images.shape
    hw = height * width
    n_steps = (hw + step - 1) // step
    curves = np.empty((n, n_steps + 1))
    for k in range(n):
        image = images[k:k + 1]
        c = int(softmax_model(image).argmax(1))
        substrate = torch.zeros_like(image) if mode == "del" else gaussian_blur(image)
        start, finish = (image.clone(), substrate) if mode == "del" else (substrate, image.clone())
        order = np.flip(np.argsort(heatmaps[k].numpy().reshape(-1)))
        for i in range(n_steps + 1):
            curves[k, i] = softmax_model(start)[0, c]
            if i < n_steps:
                coords = order[step * i:step * (i + 1)]
                start.numpy().reshape(channels, hw)[:, coords] = \
                    finish.numpy().reshape(channels, hw)[:, coords]
    return curves


def timed(function, *args, repeats: int = 1, **kwargs):
    """Result and seconds taken, the best of ``repeats`` runs: CPU time of this process (the
    fair measure on a shared machine with one torch thread), wall-clock time beside it."""
    best = None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        out = function(*args, **kwargs)
        seconds = Seconds(time.process_time() - cpu, time.perf_counter() - wall)
        best = seconds if best is None or seconds < best else best
    return out, best


class Seconds(float):
    """CPU seconds that remember the wall-clock seconds."""

    def __new__(cls, cpu: float, wall: float):
        value = super().__new__(cls, cpu)
        value.wall = wall
        return value

    def __add__(self, other: "Seconds") -> "Seconds":
        return Seconds(float(self) + float(other), self.wall + other.wall)

    def __str__(self) -> str:
        return f"{float(self):7.2f} s CPU ({self.wall:6.2f} s wall)"


@torch.no_grad()
def bare_forward(model: nn.Module, images: torch.Tensor, n_inputs: int, batch_size: int) -> None:
    """``n_inputs`` forward passes of inputs already in memory, ``batch_size`` at a time, cycling
    over 32 batches of distinct images (far more than the caches hold, like real inputs)."""
    pool = images[torch.randint(0, len(images), (32 * batch_size,))] + 0.01 * torch.rand(
        32 * batch_size, *images.shape[1:])
    for k, start in enumerate(range(0, n_inputs, batch_size)):
        offset = (k % 32) * batch_size
        torch.softmax(model(pool[offset:offset + min(batch_size, n_inputs - start)]), 1)


def quantus_pixel_flipping(model, images, heatmaps, targets, features_in_step: int,
                           batch_size: int):
    """Quantus flips single channel values (its step counts C*H*W elements) and checks the
    step against H*W only; the heatmap is repeated over channels."""
    import quantus
    metric = quantus.PixelFlipping(features_in_step=features_in_step, perturb_baseline="black",
                                   normalise=False, disable_warnings=True,
                                   display_progressbar=False)
    return metric(model=model, x_batch=images.numpy(), y_batch=targets.numpy(),
                  a_batch=heatmaps[:, None].expand_as(images).contiguous().numpy(),
                  device="cpu", batch_size=batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    model = small_cnn()
    images = torch.rand(args.images, 3, args.size, args.size, generator=g)
    heatmaps = torch.rand(args.images, args.size, args.size, generator=g)
    hw = args.size * args.size
    step = math.ceil(hw / 100)
    points = math.ceil(hw / step) + 1
    print(f"{args.images} images {args.size}x{args.size}, step {step} px, {points} points per "
          f"curve, torch threads {torch.get_num_threads()}")

    deletion = Deletion(model, batch_size=args.batch_size, progress=False)
    insertion = Insertion(model, batch_size=args.batch_size, progress=False)
    # every time is the best of --repeats runs (the first ones also warm the allocator up)
    r = args.repeats
    (d, t_del) = timed(deletion, images, heatmaps, repeats=r)
    (i, t_ins) = timed(insertion, images, heatmaps, repeats=r)
    t_pellucid = t_del + t_ins
    _, t_bare = timed(bare_forward, model, images, 2 * args.images * points, args.batch_size,
                      repeats=r)
    (d_ref, t_loop_del) = timed(rise_loop, model, images, heatmaps, "del", step, repeats=r)
    (i_ref, t_loop_ins) = timed(rise_loop, model, images, heatmaps, "ins", step, repeats=r)
    t_loop = t_loop_del + t_loop_ins
    error = max(np.abs(d.curves - d_ref).max(), np.abs(i.curves - i_ref).max())

    print(f"pellucid Deletion+Insertion   {t_pellucid}")
    print(f"bare batched forward passes   {t_bare}  (pellucid / bare = "
          f"{t_pellucid / t_bare:.2f}x)")
    print(f"RISE per-sample loop          {t_loop}  (loop / pellucid = "
          f"{t_loop / t_pellucid:.2f}x CPU, {t_loop.wall / t_pellucid.wall:.2f}x wall)")
    print(f"max |curve difference| pellucid vs loop: {error:.2e}")
    try:
        import quantus  # noqa: F401
    except ImportError:
        print("quantus not installed: PixelFlipping skipped")
        return
    features_in_step = 128 if hw % 128 == 0 else 1
    steps = 3 * hw // features_in_step  # forward passes per image in Quantus
    our_step = math.ceil(hw / steps)  # pellucid: the same number of steps (+ the start point)
    same_steps = Deletion(model, step=our_step, batch_size=args.batch_size, progress=False)
    _, t_ours = timed(same_steps, images, heatmaps, repeats=r)
    targets = torch.as_tensor(d.details["targets"])
    _, t_quantus = timed(quantus_pixel_flipping, model, images, heatmaps, targets,
                         features_in_step, args.batch_size, repeats=r)
    ours_points = math.ceil(hw / our_step) + 1
    print(f"deletion only, {steps} steps: pellucid {t_ours} ({ours_points} passes per image), "
          f"Quantus PixelFlipping {t_quantus} ({steps} passes per image): Quantus / pellucid "
          f"= {t_quantus / t_ours:.2f}x CPU, {t_quantus.wall / t_ours.wall:.2f}x wall")


if __name__ == "__main__":
    main()
