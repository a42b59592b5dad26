"""BAM-style scores (Yang & Kim, 2019) of several methods on :func:`pellucid.datasets.load_bam`:
model contrast (MCS, with a bootstrap CI), input dependence (IDR) and input independence (IIR).

Two small CNNs (conv-pool-conv-global max pool) are trained on the same images, one on object
(digit) labels, one on scene (texture) labels. Two methods ignore the model: a Sobel edge
detector and uniform random maps; their model contrast must be about 0.

    python benchmarks/bench_bam.py [--n-train 600] [--epochs 20] [--threads 1]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from skimage.filters import sobel
from torch import nn

from pellucid.benchmark.statistics import bootstrap_ci
from pellucid.datasets.bam import input_dependence, input_independence, load_bam, model_contrast
from pellucid.explain import GradCAM, GradientInput, IntegratedGradients, Saliency, SmoothGrad
from pellucid.zoo import fit_from_scratch


def train_cnn(x, y, *, seed=0, epochs=20):
    build = lambda: nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        nn.Linear(32, int(y.max()) + 1))
    return fit_from_scratch(build, x, y, epochs=epochs, lr=3e-3, batch_size=32, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_bam(args.n_train, 300, size=24, object_size=12, seed=0)
    e = data.extras
    x, x_without, masks = data.x_test, e["x_test_without_object"], data.masks_test
    object_model = train_cnn(data.x_train, e["y_object_train"], epochs=args.epochs)
    scene_model = train_cnn(data.x_train, e["y_scene_train"], epochs=args.epochs)
    with torch.no_grad():
        object_accuracy = (object_model(x).argmax(1) == e["y_object_test"]).float().mean()
        scene = scene_model(x).argmax(1)
        unchanged = (scene == scene_model(x_without).argmax(1)) & (scene == e["y_scene_test"])
    print(f"test accuracy: object model {object_accuracy:.3f}, scene model "
          f"{(scene == e['y_scene_test']).float().mean():.3f}; IDR/IIR on {int(unchanged.sum())} "
          "inputs whose scene prediction the object does not change")
    generator = torch.Generator().manual_seed(0)
    methods = {
        "Saliency": lambda m, v, t: Saliency(m, progress=False).explain(v, t),
        "GradientInput": lambda m, v, t: GradientInput(m, progress=False).explain(v, t),
        "IntegratedGradients": lambda m, v, t: IntegratedGradients(
            m, steps=32, progress=False).explain(v, t),
        "SmoothGrad": lambda m, v, t: SmoothGrad(m, nb_samples=32, seed=0,
                                                 progress=False).explain(v, t),
        "GradCAM": lambda m, v, t: GradCAM(m, target_layer="4", progress=False).explain(v, t),
        "edge detector (Sobel)": lambda m, v, t: torch.as_tensor(
            np.stack([sobel(image[0].numpy()) for image in v])),
        "random": lambda m, v, t: torch.rand(len(v), *v.shape[2:], generator=generator),
    }
    print(f"{'method':24s} {'MCS':>7s} {'95% CI':>18s} {'IDR':>6s} {'IIR':>6s}")
    for name, explain in methods.items():
        h_object = explain(object_model, x, e["y_object_test"])
        h_scene = explain(scene_model, x, e["y_scene_test"])
        h_without = explain(scene_model, x_without, e["y_scene_test"])
        mcs = model_contrast(h_object, h_scene, masks)
        idr = input_dependence(h_scene[unchanged], h_without[unchanged], masks[unchanged])
        iir = input_independence(h_scene[unchanged], h_without[unchanged], masks[unchanged])
        low, high = bootstrap_ci(mcs)
        print(f"{name:24s} {mcs.mean():+7.3f} [{low:+.3f}, {high:+.3f}] {idr.mean():6.3f} "
              f"{iir.mean():6.3f}")


if __name__ == "__main__":
    main()
