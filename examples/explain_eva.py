"""EVA: attributions from verified bounds (Fel et al., CVPR 2023) on the digits CNN.

    python examples/explain_eva.py --out figures/

For each 4 x 4 region of a digit, EVA bounds how much any other class can gain on the
predicted one anywhere in the L-infinity ball of radius epsilon (the adversarial overlap), with
and without that region free to move: no sampling, every point of the ball is covered. The
bounds themselves are shown first: IBP against CROWN, and the spread actually reached by
random points of the ball, which must lie inside both. Last, the paper's hybrid estimator:
the box after ``relu2`` from sampled vertices of each set, only the rest bounded.
"""
import argparse
from pathlib import Path

import torch

from pellucid import plots, zoo
from pellucid.explain import Eva, Occlusion
from pellucid.explain.eva import output_bounds
from pellucid.features import grid
from pellucid.metrics import Deletion


def main(out: Path) -> None:
    model, _ = zoo.get_model("digits_cnn")
    data = zoo.load_dataset("digits_cnn")
    images, epsilon = data.x_test[:4], 0.02

    noise = (torch.rand(2000, *images.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    with torch.no_grad():
        reached = torch.stack([model(images + epsilon * n) for n in noise])
    spread = (reached.amax(0) - reached.amin(0)).mean()
    print(f"epsilon {epsilon}: spread reached by 2000 random points {spread:.4f}")
    for method in ("ibp", "crown-ibp", "crown"):
        lower, upper = output_bounds(model, images - epsilon, images + epsilon, method=method)
        inside = bool(((reached >= lower - 1e-5) & (reached <= upper + 1e-5)).all())
        print(f"  {method:9s} mean width {(upper - lower).mean():8.4f}  samples inside: {inside}")

    regions = grid(images.shape[2:], grid_size=8)
    maps = {method: Eva(model, epsilon=epsilon, feature_mask=regions, bounds=method,
                        progress=False)(images)
            for method in ("ibp", "crown-ibp")}
    # the paper's hybrid: activations after relu2 boxed from 256 sampled vertices (not sound)
    maps["hybrid"] = Eva(model, epsilon=epsilon, feature_mask=regions, target_layer="relu2",
                         nb_samples=256, seed=0, progress=False)(images)
    maps["occlusion"] = Occlusion(model, patch_size=4, progress=False)(images)
    deletion = Deletion(model, progress=False)
    for method, heatmaps in maps.items():
        print(f"  {method:9s} deletion AUC {deletion(images, heatmaps).mean:.3f}")
    titles = [f"digit {int(label)}" for label in data.y_test[:4]]
    path = plots.save_figure(plots.method_grid(images, maps, titles=titles), out / "eva.png")
    print(f"saved {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("pellucid_output"),
                        help="folder for the PNG files (default: ./pellucid_output)")
    main(parser.parse_args().out)
