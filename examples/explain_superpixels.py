"""Explain image predictions over superpixels: KernelShap, Lime and FeatureAblation.

    python examples/explain_superpixels.py --out figures/

A small CNN on handwritten digits (pellucid's zoo: trained in seconds on first use, then
cached). Each image is cut into superpixels by SLIC (``features.slic``, scikit-image; the masks
differ from image to image, so they are given as a callable run on each call); a grid
(``features.grid``) is the default when no mask is given. Every method switches whole
superpixels to the baseline (0, the background) and gives each superpixel one value.
The script prints the efficiency check of KernelShap (values add up to f(x) - f(baseline)) and
Lime's R^2, and saves one overlay per method and image.
"""
import argparse
import functools
from pathlib import Path

from pellucid import features, plots, zoo
from pellucid.explain import FeatureAblation, KernelShap, Lime


def main(out: Path) -> None:
    model, info = zoo.get_model("digits_cnn")
    data = zoo.load_dataset("digits_cnn")
    images = data.x_test[:3]                                   # (3, 1, 32, 32)
    predicted = model(images).argmax(1)
    print(f"digits_cnn: test accuracy {info['test_accuracy']:.3f}; predicted "
          f"{predicted.tolist()} (true {data.y_test[:3].tolist()})")

    superpixels = functools.partial(features.slic, n_segments=40, compactness=0.1)
    common = {"feature_mask": superpixels, "baseline": 0.0, "progress": False}
    explainers = {
        "KernelShap": KernelShap(model, nb_samples=2000, seed=0, **common),
        "Lime": Lime(model, nb_samples=1000, seed=0, **common),
        "FeatureAblation": FeatureAblation(model, **common),
    }
    results = {name: e.explain_groups(images, predicted) for name, e in explainers.items()}

    shapley = results["KernelShap"]
    counts = (shapley.feature_mask.flatten(1).amax(1) + 1).tolist()
    print(f"superpixels per image: {counts}")
    gap = (shapley.values.nansum(1) - (shapley.prediction - shapley.base_value)).abs().max()
    print(f"KernelShap: |sum of values - (f(x) - f(baseline))| <= {gap:.1e}")
    print(f"Lime surrogate R^2: {[round(r, 3) for r in results['Lime'].r2.tolist()]}")

    figure = plots.method_grid(images, {name: r.heatmaps for name, r in results.items()},
                               titles=[f"digit {p}" for p in predicted.tolist()])
    print("saved", plots.save_figure(figure, out / "superpixels.png"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("pellucid_output"),
                        help="folder for the PNG files (default: ./pellucid_output)")
    main(parser.parse_args().out)
