"""CRAFT concepts of one digit class: what the CNN sees (crops), how much each concept
matters (Sobol importance), where it is in an image (concept maps), and how faithful the
concept bottleneck is.

    python examples/concepts_digits.py --digit 3 --out figures/

The model comes from pellucid's zoo (trained in seconds on first use, then cached).
"""
import argparse
from pathlib import Path

from pellucid import plots, zoo
from pellucid.explain import Craft


def main(digit: int, out: Path) -> None:
    model, info = zoo.get_model("digits_cnn")
    data = zoo.load_dataset("digits_cnn")
    train = data.x_train[data.y_train == digit]
    test = data.x_test[data.y_test == digit]
    print(f"digits_cnn: test accuracy {info['test_accuracy']:.3f}; {len(train)} training "
          f"images of digit {digit}")

    # g = the model up to its last ReLU (non-negative activations), h = pool, flatten, linear
    craft = Craft(model, target_layer="relu2", n_concepts=6, patch_size=0.5, crops_per_image=8,
                  nb_design=32, progress=False)
    craft.fit(train, targets=digit)
    importances = craft.estimate_importance(test)
    print("concept importances (total Sobol indices):", importances.numpy().round(3))
    metrics = craft.concept_metrics(test)
    print("concept set on held-out images:", {k: round(v, 3) for k, v in metrics.items()})

    crops = plots.top_crops(train, craft.crop_boxes_, craft.crop_size_, craft.crops_u_, k=6)
    print("saved", plots.save_figure(plots.concept_gallery(crops, importances),
                                     out / f"concepts_digit{digit}_gallery.png"))
    maps = craft.concept_maps(test[:1])[0]                  # (n_concepts, H, W)
    best = int(importances.argmax())
    figure = plots.overlay(test[0], maps[best], title=f"digit {digit}: concept {best}")
    print("saved", plots.save_figure(figure, out / f"concepts_digit{digit}_map.png"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digit", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("pellucid_output"),
                        help="folder for the PNG files (default: ./pellucid_output)")
    arguments = parser.parse_args()
    main(arguments.digit, arguments.out)
