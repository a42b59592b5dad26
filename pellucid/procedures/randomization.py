"""Model-parameter randomization test (Adebayo, Gilmer, Muelly, Goodfellow, Hardt, Kim, 2018,
"Sanity Checks for Saliency Maps"), and its smooth variant (Hedström, Weber, Lapuschkin, Höhne,
2024, "Sanity Checks Revisited: An Exploration to Repair the Model Parameter Randomisation
Test").

Starting from the top layer (the logits) and going down, the parameters of one layer are
re-initialized at each step, the inputs are explained again (same targets as the original
model's) and every new heatmap is compared with the original one. ``mode="cascading"`` keeps
the layers randomized so far (step ``i``: the top ``i + 1`` layers are random); ``"independent"``
randomizes one layer at a time, every other layer trained. An explanation that stays similar
while the model is destroyed does not depend on what the model learned. Layers are the modules
that own parameters, in registration order (``named_modules``), randomized from the last one;
pass ``layers`` (module names, top first) for another order. Re-initialization is PyTorch's
default for Linear/Conv, uniform in ``+-1/sqrt(fan_in)``, drawn once per layer (top first) from
a private generator seeded with ``seed``, so a layer gets the same random values in both modes.
Everything happens on a deep copy: the user's model is never touched.

Smooth MPRT (``nb_samples > 1``): every explanation, of the original and of each randomized
model, is the mean of the explanations of ``nb_samples`` noisy copies ``x + N(0, sigma^2)``,
``sigma = noise_level * (max x - min x)`` per input (Hedström et al.: 50 copies, 0.1). Copy
``k`` has the same noise for every model, so the models are compared on the same inputs. The
averaging removes the gradient noise that makes the plain test call a noisy method sensitive.

Similarities per input and step (``details``): ``"spearman"`` (rank correlation of the raw
maps), ``"spearman_abs"`` (of their absolute values) and ``"ssim"`` (Wang et al., 2004, by
``skimage.metrics.structural_similarity`` on the absolute maps scaled by their maximum to
[0, 1]: Gaussian window of sigma 1.5 (11 pixels), K1 = 0.01, K2 = 0.03, population
covariances, averaged over the windows that fit; maps under 11 pixels a side get the largest
window that fits, sigma = radius / 3.5). ``curves`` is the chosen ``similarity`` ``(N, L)``
along the layers, ``fractions`` the share of layers reached, and ``scores`` its mean over the
layers: lower is better (the explanation is sensitive to the parameters).
"""
from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import numpy as np
import torch
from skimage.metrics import structural_similarity
from torch import nn

from .._batching import predict_batched
from .._runner import ModelRunner
from .._scoring import scaled_magnitude, spearman_rows
from .._validation import check_choice, check_non_negative, check_positive_int
from ..metrics import MetricResult
from ..models import as_model
from ..selectors import Selector, as_selector
from .base import Procedure

SIMILARITIES = ("spearman_abs", "spearman", "ssim")
MODES = ("cascading", "independent")


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean structural similarity (Wang et al., 2004) of maps ``(N, H, W)``, one per pair, by
    scikit-image (Gaussian window, sigma 1.5, population covariances; see the module
    docstring for maps under 11 pixels)::

        SSIM = (2 mu_a mu_b + C1)(2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(s_a^2 + s_b^2 + C2))
    """
    radius = min(5, (min(a.shape[-2:]) - 1) // 2)  # skimage: radius = int(3.5 sigma + 0.5)
    if radius < 1:
        raise ValueError(f"ssim needs maps of at least 3 x 3 pixels; got {tuple(a.shape[-2:])}")
    sigma = 1.5 if radius == 5 else radius / 3.5
    values = [structural_similarity(x, y, data_range=data_range, gaussian_weights=True,
                                    sigma=sigma, use_sample_covariance=False)
              for x, y in zip(a.double().numpy(), b.double().numpy())]
    return torch.tensor(values, dtype=torch.float64)


def random_parameters(module: nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """New values for the parameters ``module`` owns, uniform in ``+-1/sqrt(fan_in)``."""
    weight = getattr(module, "weight", None)
    values = {}
    for name, parameter in module.named_parameters(recurse=False):
        reference = weight if isinstance(weight, torch.Tensor) and weight.ndim >= 2 else parameter
        fan_in = reference[0].numel() if reference.ndim >= 2 else reference.numel()
        bound = 1 / math.sqrt(max(fan_in, 1))
        draw = torch.rand(parameter.shape, generator=generator, dtype=torch.float64)
        values[name] = ((2 * draw - 1) * bound).to(parameter.dtype)
    return values


@torch.no_grad()
def set_parameters(module: nn.Module, values: dict[str, torch.Tensor]) -> None:
    for name, parameter in module.named_parameters(recurse=False):
        parameter.copy_(values[name])


class ModelRandomization(Procedure, ModelRunner):
    """Model-parameter randomization test (Adebayo et al., 2018), cascading or independent,
    plain or smooth (Hedström et al., 2024); see the module docstring.

    Parameters:
        model: a ``torch.nn.Module`` (its parameters are what gets randomized).
        explainer, explainer_kwargs: the explainer factory (:mod:`pellucid.procedures.base`).
        mode: ``"cascading"`` (default: the top ``i + 1`` layers random at step ``i``) or
            ``"independent"`` (only layer ``i`` random at step ``i``).
        similarity: what ``curves`` and ``scores`` hold: ``"spearman_abs"`` (default),
            ``"spearman"`` or ``"ssim"``; all three are in ``details``.
        layers: names of the modules to randomize, top first; ``None`` = every module that owns
            parameters, last registered first.
        nb_samples: noisy copies averaged per explanation; 1 (default) = the plain test on the
            inputs themselves, > 1 = smooth MPRT (Hedström et al. use 50).
        noise_level: std of that noise as a fraction of each input's range (0.1); used only
            when ``nb_samples > 1``.
        seed: seed of the re-initialization and of the noise.
        batch_size, device, progress: as for every runner (``batch_size``: most inputs per
            forward pass when resolving targets).

    ``procedure(inputs, targets=None)`` explains ``inputs`` itself and returns a
    :class:`MetricResult`. ``targets``: ``None`` = the original model's predicted class (the
    same class for every randomized model), an int, N ints, or an output selector (passed to
    the explainer as it is).
    """

    name = "model_randomization"
    higher_is_better = False
    _model_arguments = ("model", "explainer")

    def __init__(self, model: Any, explainer: Any, *, explainer_kwargs: dict | None = None,
                 mode: str = "cascading", similarity: str = "spearman_abs",
                 layers: Sequence[str] | None = None, nb_samples: int = 1,
                 noise_level: float = 0.1, **common: Any):
        if not isinstance(model, nn.Module):
            raise TypeError(f"ModelRandomization randomizes the layers of a torch.nn.Module; "
                            f"got {type(model).__name__}")
        super().__init__(model, **common)
        self._check_explainer(explainer, explainer_kwargs)
        self.explainer = explainer
        self.explainer_kwargs = explainer_kwargs
        self.mode = check_choice("mode", mode, MODES)
        self.similarity = check_choice("similarity", similarity, SIMILARITIES)
        self.layers = layers
        self.nb_samples = check_positive_int("nb_samples", nb_samples)
        self.noise_level = check_non_negative("noise_level", noise_level)
        self._layer_names()  # unknown layer names fail here, before any work

    def _layer_names(self) -> list[str]:
        modules = dict(self.model.named_modules())
        if self.layers is not None:
            unknown = [name for name in self.layers if name not in modules]
            if unknown:
                raise ValueError(f"layers {unknown} are not modules of the model; its modules "
                                 f"with parameters are {self._parameterized(modules)}")
            return list(self.layers)
        return self._parameterized(modules)[::-1]

    @staticmethod
    def _parameterized(modules: dict) -> list[str]:
        return [name for name, m in modules.items() if any(True for _ in m.parameters(False))]

    def _smooth_heatmaps(self, model: nn.Module, x: torch.Tensor, targets: Any,
                         root: int) -> torch.Tensor:
        """The heatmaps of ``x``, or (``nb_samples > 1``) their mean over the noisy copies;
        copy ``k``'s noise comes from ``(root, k)``, the same for every model."""
        if self.nb_samples == 1:
            return self._heatmaps(model, x, targets)
        dims = tuple(range(1, x.ndim))
        sigma = self.noise_level * (x.amax(dim=dims) - x.amin(dim=dims))
        total = None
        for k in range(self.nb_samples):
            noise = np.random.default_rng([root, k]).standard_normal(x.shape)
            noisy = x + sigma.view(-1, *[1] * (x.ndim - 1)) * torch.from_numpy(noise).to(x.dtype)
            heatmaps = self._heatmaps(model, noisy, targets).double()
            total = heatmaps if total is None else total + heatmaps
        return (total / self.nb_samples).float()

    def __call__(self, inputs: Any, targets: Any = None) -> MetricResult:
        x = self._validate(inputs)
        if self.similarity == "ssim" and x.ndim != 4:
            raise ValueError("similarity 'ssim' needs images (N, C, H, W); use a Spearman "
                             "similarity for tabular inputs")
        names = self._layer_names()
        if not names:
            raise ValueError("the model has no layer with parameters to randomize")
        if as_selector(targets).multiple:
            raise ValueError("ModelRandomization compares one heatmap per input: pass one target "
                             "per input, not an (N, T) array")
        randomized = copy.deepcopy(self.model)
        t = targets
        if targets is None:
            t = predict_batched(as_model(randomized), x, batch_size=self.batch_size).argmax(1)
        generator = self._generator()
        modules = dict(randomized.named_modules())
        trained = dict(self.model.named_modules())  # never changed: what independent mode puts back
        random = {name: random_parameters(modules[name], generator) for name in names}
        root = int(torch.randint(2**62, (1,), generator=generator))
        original = self._smooth_heatmaps(randomized, x, t, root)
        similarities = {name: [] for name in SIMILARITIES}
        for i, name in enumerate(names):
            if self.mode == "independent" and i:
                previous = names[i - 1]
                set_parameters(modules[previous],
                               dict(trained[previous].named_parameters(recurse=False)))
            set_parameters(modules[name], random[name])
            heatmaps = self._smooth_heatmaps(randomized, x, t, root)
            similarities["spearman"].append(spearman_rows(original, heatmaps))
            similarities["spearman_abs"].append(spearman_rows(original.abs(), heatmaps.abs()))
            if x.ndim == 4:
                similarities["ssim"].append(ssim(scaled_magnitude(original),
                                                 scaled_magnitude(heatmaps)))
        details: dict[str, Any] = {"layers": names, "mode": self.mode}
        if not (callable(t) or isinstance(t, Selector)):  # class indices
            details["targets"] = np.broadcast_to(np.asarray(t), (len(x),)).copy()
        details.update({key: torch.stack(values, 1).numpy()
                        for key, values in similarities.items() if values})
        curves = details[self.similarity]
        return MetricResult(self.name, torch.from_numpy(curves).nanmean(1).numpy(), curves=curves,
                            fractions=torch.arange(1, len(names) + 1).double().numpy() / len(names),
                            higher_is_better=False, details=details)

    evaluate = __call__
