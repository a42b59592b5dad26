"""Explain what is not one class score: a segmentation, a regression, every class at once.

    python examples/explain_beyond_classes.py --out figures/

1. Segmentation: a tiny fully convolutional net learns (in seconds) to segment the digit block
   of BlockMNIST images; IG, RISE and Grad-CAM explain the "digit block" score summed over the
   region the net predicts (``SegmentationScore``).
2. Regression: the zoo's additive MLP, whose true attributions are known; Occlusion and IG
   explain its output (``RegressionOutput``) and are compared with the truth.
3. Every class of the digits CNN from one RISE call (an ``(N, 10)`` targets array), which costs
   the forward passes of one class.
"""
import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pellucid import plots, zoo
from pellucid.explain import GradCAM, IntegratedGradients, Occlusion, Rise
from pellucid.selectors import RegressionOutput, SegmentationScore


def train_segmenter(images: torch.Tensor, masks: torch.Tensor, epochs: int = 12) -> nn.Module:
    """conv - ReLU - conv - ReLU - 1x1 conv to 2 classes (background, digit block) per pixel."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(epochs):
        for batch in torch.randperm(len(images)).split(64):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(net(images[batch]), masks[batch].long())
            loss.backward()
            optimizer.step()
    return net.eval()


def segmentation(out: Path) -> None:
    data = zoo.load_dataset("blockmnist_cnn")
    start = time.perf_counter()
    net = train_segmenter(data.x_train, data.masks_train)
    images, masks = data.x_test[:4], data.masks_test[:4]
    with torch.no_grad():
        predicted = net(images).argmax(1)
    iou = ((predicted == 1) & masks).sum() / ((predicted == 1) | masks).sum()
    print(f"segmenter trained in {time.perf_counter() - start:.1f} s; block IoU {iou:.3f}")
    block = SegmentationScore(class_index=1)  # sum of the block logits over the predicted block
    heatmaps = {
        "IntegratedGradients": IntegratedGradients(net, steps=32, progress=False)(images, block),
        "RISE": Rise(net, nb_samples=1000, grid_size=4, probabilities=False,
                     progress=False)(images, block),
        "Grad-CAM": GradCAM(net, target_layer="3", progress=False)(images, block),
    }
    for name, maps in heatmaps.items():
        inside = (maps * masks).sum((1, 2)) / maps.abs().sum((1, 2)).clamp_min(1e-12)
        print(f"{name:>20}: share of |relevance| inside the block {inside.mean():.2f}")
    grid = plots.method_grid(images, heatmaps, cell_size=1.4)
    print("saved", plots.save_figure(grid, out / "segmentation_grid.png"))


def regression() -> None:
    model, _ = zoo.get_model("additive_mlp")
    data = zoo.load_dataset("additive_mlp")
    x, truth = data.x_test[:64], data.true_attributions_test[:64]
    for name, explainer in [("Occlusion", Occlusion(model, baseline=0.0, progress=False)),
                            ("IntegratedGradients", IntegratedGradients(model, progress=False))]:
        attributions = explainer(x, RegressionOutput())
        agreement = np.mean([np.corrcoef(a, t)[0, 1] for a, t in zip(attributions, truth)])
        print(f"{name:>20}: mean correlation with the true attributions {agreement:.3f}")


def every_class() -> None:
    model, _ = zoo.get_model("digits_cnn")
    x = zoo.load_dataset("digits_cnn").x_test[:4]
    passes = []
    hook = model.register_forward_pre_hook(lambda module, args: passes.append(len(args[0])))
    try:
        rise = Rise(model, nb_samples=500, grid_size=4, progress=False)
        maps = rise(x, np.tile(np.arange(10), (len(x), 1)))          # (4, 10, 32, 32)
        all_rows, passes[:] = sum(passes), []
        rise(x, 0)
        one_rows = sum(passes)
    finally:
        hook.remove()
    print(f"RISE maps of every class {tuple(maps.shape)}: {all_rows} rows through the model, "
          f"{one_rows} for one class")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    segmentation(out)
    regression()
    every_class()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("pellucid_output"))
    main(parser.parse_args().out)
