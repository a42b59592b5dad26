"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci, Kasneci, 2022, "A Consistent and
Efficient Evaluation Strategy for Attribution Methods"; reference code tleemann/road_evaluation).

Removed pixels are filled by *noisy linear imputation*: every removed pixel equals the weighted
average of its available 8 neighbours (weight 1/6 for the 4 direct, 1/12 for the 4 diagonal
neighbours; neighbours outside the image are left out and the weights of the others
renormalized), with removed neighbours unknown too. That is one sparse linear system per image
(the same matrix for every channel, one right-hand side per channel); here the systems of a
whole batch are solved at once as one block-diagonal sparse system (``scipy.sparse`` +
``spsolve``, about 9 non-zeros per unknown), then Gaussian noise of std ``noise_level`` (0.01) is
added to the imputed values. The imputation hides the shape of the removed region, so the
model cannot read the explanation from the mask itself.

Curves: the target class probability after removing the fraction ``p`` of pixels, for every
``p`` in ``fractions`` (default 0.1, ..., 0.9 as in the paper), in two orders: MoRF (most
relevant first: a steep fall is good) and LeRF (least relevant first: staying high is good).
``round(p * H * W)`` pixels are removed; ranking as in Deletion (all channels of a pixel
together, ties in row-major order). Note the reference code's LeRF at ``p`` keeps the top ``p``
(removes ``1 - p``); here both orders remove the fraction ``p``, as in the paper's plots.

Scores (normalized trapezoid area over ``fractions``):
``order="morf"``: area of MoRF (lower is better); ``"lerf"``: area of LeRF (higher is better);
``"both"`` (default): LeRF area minus MoRF area (higher is better), and ``curves`` is the
LeRF - MoRF difference. ``details`` always holds every computed curve, area and accuracy.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve

from .._batching import iter_slices, masked_scores
from .._layer_masking import check_layer_masking
from .._validation import check_choice, check_non_negative
from .._scoring import check_fractions, descending_ranks, trapezoid_auc
from ..selectors import top_class_hits
from .base import MetricResult, ModelMetric

NEIGHBOUR_WEIGHTS = (((0, 1), 1 / 6), ((0, -1), 1 / 6), ((1, 0), 1 / 6), ((-1, 0), 1 / 6),
                     ((1, 1), 1 / 12), ((1, -1), 1 / 12), ((-1, 1), 1 / 12), ((-1, -1), 1 / 12))
ORDERS = ("both", "morf", "lerf")


def noisy_linear_impute(images: torch.Tensor, keep: torch.Tensor, noise_level: float = 0.01,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill the pixels of ``images`` ``(B, C, H, W)`` where ``keep`` ``(B, H, W)`` is False by
    noisy linear imputation (see the module docstring). Returns a new float32 tensor."""
    batch, channels, height, width = images.shape
    kept = keep.reshape(-1).numpy()
    values = images.permute(0, 2, 3, 1).reshape(-1, channels).double().numpy()
    unknown = np.flatnonzero(~kept)
    out = values.copy()
    if len(unknown):
        out[unknown] = solve_linear_imputation(values, kept, unknown, height, width)
        out[unknown] += noise_level * torch.randn(len(unknown), channels, generator=generator,
                                            dtype=torch.float64).numpy()
    return torch.from_numpy(out).float().view(batch, height, width, channels).permute(0, 3, 1, 2)


def solve_linear_imputation(values: np.ndarray, kept: np.ndarray, unknown: np.ndarray,
                            height: int, width: int) -> np.ndarray:
    """Solve ``sum_q w_q x_p - sum_{q unknown} w_q x_q = sum_{q known} w_q v_q`` for every
    unknown pixel ``p`` (``q`` over its neighbours inside the image). ``values`` is
    ``(B * H * W, C)`` in row-major pixel order, ``kept`` a flat bool mask. Returns ``(n, C)``."""
    n = len(unknown)
    variable = np.full(len(kept), -1)
    variable[unknown] = np.arange(n)
    rows, cols = (unknown // width) % height, unknown % width
    diagonal, rhs = np.zeros(n), np.zeros((n, values.shape[1]))
    entries_i, entries_j, entries_v = [], [], []
    for (dr, dc), weight in NEIGHBOUR_WEIGHTS:
        inside = np.flatnonzero((rows + dr >= 0) & (rows + dr < height)
                                & (cols + dc >= 0) & (cols + dc < width))
        neighbour = unknown[inside] + dr * width + dc
        diagonal[inside] += weight
        known = kept[neighbour]
        rhs[inside[known]] += weight * values[neighbour[known]]
        entries_i.append(inside[~known])
        entries_j.append(variable[neighbour[~known]])
        entries_v.append(np.full(int((~known).sum()), -weight))
    entries_i.append(np.arange(n))
    entries_j.append(np.arange(n))
    entries_v.append(diagonal)
    matrix = coo_matrix((np.concatenate(entries_v),
                         (np.concatenate(entries_i), np.concatenate(entries_j))),
                        shape=(n, n)).tocsc()
    return np.asarray(spsolve(matrix, rhs)).reshape(n, values.shape[1])


class Road(ModelMetric):
    """ROAD (Rong et al., 2022): MoRF/LeRF curves with noisy linear imputation; see the module
    docstring.

    Parameters:
        fractions: increasing fractions of pixels removed (default 0.1, ..., 0.9).
        order: ``"both"`` (score LeRF - MoRF area), ``"morf"`` or ``"lerf"``.
        noise_level: std of the Gaussian noise added to imputed pixels (0.01).
        probabilities: curves of the target's softmax probability (True) or raw output.
        seed: seed of that noise (drawn batch after batch: the same seed and batch_size give
            the same result; with ``noise_level=0`` the result does not depend on batch_size).
        masking: ``"fill"`` (noisy linear imputation, the paper's) or ``"layer"``: the removed
            pixels are masked at every layer of a CNN instead (Balasubramanian & Feizi, 2023,
            :mod:`pellucid._layer_masking`; torch Modules; no imputation, no noise): another
            way to keep the model from reading the removed region's shape.
    """

    name = "road"
    input_kinds = ("images",)

    def __init__(self, model: Any, *,
                 fractions: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
                 order: str = "both", noise_level: float = 0.01, probabilities: bool = True,
                 masking: str = "fill", **common: Any):
        super().__init__(model, **common)
        check_layer_masking(masking, self._model)
        self.masking = masking
        self.probabilities = bool(probabilities)
        self.fractions = check_fractions("fractions", fractions)
        self.order = check_choice("order", order, ORDERS)
        self.noise_level = check_non_negative("noise_level", noise_level)

    def _check_inputs(self, x):
        check_layer_masking(self.masking, self._model, x)

    @property
    def higher_is_better(self) -> bool:
        return self.order != "morf"

    def _score(self, x, heatmaps, scorer):
        n, (height, width) = len(x), x.shape[2:]
        orders = ("morf", "lerf") if self.order == "both" else (self.order,)
        fractions = np.asarray(self.fractions)
        counts = torch.as_tensor(np.rint(fractions * height * width), dtype=torch.long)
        ranks = descending_ranks(heatmaps)
        per_sample = len(orders) * len(counts)
        lerf = torch.tensor([order == "lerf" for order in orders])
        generator = self._generator()

        def make_inputs(s: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
            index = torch.arange(s.start, s.stop)
            sample, combination = index // per_sample, index % per_sample
            count, from_bottom = counts[combination % len(counts)], lerf[combination // len(counts)]
            position = torch.where(from_bottom[:, None], height * width - 1 - ranks[sample],
                                   ranks[sample])
            keep = (position >= count[:, None]).view(-1, height, width)
            if self.masking == "layer":
                return x[sample], sample, keep
            return noisy_linear_impute(x[sample], keep, self.noise_level, generator), sample, None

        scores, hits = [], []
        for s in iter_slices(n * per_sample, self.batch_size, self.progress, self.name):
            batch, rows, keep = make_inputs(s)
            outputs = masked_scores(scorer.forward, batch, rows, keep)
            scores.append(scorer.select(outputs, rows).float().cpu())
            hits.append(top_class_hits(scorer.selector, outputs, rows))
        outputs = torch.cat(scores).view(n, len(orders), -1).double().numpy()
        details: dict[str, Any] = {}
        for i, order in enumerate(orders):
            details[f"{order}_curves"] = outputs[:, i]
            details[f"{order}_auc"] = trapezoid_auc(outputs[:, i], fractions)
            if hits[0] is not None:  # accuracy is defined for class targets
                correct = torch.cat(hits).view(n, len(orders), -1).double().numpy()
                details[f"{order}_accuracy"] = correct[:, i].mean(0)
        curves = (details["lerf_curves"] - details["morf_curves"] if self.order == "both"
                  else details[f"{self.order}_curves"])
        return MetricResult(self.name, trapezoid_auc(curves, fractions), curves=curves,
                            fractions=fractions, higher_is_better=self.higher_is_better,
                            details=details)
