"""Speed of the CAM family, as ratios measured in one run (not run by CI).

- Grad-CAM against one bare forward + backward pass of the same batch;
- Score-CAM and Ablation-CAM (channel passes in chunks of batch_size) against the bare forward
  passes they need (one per input and channel, batched), and against the same method run one
  pass at a time (batch_size=1), which is what a loop over channels costs.

    OMP_NUM_THREADS=1 python benchmarks/bench_cam.py
"""
from __future__ import annotations

import torch
from _timing import best_seconds
from torch import nn

from pellucid.explain import AblationCAM, GradCAM, ScoreCAM


def cnn(channels: int = 16, n_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, n_classes)).eval()


def bare_forward_passes(model: nn.Module, x: torch.Tensor, total: int, batch_size: int):
    """``total`` forward passes of one image, ``batch_size`` at a time (what the method needs)."""
    batch = x[:1].repeat(batch_size, 1, 1, 1)

    def run():
        with torch.inference_mode():
            for start in range(0, total, batch_size):
                model(batch[:min(batch_size, total - start)])
    return run


def items_seen(model: nn.Module, run) -> int:
    """Inputs that went through ``model`` during ``run()``."""
    sizes: list[int] = []
    handle = model[0].register_forward_pre_hook(lambda _m, inputs: sizes.append(len(inputs[0])))
    try:
        run()
    finally:
        handle.remove()
    return sum(sizes)


def main() -> None:
    torch.set_num_threads(1)
    model, channels = cnn(32), 32
    x = torch.rand(16, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    targets = torch.arange(16) % 10

    def forward_backward():
        leaf = x.clone().requires_grad_(True)
        out = model(leaf)
        torch.autograd.grad(out[torch.arange(16), targets].sum(), leaf)

    gradcam = GradCAM(model, progress=False)
    print(f"Grad-CAM / bare forward+backward: "
          f"{best_seconds(lambda: gradcam(x, targets)) / best_seconds(forward_backward):.2f}x")

    for method in (ScoreCAM, AblationCAM):
        def batched_run():
            method(model, batch_size=64, progress=False)(x, targets)
        items = items_seen(model, batched_run)
        bare = best_seconds(bare_forward_passes(model, x, items, 64))
        batched = best_seconds(batched_run)
        single = best_seconds(lambda: method(model, batch_size=1, progress=False)(x, targets),
                         repeats=1)
        print(f"{method.__name__}: {batched / bare:.2f}x the bare forward passes it makes "
              f"({items} inputs for {len(x)} images x {channels} channels, batch 64); "
              f"batch_size=1 takes {single / batched:.2f}x the time of batch_size=64")


if __name__ == "__main__":
    main()
