"""Layer masking against a fill, for methods and metrics, on the zoo's digits CNN.

    python examples/layer_masking.py --images 50

Occlusion, RISE, Sobol and FeatureAblation (over SLIC superpixels) explain the same test digits
twice: with the removed pixels filled by 0 (the background: ``masking="fill"``) and with them
masked at every layer (``masking="layer"``, Balasubramanian & Feizi, 2023). Each heatmap is
then scored by Deletion with both substrates, so the table shows what changes with the method's
substrate and what with the metric's. The script also prints each method's time with layer
masking as a ratio of its time with a fill (same passes; the difference is the mask carried
through the layers).
"""
import argparse
import functools
import time

from pellucid import features, zoo
from pellucid.explain import FeatureAblation, Occlusion, Rise, SobolAttribution
from pellucid.metrics import Deletion

METHODS = {
    "Occlusion": (Occlusion, {"patch_size": 4}),
    "RISE": (Rise, {"nb_samples": 500, "grid_size": 4, "seed": 0}),
    "Sobol": (SobolAttribution, {"grid_size": 4, "nb_design": 32, "seed": 0}),
    "FeatureAblation": (FeatureAblation, {"feature_mask": functools.partial(
        features.slic, n_segments=40, compactness=0.1)}),
}


def main(n_images: int) -> None:
    model, _ = zoo.get_model("digits_cnn")
    data = zoo.load_dataset("digits_cnn")
    images, labels = data.x_test[:n_images], data.y_test[:n_images]
    metrics = {masking: Deletion(model, masking=masking, progress=False)
               for masking in ("fill", "layer")}
    print(f"{n_images} digits; Deletion AUC (lower is better) by the metric's substrate")
    print(f"{'method':<16}{'explained with':<16}{'Deletion fill':>14}{'Deletion layer':>16}"
          f"{'seconds':>10}")
    for name, (method, settings) in METHODS.items():
        seconds = {}
        for masking in ("fill", "layer"):
            explainer = method(model, masking=masking, progress=False, **settings)
            start = time.perf_counter()
            heatmaps = explainer.explain(images, labels)
            seconds[masking] = time.perf_counter() - start
            scores = [metrics[m](images, heatmaps, labels).mean for m in ("fill", "layer")]
            print(f"{name:<16}{masking:<16}{scores[0]:>14.3f}{scores[1]:>16.3f}"
                  f"{seconds[masking]:>10.2f}")
        print(f"{'':<16}time with layer masking / with a fill: "
              f"{seconds['layer'] / seconds['fill']:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50)
    main(parser.parse_args().images)
