"""``pellucid demo``: one small benchmark that shows every family of methods at work.

Two tiny CNNs from :mod:`pellucid.zoo` (trained in seconds on first use, then cached): one on
scikit-learn's digits, one on BlockMNIST, where the label depends only on the digit block, so
the pointing game can check whether a heatmap points at the evidence. Every family of methods
(gradients, occlusion, RISE, Sobol, DeepLIFT, CAM) and a random control are scored by deletion,
insertion, MuFidelity and, on BlockMNIST, the pointing game. Sample counts are kept small so
the whole demo runs in about 25 s on two CPU cores, training included; ``quick`` in about 8 s.
"""
from __future__ import annotations

from pathlib import Path

from .config import BenchmarkConfig, DatasetSpec, MethodSpec, MetricSpec


def demo_config(out: str | Path = "pellucid-demo", *, quick: bool = False) -> BenchmarkConfig:
    """The demo benchmark; ``quick``: BlockMNIST only, fewer inputs and random draws."""
    datasets = [DatasetSpec("blockmnist", model="blockmnist_cnn")]
    if not quick:
        datasets.insert(0, DatasetSpec("digits", model="digits_cnn"))
    draws = 2 if quick else 1  # divides the random draws of the sampling methods
    methods = [
        MethodSpec("Saliency"),
        MethodSpec("IntegratedGradients", {"steps": 32}),
        MethodSpec("SmoothGrad", {"nb_samples": 32 // draws}),
        MethodSpec("Occlusion", {"patch_size": 4, "stride": 2}),
        MethodSpec("Rise", {"nb_samples": 2000 // draws, "grid_size": 4}, label="RISE"),
        MethodSpec("SobolAttribution", {"nb_design": 32 // draws, "grid_size": 4},
                   label="Sobol"),
        MethodSpec("DeepLift"),
        # HiResCAM, not Grad-CAM: these CNNs end in flatten + linear, where Grad-CAM's averaged
        # gradients leave 12 of 16 digits maps negative (all zero after its ReLU); HiResCAM is
        # the CAM that stays faithful to such heads (Draelos & Carin, 2020).
        MethodSpec("HiResCAM"),
        MethodSpec("Random"),
    ]
    metrics = [
        MetricSpec("Deletion"),
        MetricSpec("Insertion"),
        MetricSpec("MuFidelity", {"nb_samples": 128 // draws}),
        MetricSpec("PointingGame", datasets=["blockmnist"]),
    ]
    return BenchmarkConfig(datasets=datasets, methods=methods, metrics=metrics,
                           n_samples=4 if quick else 16, seed=0, out=out)
