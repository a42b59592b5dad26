"""LIME (Ribeiro, Singh & Guestrin, 2016): a weighted linear surrogate over group coalitions."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..._batching import iter_slices
from ..._validation import check_choice, check_non_negative, check_positive_int
from .base import GroupExplainer


class Lime(GroupExplainer):
    """LIME (Ribeiro et al., 2016) over groups (parameters:
    :class:`~pellucid.explain.groups.base.GroupExplainer`).

    ``nb_samples`` coalitions ``z`` in ``{0, 1}^M`` are drawn with the explainer's seeded
    generator, each group kept with probability 1/2 (the first is ``z = 1``, the input itself),
    as lime's image explainer does. Each is weighted by lime's exponential kernel
    ``pi(z) = sqrt(exp(-d(z, 1)^2 / kernel_width^2))`` on the ``"cosine"`` distance (lime's
    default; 1 for the empty coalition) or the ``"hamming"`` distance (the fraction of removed
    groups) to the input. A weighted ``surrogate`` (``"ridge"``: scikit-learn's ``Ridge``
    solved in ``O(M^2)`` memory by :func:`weighted_ridge`; ``"lasso"``: scikit-learn's
    ``Lasso``; with intercept, regularisation ``alpha``) is fitted to the scores; its
    coefficients are the group values, and ``explain_groups(...).r2`` gives its weighted R^2 on
    its own samples (one per input and target), a measure of how well the linear surrogate fits.

    Cost: ``nb_samples`` forward passes per input, ``batch_size`` at a time, every target from
    the same passes (one multi-output fit). Memory: the ``nb_samples x M`` booleans beyond the
    passes with ``"ridge"``; ``"lasso"`` copies them as float64 for scikit-learn.
    """

    def __init__(self, model: Any, *, nb_samples: int = 1000, kernel_width: float = 0.25,
                 distance: str = "cosine", surrogate: str = "ridge", alpha: float = 1.0,
                 **kwargs: Any):
        super().__init__(model, **kwargs)
        self.nb_samples = check_positive_int("nb_samples", nb_samples)
        self.kernel_width = check_non_negative("kernel_width", kernel_width)
        if self.kernel_width == 0:
            raise ValueError("kernel_width must be > 0, got 0")
        self.distance = check_choice("distance", distance, ("cosine", "hamming"))
        self.surrogate = check_choice("surrogate", surrogate, ("ridge", "lasso"))
        self.alpha = check_non_negative("alpha", alpha)

    def _design(self, m: int, generator: torch.Generator) -> tuple[torch.Tensor, Any]:
        z = torch.empty(self.nb_samples, m, dtype=torch.bool)
        for s in iter_slices(self.nb_samples, CHUNK):  # the same numbers as one torch.rand,
            z[s] = torch.rand(s.stop - s.start, m, generator=generator) < 0.5  # 1/4 the bytes
        z[0] = True
        return z, None

    def _solve(self, z: torch.Tensor, info: Any, scores: torch.Tensor
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        kept = z.sum(1, dtype=torch.float64).numpy()
        if self.distance == "cosine":   # 1 - z . 1 / (|z| |1|)
            distance = 1 - np.sqrt(kept / z.shape[1])
        else:
            distance = 1 - kept / z.shape[1]
        weights = np.sqrt(np.exp(-distance ** 2 / self.kernel_width ** 2))
        targets = scores.numpy()
        if self.surrogate == "ridge":
            coefficients, r2 = weighted_ridge(z, targets, weights, self.alpha)
            return torch.from_numpy(coefficients), {"r2": torch.from_numpy(r2)}
        from sklearn.linear_model import Lasso
        from sklearn.metrics import r2_score
        features = z.double().numpy()
        model = Lasso(alpha=self.alpha).fit(features, targets, sample_weight=weights)
        r2 = r2_score(targets, model.predict(features), sample_weight=weights,
                      multioutput="raw_values")
        coefficients = np.atleast_2d(model.coef_).reshape(targets.shape[1], -1)
        return torch.from_numpy(coefficients.T.copy()), {"r2": torch.as_tensor(r2)}


CHUNK = 2048
"""Coalitions per step when drawing a design or accumulating normal equations (Lime,
KernelShap): bounds the float temporaries to ``CHUNK x M``."""


def weighted_ridge(z: torch.Tensor, targets: np.ndarray, weights: np.ndarray, alpha: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's ``Ridge(alpha).fit(z, targets, sample_weight=weights)`` (with intercept)
    and its weighted R^2 on the same samples (``sklearn.metrics.r2_score``, one per target):
    coefficients ``(m, T)`` and R^2 ``(T,)``, float64.

    ``b = (Zc' W Zc + alpha I)^-1 Zc' W yc``, ``Zc``, ``yc`` centred on their weighted means,
    from normal equations accumulated over chunks of the ``(S, m)`` booleans ``z``: ``O(m^2)``
    memory. Written here rather than called from scikit-learn because of memory: ``Ridge``
    copies the float64 design to centre it and again to scale it by ``sqrt(w)``; for 20 000
    samples of 95 groups Lime's solve peaked 92 MiB above the explainer's start, more than the
    49 MiB of its batch of perturbed images and masks (see ``benchmarks/bench_feature_groups.py``).
    Checked against ``Ridge`` and ``r2_score`` to 1e-6 in ``tests/test_lime.py``."""
    y, w = torch.from_numpy(targets).double(), torch.from_numpy(weights).double()
    m = z.shape[1]
    total = w.sum()
    mean_z = torch.zeros(m, dtype=torch.float64)
    for s in iter_slices(len(z), CHUNK):
        mean_z += w[s] @ z[s].double()
    mean_z /= total
    mean_y = (w @ y) / total
    yc = y - mean_y
    gram = torch.zeros(m, m, dtype=torch.float64)
    moment = torch.zeros(m, y.shape[1], dtype=torch.float64)
    for s in iter_slices(len(z), CHUNK):
        centred = z[s].double() - mean_z
        weighted = centred * w[s, None]
        gram += weighted.T @ centred
        moment += weighted.T @ yc[s]
    gram += alpha * torch.eye(m, dtype=torch.float64)
    coefficients = torch.linalg.lstsq(gram, moment, driver="gelsd").solution
    residual_ss = torch.zeros(y.shape[1], dtype=torch.float64)
    for s in iter_slices(len(z), CHUNK):
        residual_ss += w[s] @ (yc[s] - (z[s].double() - mean_z) @ coefficients) ** 2
    total_ss = w @ yc ** 2
    r2 = torch.where(total_ss > 0, 1 - residual_ss / total_ss.clamp(min=1e-300),
                     (residual_ss == 0).double())  # r2_score's convention for constant targets
    return coefficients.numpy(), r2.numpy()
