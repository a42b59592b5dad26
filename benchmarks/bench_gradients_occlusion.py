"""IntegratedGradients and Occlusion: pellucid vs Captum vs the bare passes they need.

All timings (CPU time of this process) come from this one run, on the same model, inputs and
batch size, so only ratios are printed as results. "bare" is the least any implementation must
do: for IG, forward + backward of the ``N * steps`` path points (built in advance, batch by
batch); for Occlusion, inference-mode forward passes of the ``N * (windows + 1)`` occluded
copies (built in advance).

    OMP_NUM_THREADS=1 python benchmarks/bench_gradients_occlusion.py [--threads 1] [--repeats 5]
"""
from __future__ import annotations

import argparse
import time

import torch
from captum.attr import IntegratedGradients as CaptumIG
from captum.attr import Occlusion as CaptumOcclusion
from torch import nn

from pellucid.explain import IntegratedGradients, Occlusion


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(128, 10),
    ).eval()


def timed(functions: dict, repeats: int) -> dict:
    """Best CPU seconds (``time.process_time``: robust on a machine shared with other work) of
    ``repeats`` calls of each function, taken in turn; one warm-up call each."""
    for function in functions.values():
        function()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.process_time()
            function()
            times[name].append(time.process_time() - start)
    return {name: min(values) for name, values in times.items()}


def bare_forward_backward(model, points: torch.Tensor, targets: torch.Tensor, batch_size: int):
    for start in range(0, len(points), batch_size):
        leaf = points[start:start + batch_size].clone().requires_grad_(True)
        out = model(leaf)
        score = out.gather(1, targets[start:start + batch_size, None]).sum()
        torch.autograd.grad(score, leaf)


def bare_forward(model, inputs: torch.Tensor, batch_size: int):
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            model(inputs[start:start + batch_size])


def occluded_copies(x: torch.Tensor, patch: int) -> torch.Tensor:
    """The input and each non-overlapping patch hidden by 0, for every input."""
    copies = [x]
    for row in range(0, x.shape[2], patch):
        for col in range(0, x.shape[3], patch):
            hidden = x.clone()
            hidden[:, :, row:row + patch, col:col + patch] = 0
            copies.append(hidden)
    return torch.stack(copies, dim=1).flatten(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--n", type=int, default=16, help="images explained")
    parser.add_argument("--size", type=int, default=32, help="image side")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--patch", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = small_cnn()
    x = torch.rand(args.n, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    targets = torch.arange(args.n) % 10
    batch = args.batch_size
    rows = []

    # -- Integrated Gradients ----------------------------------------------------------------
    ours = IntegratedGradients(model, steps=args.steps, method="gausslegendre",
                               batch_size=batch, progress=False)
    captum = CaptumIG(model)
    alphas = torch.linspace(0, 1, args.steps)
    points = (alphas[None, :, None, None, None] * x[:, None]).flatten(0, 1)
    point_targets = targets.repeat_interleave(args.steps)
    t = timed({
        "ours": lambda: ours.explain(x, targets),
        "captum": lambda: captum.attribute(x, target=targets, n_steps=args.steps,
                                           method="gausslegendre", internal_batch_size=batch),
        "bare": lambda: bare_forward_backward(model, points, point_targets, batch),
    }, args.repeats)
    t_ours, t_captum, t_bare = t["ours"], t["captum"], t["bare"]
    rows.append(("IntegratedGradients", args.n * args.steps, t_ours, t_captum, t_bare,
                 "forward+backward"))

    # -- Occlusion -----------------------------------------------------------------------------
    ours = Occlusion(model, patch_size=args.patch, batch_size=batch, progress=False)
    captum = CaptumOcclusion(model)
    windows = (args.size // args.patch) ** 2
    copies = occluded_copies(x, args.patch)
    window = (3, args.patch, args.patch)
    per_eval = max(1, batch // args.n)  # Captum batches perturbations x inputs per pass
    t = timed({
        "ours": lambda: ours.explain(x, targets),
        "captum": lambda: captum.attribute(x, sliding_window_shapes=window, strides=window,
                                           baselines=0, target=targets,
                                           perturbations_per_eval=per_eval),
        "captum_default": lambda: captum.attribute(x, sliding_window_shapes=window,
                                                   strides=window, baselines=0, target=targets),
        "bare": lambda: bare_forward(model, copies, batch),
    }, args.repeats)
    t_ours, t_captum, t_captum_default, t_bare = (t["ours"], t["captum"], t["captum_default"],
                                                  t["bare"])
    rows.append(("Occlusion", args.n * (windows + 1), t_ours, t_captum, t_bare, "forward"))

    print(f"small CNN, {args.n} images 3x{args.size}x{args.size}, batch_size {batch}, "
          f"{args.threads} thread(s), best of {args.repeats}")
    print(f"{'method':<20} {'passes':>7} {'pellucid s':>11} {'captum s':>9} "
          f"{'vs captum':>9} {'vs bare':>8} {'captum vs bare':>15}  bare =")
    for name, passes, ours_s, captum_s, bare_s, bare_kind in rows:
        print(f"{name:<20} {passes:>7} {ours_s:>11.4f} {captum_s:>9.4f} {ours_s / captum_s:>8.2f}x "
              f"{ours_s / bare_s:>7.2f}x {captum_s / bare_s:>14.2f}x  {bare_kind}")
    print(f"(Captum Occlusion with its default perturbations_per_eval=1: "
          f"{t_captum_default:.4f} s, pellucid is {rows[1][2] / t_captum_default:.2f}x of it)")


if __name__ == "__main__":
    main()
