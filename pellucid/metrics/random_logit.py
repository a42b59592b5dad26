"""Random logit test (Sixt, Granz & Landgraf, 2020, "When Explanations Lie: Why Many Modified
BP Attributions Fail"): an explanation of class ``c`` should differ from the explanation of
another class. For every input, a class ``r != c`` is drawn uniformly (seeded), the input is
explained for ``r`` with the method under test (an explainer instance, class or callable, as
for :mod:`pellucid.metrics.robustness`), and the score is the similarity of the two maps:

- images: SSIM (``skimage.metrics.structural_similarity``, Wang et al., 2004) of ``|h|``
  scaled by its maximum to [0, 1], ``data_range=1``, a 7 x 7 window (the largest odd size that
  fits smaller maps);
- tabular: Spearman's rank correlation of ``|h|``.

Lower is better (the explanation depends on the class). Class targets only: the test needs a
class to draw another from.
"""
from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import structural_similarity

from .._batching import iter_slices
from .._scoring import scaled_magnitude, spearman_rows
from ..selectors import ClassScore, as_selector
from .base import MetricResult
from .robustness import ReExplainingMetric


def ssim_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM of each pair of ``(H, W)`` maps in [0, 1] (skimage; window 7 or the largest odd
    size that fits)."""
    size = min(7, a.shape[-2], a.shape[-1])
    size -= 1 - size % 2
    if size < 3:
        raise ValueError(f"SSIM needs maps of at least 3 x 3 pixels; got {tuple(a.shape[1:])}")
    return torch.tensor([structural_similarity(p, q, data_range=1.0, win_size=size)
                         for p, q in zip(a.numpy(), b.numpy())], dtype=torch.float64)


class RandomLogit(ReExplainingMetric):
    """Random logit test (Sixt et al., 2020); see the module docstring. Lower is better.

    Parameters:
        explainer, explainer_kwargs: the method under test
            (:mod:`pellucid.metrics.robustness`).
        seed: seed of the random classes.

    ``details``: ``random_classes`` ``(N,)``.
    """

    name = "random_logit"
    higher_is_better = False

    def __call__(self, inputs, heatmaps, targets=None, *, masks=None, forward_kwargs=None):
        if not isinstance(as_selector(targets), ClassScore):  # before any pass
            raise ValueError("RandomLogit draws another class than the target: targets must be "
                             "classes (None, ints or ClassScore), not a "
                             f"{type(as_selector(targets)).__name__}")
        return super().__call__(inputs, heatmaps, targets, masks=masks,
                                forward_kwargs=forward_kwargs)

    evaluate = __call__

    def _check_inputs(self, x):
        if x.ndim == 4 and min(x.shape[2:]) < 3:
            raise ValueError(f"RandomLogit's SSIM needs maps of at least 3 x 3 pixels; got "
                             f"images of {x.shape[2]} x {x.shape[3]}")

    def _score(self, x, heatmaps, scorer):
        n_classes = scorer.selector.tensor(scorer.forward(x[:1], torch.zeros(1, dtype=torch.long))
                                           ).reshape(1, -1).shape[1]
        if n_classes < 2:
            raise ValueError("RandomLogit needs a model with at least 2 classes")
        target = scorer.selector._bound[:, 0]
        offset = torch.randint(1, n_classes, (len(x),), generator=self._generator())
        random_classes = (target + offset) % n_classes  # uniform over the other classes
        explain = self._explainer(scorer)
        other = torch.cat([explain(x[s], torch.arange(s.start, s.stop), random_classes[s])
                           for s in iter_slices(len(x), self.batch_size)])
        if x.ndim == 4:
            scores = ssim_rows(scaled_magnitude(heatmaps), scaled_magnitude(other))
        else:
            scores = spearman_rows(heatmaps.abs(), other.abs())
        return MetricResult(self.name, scores.numpy(), higher_is_better=False,
                            details={"random_classes": np.asarray(random_classes)})
