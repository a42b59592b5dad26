"""Model-parameter randomization sanity checks on a small trained model (seconds on a CPU).

Adebayo et al. (2018): an explanation that survives the randomization of the model's weights
does not explain what the model learned. An MLP is trained on scikit-learn's 8x8 digits, then
its layers are re-initialized top first, cascading (the layers randomized so far stay random)
or independently (one layer at a time), and the maps of the randomized models are compared with
the trained model's. Smooth MPRT (Hedström et al., 2024) averages every map over noisy copies
of the input first. Saliency falls to a low similarity; gradient x input keeps the rank order of
|x| (the input dominates |g x|), the failure the check exists to reveal.

    python examples/randomization_sanity.py
"""
import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from pellucid.explain import GradientInput, Saliency
from pellucid.procedures import ModelRandomization
from pellucid.zoo import fit_from_scratch


def trained_mlp():
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16
    y = torch.as_tensor(bunch.target)
    model = fit_from_scratch(lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(),
                                                   nn.Linear(32, 32), nn.ReLU(),
                                                   nn.Linear(32, 10)),
                             x[:1000], y[:1000], epochs=60, lr=2e-2)
    with torch.no_grad():
        accuracy = (model(x[1000:]).argmax(1) == y[1000:]).float().mean().item()
    print(f"test accuracy {accuracy:.3f}")
    return model, x[1000:1016]


def main():
    model, x = trained_mlp()
    print("Spearman |.| between the trained model's maps and the randomized model's, per layer "
          "(top first)")
    for method in (Saliency, GradientInput):
        for mode in ("cascading", "independent"):
            for nb_samples in (1, 8):
                result = ModelRandomization(model, method, explainer_kwargs={"progress": False},
                                            mode=mode, nb_samples=nb_samples, seed=0)(x)
                similarity = np.nanmean(result.details["spearman_abs"], 0)
                label = "smooth MPRT" if nb_samples > 1 else "MPRT"
                print(f"{method.__name__:>13} {mode:>11} {label:>11}: {np.round(similarity, 3)}")


if __name__ == "__main__":
    main()
