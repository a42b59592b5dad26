"""Model-parameter randomization test (Adebayo, Gilmer, Muelly, Goodfellow, Hardt, Kim, 2018,
"Sanity Checks for Saliency Maps").

Cascading randomization: starting from the top layer (the logits) and going down, the
parameters of one more layer are re-initialized at each step, the inputs are explained again
(same targets as the original model's) and every new heatmap is compared with the original one.
An explanation that stays similar while the model is destroyed does not depend on what the model
learned. Layers are the modules that own parameters, in registration order (``named_modules``),
randomized from the last one; pass ``layers`` (module names, top first) for another order.
Re-initialization is PyTorch's default for Linear/Conv, uniform in ``+-1/sqrt(fan_in)``, drawn
from a private generator seeded with ``seed``. Everything happens on a deep copy: the user's
model is never touched, not even to compute the original heatmaps.

Similarities per input and step (``details``): ``"spearman"`` (rank correlation of the raw
maps), ``"spearman_abs"`` (of their absolute values) and ``"ssim"`` (Wang et al., 2004, on the
absolute maps scaled by their maximum to [0, 1]: Gaussian window 11, sigma 1.5, K1 = 0.01,
K2 = 0.03, averaged over the windows that fit; the window shrinks to the largest odd size that
fits smaller maps). ``curves`` is the chosen ``similarity`` ``(N, L)`` along the cascade,
``fractions`` the share of layers randomized, and ``scores`` its mean over the cascade: lower
is better (the explanation is sensitive to the parameters).
"""
from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import nn

from .._batching import predict_batched
from .._runner import ModelRunner
from .._scoring import pearson_rows
from .._validation import check_choice
from ..metrics import MetricResult
from ..models import as_model
from ..selectors import Selector, as_selector
from .base import Procedure

SIMILARITIES = ("spearman_abs", "spearman", "ssim")


def spearman_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each row (average ranks for ties); NaN for constant rows."""
    ranks = [torch.from_numpy(rankdata(t.reshape(len(t), -1).double().numpy(), axis=1))
             for t in (a, b)]
    return pearson_rows(*ranks)


def gaussian_window(size: int, sigma: float) -> torch.Tensor:
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    window = torch.exp(-offsets**2 / (2 * sigma**2))
    window = window / window.sum()
    return window[:, None] * window[None, :]


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, window_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Mean structural similarity (Wang et al., 2004) of maps ``(N, H, W)``, one per pair::

        SSIM = (2 mu_a mu_b + C1)(2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(s_a^2 + s_b^2 + C2))

    with Gaussian-weighted local means and (co)variances, ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``,
    averaged over every window position that fits in the map (no padding)."""
    size = min(window_size, a.shape[-2], a.shape[-1])
    size -= 1 - size % 2
    window = gaussian_window(size, sigma)[None, None]
    a, b = a.double()[:, None], b.double()[:, None]

    def local_mean(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window)

    mu_a, mu_b = local_mean(a), local_mean(b)
    var_a = local_mean(a * a) - mu_a**2
    var_b = local_mean(b * b) - mu_b**2
    cov = local_mean(a * b) - mu_a * mu_b
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)
             / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))
    return index.flatten(1).mean(1)


def scaled_magnitude(heatmaps: torch.Tensor) -> torch.Tensor:
    """``|h| / max |h|`` per map (a zero map stays zero)."""
    magnitude = heatmaps.abs().double()
    peak = magnitude.flatten(1).amax(1).clamp(min=torch.finfo(torch.float64).tiny)
    return magnitude / peak.view(-1, *[1] * (magnitude.ndim - 1))


@torch.no_grad()
def randomize_layer(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialize the parameters ``module`` owns, uniform in ``+-1/sqrt(fan_in)``."""
    weight = getattr(module, "weight", None)
    for parameter in module.parameters(recurse=False):
        reference = weight if isinstance(weight, torch.Tensor) and weight.ndim >= 2 else parameter
        fan_in = reference[0].numel() if reference.ndim >= 2 else reference.numel()
        bound = 1 / math.sqrt(max(fan_in, 1))
        values = torch.rand(parameter.shape, generator=generator, dtype=torch.float64)
        parameter.copy_((2 * values - 1) * bound)


class ModelRandomization(Procedure, ModelRunner):
    """Cascading model-parameter randomization (Adebayo et al., 2018); see the module docstring.

    Parameters:
        model: a ``torch.nn.Module`` (its parameters are what gets randomized).
        explainer, explainer_kwargs: the explainer factory (:mod:`pellucid.procedures.base`).
        similarity: what ``curves`` and ``scores`` hold: ``"spearman_abs"`` (default),
            ``"spearman"`` or ``"ssim"``; all three are in ``details``.
        layers: names of the modules to randomize, top first; ``None`` = every module that owns
            parameters, last registered first.
        seed: seed of the re-initialization.
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
                 similarity: str = "spearman_abs", layers: Sequence[str] | None = None,
                 **common: Any):
        if not isinstance(model, nn.Module):
            raise TypeError(f"ModelRandomization randomizes the layers of a torch.nn.Module; "
                            f"got {type(model).__name__}")
        super().__init__(model, **common)
        self._check_explainer(explainer, explainer_kwargs)
        self.explainer = explainer
        self.explainer_kwargs = explainer_kwargs
        self.similarity = check_choice("similarity", similarity, SIMILARITIES)
        self.layers = layers
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
        original = self._heatmaps(randomized, x, t)
        modules = dict(randomized.named_modules())
        generator = self._generator()
        similarities = {name: [] for name in SIMILARITIES}
        for name in names:
            randomize_layer(modules[name], generator)
            heatmaps = self._heatmaps(randomized, x, t)
            similarities["spearman"].append(spearman_rows(original, heatmaps))
            similarities["spearman_abs"].append(spearman_rows(original.abs(), heatmaps.abs()))
            if x.ndim == 4:
                similarities["ssim"].append(ssim(scaled_magnitude(original),
                                                 scaled_magnitude(heatmaps)))
        details: dict[str, Any] = {"layers": names}
        if not (callable(t) or isinstance(t, Selector)):  # class indices
            details["targets"] = np.broadcast_to(np.asarray(t), (len(x),)).copy()
        details.update({key: torch.stack(values, 1).numpy()
                        for key, values in similarities.items() if values})
        curves = details[self.similarity]
        return MetricResult(self.name, torch.from_numpy(curves).nanmean(1).numpy(), curves=curves,
                            fractions=torch.arange(1, len(names) + 1).double().numpy() / len(names),
                            higher_is_better=False, details=details)

    evaluate = __call__
