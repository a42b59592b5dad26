"""Faithfulness metrics that perturb the input along a heatmap: Deletion, Insertion, MuFidelity.

Deletion and Insertion follow the RISE protocol (Petsiuk et al., 2018; reference code
eclique/RISE ``evaluation.CausalMetric``):

- the class is the target given, else the one the model predicts on the original input; the
  score is its softmax probability (``Model.predict(probabilities=True)``; pass
  ``probabilities=False`` for the raw output, e.g. of a regression model);
- pixels (all channels of a pixel together) or tabular features are ranked by decreasing heatmap
  value; ties keep the row-major order (a stable sort: the lower flat index goes first; RISE's
  ``np.flip(np.argsort(...))`` puts it last, which only matters for exactly equal values);
- ``step`` pixels change per step (default ``ceil(H * W / 100)``, features: 1), so there are
  ``n_steps = ceil(P / step)`` steps and ``n_steps + 1`` points on a curve, the first on the
  unchanged start;
- Deletion starts from the input and replaces pixels by the substrate (default 0); Insertion
  starts from the substrate (default RISE's blur, kernel 11 sigma 5, see
  :func:`pellucid._imaging.gaussian_blur`; tabular: 0) and puts back the original pixels;
- the score is RISE's normalized area ``(sum(curve) - curve[0]/2 - curve[-1]/2) / n_steps``.

Every (input, step) pair is built lazily one batch at a time and sent through
:func:`pellucid._batching.score_generated`: a whole curve for a batch of images is a few
large forward passes, never one pass per sample per step.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from .._baselines import check_baseline, make_baseline
from .._layer_masking import check_layer_masking
from .._batching import score_generated
from .._validation import check_fits_images, check_positive_int, check_probability
from .._scoring import descending_ranks, normalized_auc, pearson_rows, runs_by_sample
from .base import MetricResult, ModelMetric


class _CausalMetric(ModelMetric):
    """Deletion and Insertion; subclasses set ``name``, ``higher_is_better``, whether the
    curve starts from the input (``starts_from_input``) and the substrate used when
    ``baseline`` is None (``_default_baseline``)."""

    starts_from_input = True

    def __init__(self, model: Any, *, step: int | None = None, baseline: Any = None,
                 probabilities: bool = True, masking: str = "fill", **common: Any):
        super().__init__(model, **common)
        check_layer_masking(masking, self._model)
        self.masking = masking
        self.step = None if step is None else check_positive_int("step", step)
        self.baseline = None if baseline is None else check_baseline(baseline)
        self.probabilities = bool(probabilities)

    def _default_baseline(self, x: torch.Tensor) -> Any:
        return 0.0

    def _check_inputs(self, x):
        check_layer_masking(self.masking, self._model, x)

    def _score(self, x, heatmaps, scorer):
        n, n_pixels = len(x), heatmaps[0].numel()
        step = self.step or (math.ceil(n_pixels / 100) if x.ndim == 4 else 1)
        points = math.ceil(n_pixels / step) + 1
        device = self._model.device  # perturbed inputs are built where the model runs
        changed = (torch.arange(points, device=device) * step).clamp(max=n_pixels)
        ranks = descending_ranks(heatmaps).to(device)
        baseline = (0.0 if self.masking == "layer" else  # masked at every layer: never read
                    self._default_baseline(x) if self.baseline is None else self.baseline)
        substrate = make_baseline(baseline, x)
        start, finish = (x, substrate) if self.starts_from_input else (substrate, x)
        start, finish = start.to(device), finish.to(device)
        mask_shape = (-1, 1, *x.shape[2:]) if x.ndim == 4 else (-1, n_pixels)
        buffer = torch.empty((min(self.batch_size, n * points), *x.shape[1:]), device=device)

        def make_inputs(s: slice) -> tuple[torch.Tensor, torch.Tensor]:
            # one reused buffer, no gathered copies: fresh large tensors per batch cost page
            # faults (the model reads its input before the next batch is built)
            out = buffer[:s.stop - s.start]
            for sample, rows, steps in runs_by_sample(s, points):
                replaced = ranks[sample] < changed[steps, None]
                torch.where(replaced.view(mask_shape), finish[sample], start[sample],
                            out=out[rows])
            return out, torch.arange(s.start, s.stop) // points

        def layer_masked(s: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            # the pixels that hold the input are kept; the others are masked at every layer
            keep = torch.empty((s.stop - s.start, n_pixels), device=device)
            for sample, rows, steps in runs_by_sample(s, points):
                replaced = ranks[sample] < changed[steps, None]
                keep[rows] = (replaced != self.starts_from_input).to(keep)
            return *make_inputs(s), keep.view(-1, *x.shape[2:])

        scores = score_generated(scorer, n * points,
                                 layer_masked if self.masking == "layer" else make_inputs,
                                 batch_size=self.batch_size, progress=self.progress,
                                 desc=self.name)
        curves = scores.view(n, points)
        return MetricResult(self.name, normalized_auc(curves.numpy()), curves=curves.numpy(),
                            fractions=(changed.double().cpu() / n_pixels).numpy(),
                            higher_is_better=self.higher_is_better, details={"step": step})


class Deletion(_CausalMetric):
    """Deletion (Petsiuk et al., 2018): remove the most relevant pixels first and measure the
    area under the target probability; lower is better.

    Parameters:
        step: pixels (features) removed per step; default ``ceil(H * W / 100)`` (tabular: 1).
        baseline: what removed pixels become: a number (default 0, RISE's substrate), a tensor,
            ``"mean"`` (per-image channel mean; tabular: batch feature mean) or ``"blur"``.
        probabilities: score the softmax probability of the target (True, RISE) or the raw
            output (False).
        masking: ``"fill"`` (removed pixels become the baseline) or ``"layer"`` (layer masking,
            Balasubramanian & Feizi 2023: they are masked at every layer of a CNN;
            :mod:`pellucid._layer_masking`; images and torch Modules, ``baseline`` unused).
    """

    name = "deletion"
    higher_is_better = False

    def __init__(self, model: Any, *, step: int | None = None, baseline: Any = 0.0,
                 probabilities: bool = True, masking: str = "fill", **common: Any):
        super().__init__(model, step=step, baseline=baseline, probabilities=probabilities,
                         masking=masking, **common)


class Insertion(_CausalMetric):
    """Insertion (Petsiuk et al., 2018): start from a blurred image and put back the most
    relevant pixels first; area under the target probability, higher is better.

    Parameters:
        step: pixels (features) inserted per step; default ``ceil(H * W / 100)`` (tabular: 1).
        baseline: the starting input: ``None`` (default) = RISE's blur for images, 0 for
            tabular; or a number, a tensor, ``"mean"`` or ``"blur"``.
        probabilities: score the softmax probability of the target (True, RISE) or the raw
            output (False).
        masking: ``"fill"`` or ``"layer"``: the pixels not yet inserted are masked at every
            layer of a CNN instead of showing the baseline (as Deletion).
    """

    name = "insertion"
    higher_is_better = True
    starts_from_input = False

    def _default_baseline(self, x: torch.Tensor) -> Any:
        return "blur" if x.ndim == 4 else 0.0


class MuFidelity(ModelMetric):
    """MuFidelity (Bhatt et al., 2020, def. 3): Pearson correlation, over ``nb_samples`` random
    subsets S, between the attribution inside S and the drop of the model's output when S is set
    to the baseline::

        corr_S( sum_{i in S} g(x)_i ,  f_t(x) - f_t(x with x_S = baseline) )

    Images are cut into ``grid_size x grid_size`` cells (pixel row ``h`` falls in cell row
    ``floor(h * grid_size / H)``, likewise columns) and S is ``round(subset_fraction * cells)``
    cells drawn without replacement, independently for every input; tabular inputs use subsets of
    features. ``f_t`` is the raw output of the target (logits) unless ``probabilities=True``.
    A sample whose attribution sums or output drops do not vary scores NaN. Higher is better.
    """

    name = "mu_fidelity"
    higher_is_better = True

    def __init__(self, model: Any, *, grid_size: int = 9, subset_fraction: float = 0.2,
                 nb_samples: int = 128, baseline: Any = 0.0, probabilities: bool = False,
                 **common: Any):
        super().__init__(model, **common)
        self.grid_size = check_positive_int("grid_size", grid_size)
        self.subset_fraction = check_probability("subset_fraction", subset_fraction)
        self.nb_samples = check_positive_int("nb_samples", nb_samples)
        self.baseline = check_baseline(baseline)
        self.probabilities = bool(probabilities)

    def _check_inputs(self, x):
        check_fits_images("grid_size", self.grid_size, x)

    def _cells(self, x: torch.Tensor) -> tuple[torch.Tensor | None, int]:
        """Cell index of every pixel (None for tabular) and the number of cells."""
        if x.ndim != 4:
            return None, x.shape[1]
        g, (height, width) = self.grid_size, x.shape[2:]
        rows = torch.arange(height) * g // height
        cols = torch.arange(width) * g // width
        return (rows[:, None] * g + cols[None, :]).reshape(-1), g * g

    def _score(self, x, heatmaps, scorer):
        n, nb = len(x), self.nb_samples
        cell_of_pixel, n_cells = self._cells(x)
        flat = heatmaps.reshape(n, -1).double()
        cell_attributions = (flat if cell_of_pixel is None else
                             torch.zeros(n, n_cells, dtype=torch.float64)
                             .index_add_(1, cell_of_pixel, flat))
        subset_size = max(1, round(self.subset_fraction * n_cells))
        generator = self._generator()
        subsets = torch.stack([torch.rand(nb, n_cells, generator=generator).argsort(1)
                               [:, :subset_size] for _ in range(n)])  # (n, nb, size)
        attribution_sums = cell_attributions.gather(1, subsets.view(n, -1)).view(
            n, nb, subset_size).sum(-1)
        device = self._model.device  # perturbed inputs are built where the model runs
        substrate, inputs = make_baseline(self.baseline, x).to(device), x.to(device)
        mask_shape = (-1, 1, *x.shape[2:]) if x.ndim == 4 else (-1, n_cells)
        buffer = torch.empty((min(self.batch_size, n * nb), *x.shape[1:]), device=device)

        def make_inputs(s: slice) -> tuple[torch.Tensor, torch.Tensor]:
            out = buffer[:s.stop - s.start]  # reused, as in Deletion
            for sample, rows, draws in runs_by_sample(s, nb):
                cells = torch.zeros(rows.stop - rows.start, n_cells, dtype=torch.bool).scatter_(
                    1, subsets[sample, draws], True)
                pixels = cells if cell_of_pixel is None else cells[:, cell_of_pixel]
                torch.where(pixels.to(device).view(mask_shape), substrate[sample],
                            inputs[sample], out=out[rows])
            return out, torch.arange(s.start, s.stop) // nb

        original = self._input_scores(x, scorer)
        perturbed = score_generated(scorer, n * nb, make_inputs, batch_size=self.batch_size,
                                    progress=self.progress, desc=self.name).view(n, nb)
        drops = original[:, None] - perturbed
        return MetricResult(self.name, pearson_rows(attribution_sums, drops).numpy(),
                            higher_is_better=True,
                            details={"attribution_sums": attribution_sums.numpy(),
                                     "output_drops": drops.double().numpy(),
                                     "subset_size": subset_size})
