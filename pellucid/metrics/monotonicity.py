"""Monotonicity correlation (Nguyen & Martinez, 2020, "On quantitative aspects of model
interpretability"): a faithful attribution orders features as their effect on the output does.

For every feature ``i`` (tabular), or every cell of a ``grid_size x grid_size`` grid (images:
pixel row ``h`` is in cell row ``floor(h * grid_size / H)``, likewise columns; all channels of a
cell together), the feature is replaced ``nb_samples`` times by a value drawn uniformly in
``value_range`` (one value for the whole cell) and its effect is the mean squared change of the
target's output, ``E[(f(x) - f(x with x_i = u))^2]``. The score is Spearman's rank correlation
between the attribution of each feature (``sum |h|`` over a cell) and its effect; NaN where
either is constant. Higher is better.
"""
from __future__ import annotations

from typing import Any

import torch

from .._batching import score_generated
from .._scoring import runs_by_sample, spearman_rows
from ..features import grid
from .._validation import check_fits_images, check_positive_int
from .base import MetricResult, ModelMetric


def grid_cells(x: torch.Tensor, grid_size: int) -> tuple[torch.Tensor, int]:
    """``(P,)`` cell index of every pixel (tabular: every feature is its own cell) and the
    number of cells."""
    if x.ndim != 4:
        return torch.arange(x.shape[1]), x.shape[1]
    return grid(x.shape[2:], grid_size).reshape(-1), grid_size * grid_size  # fits: checked


class Monotonicity(ModelMetric):
    """Monotonicity correlation (Nguyen & Martinez, 2020); see the module docstring.

    Parameters:
        grid_size: cells per side for images (default 4; tabular: every feature).
        nb_samples: replacement values per feature (default 8).
        value_range: ``(low, high)`` of the replacement values; ``None`` = each input's own
            minimum and maximum. ``low == high`` replaces by that constant.
        probabilities: effect on the softmax probability of the target (default False: the raw
            output).

    ``details``: ``effects`` and ``attributions``, both ``(N, features)``.
    """

    name = "monotonicity"
    higher_is_better = True

    def __init__(self, model: Any, *, grid_size: int = 4, nb_samples: int = 8,
                 value_range: tuple[float, float] | None = None, probabilities: bool = False,
                 **common: Any):
        super().__init__(model, **common)
        self.grid_size = check_positive_int("grid_size", grid_size)
        self.nb_samples = check_positive_int("nb_samples", nb_samples)
        if value_range is not None:
            value_range = tuple(float(v) for v in value_range)
            if len(value_range) != 2 or not value_range[0] <= value_range[1]:
                raise ValueError(f"value_range must be (low, high) with low <= high, got "
                                 f"{value_range!r}")
        self.value_range = value_range
        self.probabilities = bool(probabilities)

    def _check_inputs(self, x):
        check_fits_images("grid_size", self.grid_size, x)

    def _score(self, x, heatmaps, scorer):
        n, nb = len(x), self.nb_samples
        cell_of_pixel, n_cells = grid_cells(x, self.grid_size)
        attributions = torch.zeros(n, n_cells, dtype=torch.float64).index_add_(
            1, cell_of_pixel, heatmaps.reshape(n, -1).double().abs())
        if self.value_range is None:
            flat = x.reshape(n, -1).double()
            low, high = flat.min(1).values, flat.max(1).values
        else:
            low, high = (torch.full((n,), v, dtype=torch.float64) for v in self.value_range)
        uniform = torch.rand(n, n_cells, nb, generator=self._generator(), dtype=torch.float64)
        values = low[:, None, None] + (high - low)[:, None, None] * uniform
        per_sample = n_cells * nb
        device = self._model.device  # perturbed inputs are built where the model runs
        inputs = x.to(device)
        pixel_shape = (1, *x.shape[2:]) if x.ndim == 4 else (x.shape[1],)
        cell_masks = (torch.arange(n_cells)[:, None] == cell_of_pixel[None]).to(device).view(
            n_cells, *pixel_shape)  # one mask per cell, made once
        buffer = torch.empty((min(self.batch_size, n * per_sample), *x.shape[1:]),
                             device=device)

        def make_inputs(s: slice) -> tuple[torch.Tensor, torch.Tensor]:
            out = buffer[:s.stop - s.start]
            for sample, rows, items in runs_by_sample(s, per_sample):
                for row, item in zip(range(rows.start, rows.stop),
                                     range(items.start, items.stop)):
                    cell, draw = divmod(item, nb)
                    torch.where(cell_masks[cell], values[sample, cell, draw].to(device, x.dtype),
                                inputs[sample], out=out[row])
            return out, torch.arange(s.start, s.stop) // per_sample

        original = self._input_scores(x, scorer).double()
        perturbed = score_generated(scorer, n * per_sample, make_inputs,
                                    batch_size=self.batch_size, progress=self.progress,
                                    desc=self.name).view(n, n_cells, nb).double()
        effects = (original[:, None, None] - perturbed).square().mean(2)
        return MetricResult(self.name, spearman_rows(attributions, effects).numpy(),
                            higher_is_better=True,
                            details={"effects": effects.numpy(),
                                     "attributions": attributions.numpy()})
