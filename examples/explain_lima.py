"""Explain digits with LiMA: regions ranked by a submodular score, searched from both ends.

    python examples/explain_lima.py --out figures/

A small CNN on handwritten digits (pellucid's zoo: trained in seconds on first use, then
cached). Lima (Chen et al., 2025) ranks the regions of each image (an 8 x 8 grid by default;
here also ~40 SLIC superpixels) by greedily maximising the score of the regions kept, and gives
each region its place in the ranking (1 = selected first). The script prints the first regions
of each ranking and the Deletion AUC of each map, and saves the maps side by side.
"""
import argparse
import functools
from pathlib import Path

from pellucid import features, plots, zoo
from pellucid.explain import Lima
from pellucid.metrics import Deletion


def main(out: Path) -> None:
    model, info = zoo.get_model("digits_cnn")
    images = zoo.load_dataset("digits_cnn").x_test[:3]         # (3, 1, 32, 32)
    predicted = model(images).argmax(1)
    print(f"digits_cnn: test accuracy {info['test_accuracy']:.3f}; predicted "
          f"{predicted.tolist()}")

    superpixels = functools.partial(features.slic, n_segments=40, compactness=0.1)
    explainers = {"Lima, grid": Lima(model, progress=False),
                  "Lima, superpixels": Lima(model, feature_mask=superpixels, progress=False)}
    heatmaps = {}
    for name, explainer in explainers.items():
        ranking = explainer.ranking(images, predicted)     # regions, most important first
        heatmaps[name] = explainer.explain(images, predicted)
        deletion = Deletion(model, progress=False)(images, heatmaps[name], predicted)
        print(f"{name}: first regions {[r[:5].tolist() for r in ranking]}; "
              f"deletion AUC {deletion.mean:.3f} (lower is better)")

    figure = plots.method_grid(images, heatmaps,
                               titles=[f"digit {p}" for p in predicted.tolist()])
    print("saved", plots.save_figure(figure, out / "lima.png"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("pellucid_output"),
                        help="folder for the PNG files (default: ./pellucid_output)")
    main(parser.parse_args().out)
