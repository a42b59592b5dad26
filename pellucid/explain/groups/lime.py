"""LIME (Ribeiro, Singh & Guestrin, 2016): a weighted linear surrogate over group coalitions."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

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
    groups) to the input. A weighted ``surrogate`` (scikit-learn's ``Ridge`` or ``Lasso``, with
    intercept, regularisation ``alpha``) is fitted to the scores; its coefficients are the
    group values, and ``explain_groups(...).r2`` gives its weighted R^2 on its own samples
    (one per input and target), a measure of how well the linear surrogate fits.

    Cost: ``nb_samples`` forward passes per input, ``batch_size`` at a time, every target from
    the same passes (one multi-output fit).
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
        z = torch.rand(self.nb_samples, m, generator=generator) < 0.5
        z[0] = True
        return z, None

    def _solve(self, z: torch.Tensor, info: Any, scores: torch.Tensor
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from sklearn.linear_model import Lasso, Ridge
        from sklearn.metrics import r2_score
        features = z.double().numpy()
        kept = features.sum(1)
        if self.distance == "cosine":   # 1 - z . 1 / (|z| |1|)
            distance = 1 - np.sqrt(kept / z.shape[1])
        else:
            distance = 1 - kept / z.shape[1]
        weights = np.sqrt(np.exp(-distance ** 2 / self.kernel_width ** 2))
        model = (Ridge if self.surrogate == "ridge" else Lasso)(alpha=self.alpha)
        targets = scores.numpy()
        model.fit(features, targets, sample_weight=weights)
        r2 = r2_score(targets, model.predict(features), sample_weight=weights,
                      multioutput="raw_values")
        coefficients = np.atleast_2d(model.coef_).reshape(targets.shape[1], -1)
        return torch.from_numpy(coefficients.T.copy()), {"r2": torch.as_tensor(r2)}
