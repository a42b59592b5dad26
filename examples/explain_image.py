"""Explain one image prediction: a small CNN on handwritten digits, three methods, overlays.

    python examples/explain_image.py --out figures/

The model comes from pellucid's zoo: trained in a few seconds on first use, then loaded from
the cache (~/.cache/pellucid, or $PELLUCID_CACHE).
"""
import argparse
from pathlib import Path

from pellucid import plots, zoo
from pellucid.explain import IntegratedGradients, Occlusion, Saliency


def main(out: Path) -> None:
    model, info = zoo.get_model("digits_cnn")
    data = zoo.load_dataset("digits_cnn")
    origin = "from the cache" if info["from_cache"] else f"trained in {info['train_seconds']} s"
    print(f"digits_cnn: test accuracy {info['test_accuracy']:.3f} ({origin})")

    image, label = data.x_test[:1], int(data.y_test[0])      # one image, shape (1, 1, 32, 32)
    predicted = int(model(image).argmax(1))
    print(f"true digit {label}, predicted {predicted}")

    methods = {
        "Saliency": Saliency(model, progress=False),
        "IntegratedGradients": IntegratedGradients(model, steps=32, progress=False),
        "Occlusion": Occlusion(model, patch_size=4, stride=2, progress=False),
    }
    for name, explainer in methods.items():
        heatmap = explainer(image, targets=predicted)[0]    # (32, 32), float32
        figure = plots.overlay(image[0], heatmap, title=f"{name}: digit {predicted}")
        path = plots.save_figure(figure, out / f"digit_{name}.png")
        print(f"{name:>20}: saved {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("pellucid_output"),
                        help="folder for the PNG files (default: ./pellucid_output)")
    main(parser.parse_args().out)
