"""DiffROAR (Shah, Jain, Netrapalli, 2021, "Do Input Gradients Highlight Discriminative
Features?", NeurIPS).

Retraining as in ROAR/KAR (:mod:`pellucid.procedures.roar`: the explainer factory explains every
training and test input for its true label on a model trained on the original data; removed
pixels/features are replaced by the training mean), but for every fraction ``f`` two models are
trained from scratch: one on inputs that keep only their top ``k = round(f * P)`` ranked
pixels/features, one on inputs that keep only their bottom ``k``. Then

    DiffROAR(f) = accuracy(top-k kept) - accuracy(bottom-k kept)

A clearly positive gap means the attribution ranks the discriminative features first; about 0
means the ranking is no better than random at separating them; negative means it ranks them last.
``curves`` is ``(repeats, S)`` DiffROAR, ``scores`` the normalized area under each repeat's curve;
``details`` hold the two accuracy curves.
"""
from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .._scoring import trapezoid_auc
from ..metrics import MetricResult
from .roar import _Retraining


class DiffRoar(_Retraining):
    """DiffROAR (Shah et al., 2021): accuracy after retraining on the top-k kept minus on the
    bottom-k kept, per fraction; higher is better. Parameters as :class:`~pellucid.procedures.
    Kar` (``fractions`` are the kept fractions ``k / P``)."""

    name = "diff_roar"
    higher_is_better = True
    keeps_top = True

    def evaluate(self, x_train, y_train, x_test, y_test) -> MetricResult:
        """Explain, then retrain keeping the top-k and the bottom-k of every input; see the
        module docstring."""
        xs, ys, as_numpy, ranks, fill = self._prepare(x_train, y_train, x_test, y_test)
        # keeping the top k of the reversed ranking keeps the bottom k of the ranking
        reversed_ranks = {part: r.shape[1] - 1 - r for part, r in ranks.items()}
        bar = tqdm(total=2 * len(self.fractions) * self.repeats, desc=self.name,
                   disable=not self.progress, leave=False)
        top = self._accuracies(xs, ys, as_numpy, ranks, fill, bar)
        bottom = self._accuracies(xs, ys, as_numpy, reversed_ranks, fill, bar)
        bar.close()
        fractions = np.asarray(self.fractions)
        gap = top - bottom
        details = {"diff_roar_mean": gap.mean(0), "diff_roar_std": gap.std(0),
                   "top_curves": top, "bottom_curves": bottom,
                   "top_accuracy_mean": top.mean(0), "bottom_accuracy_mean": bottom.mean(0)}
        return MetricResult(self.name, trapezoid_auc(gap, fractions), curves=gap,
                            fractions=fractions, higher_is_better=True, details=details)

    __call__ = evaluate
