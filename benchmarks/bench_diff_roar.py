"""DiffROAR (Shah et al., 2021) on BlockMNIST for several methods: accuracy after retraining on
the top-k versus the bottom-k pixels of each method's ranking, per kept fraction.

BlockMNIST from scikit-learn's digits (``--block-size`` pixels per block, digits 0 vs 1), a
one-hidden-layer MLP (the model of Shah et al.'s theory) or the small CNN of
:func:`pellucid.procedures.roar.train_small_cnn`, trained from scratch for every point.
Occlusion runs with one patch per block (block-level features) and with small patches.

    python benchmarks/bench_diff_roar.py [--model mlp|cnn] [--repeats 2] [--block-size 8]
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

from pellucid.datasets import load_blockmnist
from pellucid.explain import GradientInput, IntegratedGradients, Occlusion, Saliency
from pellucid.procedures import DiffRoar
from pellucid.procedures.roar import train_small_cnn
from pellucid.zoo import fit_from_scratch


def train_mlp(x, y, seed=0, steps=200):
    inputs = torch.as_tensor(x)[0].numel()
    return fit_from_scratch(lambda: nn.Sequential(nn.Flatten(), nn.Linear(inputs, 64), nn.ReLU(),
                                                  nn.Linear(64, 2)),
                            x, y, epochs=steps, lr=1e-2, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--block-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_blockmnist(block_size=args.block_size, seed=0)
    b = args.block_size

    def train_cnn(x, y, seed=0):
        return train_small_cnn(x, y, seed=seed, epochs=10)

    train_fn = train_mlp if args.model == "mlp" else train_cnn
    methods = {f"Occlusion (patch {b}, one per block)": (Occlusion, {"patch_size": b}),
               "Occlusion (patch 2)": (Occlusion, {"patch_size": 2}),
               "Saliency": (Saliency, {}), "GradientInput": (GradientInput, {}),
               "IntegratedGradients": (IntegratedGradients, {})}
    fractions = (0.1, 0.25, 0.5, 0.75)
    print(f"BlockMNIST {tuple(data.input_shape)}, {len(data.x_train)} train / "
          f"{len(data.x_test)} test, model {args.model}, repeats {args.repeats}")
    print(f"{'method':40s} " + " ".join(f"k={f:<17}" for f in fractions))
    for name, (cls, kwargs) in methods.items():
        result = DiffRoar(train_fn, cls, explainer_kwargs={"progress": False, **kwargs},
                          fractions=fractions, repeats=args.repeats, progress=False)(
            data.x_train, data.y_train, data.x_test, data.y_test)
        top, bottom = result.details["top_accuracy_mean"], result.details["bottom_accuracy_mean"]
        cells = [f"{t:.2f}-{u:.2f}={t - u:+.2f}    " for t, u in zip(top, bottom)]
        print(f"{name:40s} " + " ".join(cells))


if __name__ == "__main__":
    main()
