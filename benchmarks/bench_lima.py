"""LiMA on the digits CNN: Insertion / Deletion AUC against RISE and Occlusion, and the
bidirectional search against the naive greedy (same ranking? time and passes).

Run: OMP_NUM_THREADS=1 python benchmarks/bench_lima.py [--images 20] [--repeats 3]

The zoo's digits CNN (32 x 32 digits, trained on first use and cached), the first ``--images``
test images, each explained for its predicted class. Methods (baseline 0, the digits'
background, for all):

- Lima: 8 x 8 grid regions (the default), the paper's black-box weights (consistency 20,
  collaboration 5, confidence 0.01), bidirectional search; also with the naive greedy search,
  with effectiveness 1 (softmax features) and on ~40 SLIC superpixels;
- Rise: 4000 masks, 7 x 7 grid (its defaults);
- Occlusion: 4 x 4 patches with stride 4 (the same 8 x 8 cells as Lima) and with stride 2.

Metrics: ``pellucid.metrics.Insertion`` (start from the blurred image, its default, and from 0,
the methods' baseline; higher is better) and ``Deletion`` (to 0, lower is better): softmax
probability of the class, 1% of the pixels per step; mean over the images with the standard
error, then the paired differences to Lima on the same images. Then, per image, whether the
greedy and the bidirectional search give the same ranking, the rows each makes the model see
and the wall-clock time of each (best of ``--repeats``, interleaved) and their ratio.
"""
from __future__ import annotations

import argparse
import functools
import time

import numpy as np
import torch

from pellucid import features, zoo
from pellucid.explain import Lima, Occlusion, Rise
from pellucid.metrics import Deletion, Insertion


def counted(model: torch.nn.Module) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    sizes: list[int] = []
    return sizes, model.register_forward_pre_hook(lambda m, args: sizes.append(len(args[0])))


def standard_error(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / np.sqrt(len(values)))


def main(n_images: int, repeats: int) -> None:
    model, info = zoo.get_model("digits_cnn")
    data = zoo.load_dataset("digits_cnn")
    x = data.x_test[:n_images]
    with torch.no_grad():
        targets = model(x).argmax(1)
    print(f"digits_cnn (test accuracy {info['test_accuracy']:.3f}), {len(x)} images "
          f"{tuple(x.shape[1:])}, predicted classes\n")
    common = {"baseline": 0.0, "progress": False}
    slic = functools.partial(features.slic, n_segments=40, compactness=0.1)
    methods = {
        "Lima (grid 8x8)": Lima(model, **common),
        "Lima (grid 8x8, naive greedy)": Lima(model, search="greedy", **common),
        "Lima (grid 8x8, effectiveness=1)": Lima(model, effectiveness=1.0, **common),
        "Lima (SLIC ~40)": Lima(model, feature_mask=slic, **common),
        "Rise (4000 masks)": Rise(model, seed=0, **common),
        "Occlusion (4x4, stride 4)": Occlusion(model, patch_size=4, stride=4, **common),
        "Occlusion (4x4, stride 2)": Occlusion(model, patch_size=4, stride=2, **common),
    }
    metrics = {"insertion (blur)": Insertion(model, progress=False),
               "insertion (from 0)": Insertion(model, baseline=0.0, progress=False),
               "deletion": Deletion(model, progress=False)}
    print(f"{'method':<36}" + "".join(f"{name:>22}" for name in metrics)
          + f"{'rows/image':>12}{'s/image':>10}")
    per_image = {}
    for name, explainer in methods.items():
        sizes, handle = counted(model)
        start = time.perf_counter()
        try:
            heatmaps = explainer.explain(x, targets)
        finally:
            handle.remove()
        seconds = (time.perf_counter() - start) / len(x)
        cells = []
        for metric_name, metric in metrics.items():
            scores = metric(x, heatmaps, targets).scores
            per_image[name, metric_name] = scores
            cells.append(f"{scores.mean():.3f} +- {standard_error(scores):.3f}")
        print(f"{name:<36}" + "".join(f"{c:>22}" for c in cells)
              + f"{sum(sizes) / len(x):>12.0f}{seconds:>10.2f}")
    print("\npaired differences, Lima (grid 8x8) minus each method (mean +- standard error)")
    for name in methods:
        if name != "Lima (grid 8x8)":
            cells = [per_image["Lima (grid 8x8)", m] - per_image[name, m] for m in metrics]
            print(f"{name:<36}" + "".join(f"{d.mean():>+13.3f} +- {standard_error(d):.3f}"
                                          for d in cells))

    print("\nbidirectional search vs naive greedy (grid 8x8, 64 regions)")
    searches = {s: Lima(model, search=s, **common) for s in ("greedy", "bidirectional")}
    rankings, rows = {}, {}
    best = {s: float("inf") for s in searches}
    for _ in range(repeats):
        for search, explainer in searches.items():
            sizes, handle = counted(model)
            start = time.perf_counter()
            try:
                rankings[search] = explainer.ranking(x, targets)
            finally:
                handle.remove()
            best[search] = min(best[search], time.perf_counter() - start)
            rows[search] = sum(sizes) / len(x)
    same = (rankings["greedy"] == rankings["bidirectional"]).all(1)
    agree = (rankings["greedy"][:, :16] == rankings["bidirectional"][:, :16]).all(1)
    for search in searches:
        print(f"  {search:<14} {rows[search]:>6.0f} rows/image  {best[search]:.2f} s "
              f"({len(x)} images, best of {repeats})")
    print(f"  speed ratio greedy / bidirectional: {best['greedy'] / best['bidirectional']:.2f} "
          f"(rows: {rows['greedy'] / rows['bidirectional']:.2f})")
    print(f"  same full ranking: {int(same.sum())}/{len(x)} images; same first 16 regions: "
          f"{int(agree.sum())}/{len(x)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    main(arguments.images, arguments.repeats)
