"""Infidelity (Yeh, Hsieh, Suggala, Inouye & Ravikumar, 2019, "On the (In)fidelity and
Sensitivity of Explanations"): how far the attribution's prediction of an output change is from
the change itself, over random perturbations ``I``::

    INFD(h, x) = E_I[ (beta * I^T h - (f(x) - f(x - I)))^2 ]

with ``beta = E[I^T h (f(x) - f(x - I))] / E[(I^T h)^2]``, the scale that minimises it
(``normalize=True``, as captum's ``infidelity(normalize=True)``: a heatmap is then judged up to
its scale), or ``beta = 1``. Expectations are means over ``nb_samples`` draws per input.

Heatmaps hold one value per pixel, so a perturbation is one value per pixel, applied to every
channel of it (tabular: one per feature):

- ``"gaussian"``: ``I ~ N(0, noise_level^2)`` per pixel; ``x - I`` is scored. The exact
  attribution of a linear model is then its gradient summed over channels (infidelity 0).
- ``"square"`` (images): a ``patch_size`` square at a uniform position is set to ``baseline``,
  and ``I^T h`` is the heatmap's sum over that square (``I`` = the square's indicator, the
  model change is ``f(x) - f(x with the square removed)``). The exact attribution of a linear
  model is then ``(x - baseline) * gradient`` summed over channels (Gradient * Input).
"""
from __future__ import annotations

from typing import Any

import torch

from .._baselines import check_baseline, make_baseline
from .._batching import score_generated
from .._scoring import runs_by_sample
from .._validation import (check_choice, check_fits_images, check_non_negative,
                           check_positive_int)
from .base import MetricResult, ModelMetric

PERTURBATIONS = ("gaussian", "square")


class Infidelity(ModelMetric):
    """Infidelity (Yeh et al., 2019); see the module docstring. Lower is better.

    Parameters:
        perturbation: ``"gaussian"`` (default) or ``"square"`` (images only).
        noise_level: standard deviation of the Gaussian perturbation, in input units (0.1).
        patch_size: side of the removed square in pixels; ``None`` = a quarter of the smaller
            side (at least 1).
        baseline: what a removed square becomes (a number, a tensor, ``"mean"``, ``"blur"``).
        nb_samples: perturbations per input (64).
        normalize: use the optimal scale ``beta`` (True, default) or ``beta = 1``.
        probabilities: score the softmax probability of the target (default False: the raw
            output, as captum).

    ``details``: ``beta`` ``(N,)``, ``attribution_dots`` ``I^T h`` and ``output_drops``
    ``f(x) - f(x - I)``, both ``(N, nb_samples)``.
    """

    name = "infidelity"
    higher_is_better = False

    def __init__(self, model: Any, *, perturbation: str = "gaussian", noise_level: float = 0.1,
                 patch_size: int | None = None, baseline: Any = 0.0, nb_samples: int = 64,
                 normalize: bool = True, probabilities: bool = False, **common: Any):
        super().__init__(model, **common)
        self.perturbation = check_choice("perturbation", perturbation, PERTURBATIONS)
        self.noise_level = check_non_negative("noise_level", noise_level)
        self.patch_size = None if patch_size is None else check_positive_int("patch_size",
                                                                             patch_size)
        self.baseline = check_baseline(baseline)
        self.nb_samples = check_positive_int("nb_samples", nb_samples)
        self.normalize = bool(normalize)
        self.probabilities = bool(probabilities)

    def _check_inputs(self, x):
        if self.perturbation == "square":
            if x.ndim != 4:
                raise ValueError("Infidelity(perturbation='square') needs images (N, C, H, W); "
                                 f"got shape {tuple(x.shape)}: use 'gaussian' for tabular data")
            check_fits_images("patch_size", self._patch(x.shape), x)

    def _patch(self, shape: torch.Size) -> int:
        return self.patch_size or max(1, min(shape[2], shape[3]) // 4)

    def _score(self, x, heatmaps, scorer):
        n, nb = len(x), self.nb_samples
        flat = heatmaps.reshape(n, -1).double()
        generator = self._generator()
        if self.perturbation == "gaussian":  # one seed per draw: batch_size changes nothing
            draws = torch.randint(0, 2**62, (n, nb), generator=generator)
        else:
            side = self._patch(x.shape)
            draws = torch.stack([torch.randint(0, x.shape[d] - side + 1, (n, nb),
                                               generator=generator) for d in (2, 3)], -1)
        dots = torch.empty(n, nb, dtype=torch.float64)
        device = self._model.device  # perturbed inputs are built where the model runs
        inputs = x.to(device)
        substrate = make_baseline(self.baseline, x).to(device) if x.ndim == 4 else None
        pixel_shape = (-1, 1, *x.shape[2:]) if x.ndim == 4 else (-1, x.shape[1])
        buffer = torch.empty((min(self.batch_size, n * nb), *x.shape[1:]), device=device)

        def make_inputs(s: slice) -> tuple[torch.Tensor, torch.Tensor]:
            out = buffer[:s.stop - s.start]
            for sample, rows, picked in runs_by_sample(s, nb):
                perturbation = self._perturbations(draws[sample, picked], x.shape)
                dots[sample, picked] = perturbation @ flat[sample]
                view = perturbation.to(device, x.dtype).view(pixel_shape)
                if self.perturbation == "gaussian":
                    torch.sub(inputs[sample], view, out=out[rows])
                else:
                    torch.where(view > 0, substrate[sample], inputs[sample], out=out[rows])
            return out, torch.arange(s.start, s.stop) // nb

        original = self._input_scores(x, scorer).double()
        perturbed = score_generated(scorer, n * nb, make_inputs, batch_size=self.batch_size,
                                    progress=self.progress, desc=self.name).view(n, nb).double()
        drops = original[:, None] - perturbed
        beta = torch.ones(n, dtype=torch.float64)
        if self.normalize:  # captum's safe_div: beta = 0 where every I^T h is 0
            denominator = dots.square().sum(1)
            beta = torch.where(denominator > 0, (dots * drops).sum(1) / denominator.clamp(
                min=1e-300), torch.zeros_like(denominator))
        scores = (beta[:, None] * dots - drops).square().mean(1)
        return MetricResult(self.name, scores.numpy(), higher_is_better=False,
                            details={"beta": beta.numpy(), "attribution_dots": dots.numpy(),
                                     "output_drops": drops.numpy()})

    def _perturbations(self, draws: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """``(k, P)`` float64 per-pixel perturbations of ``k`` draws: Gaussian noise from each
        draw's seed, or the indicator of each draw's square."""
        if self.perturbation == "gaussian":
            size = shape[2] * shape[3] if len(shape) == 4 else shape[1]
            return torch.stack([torch.randn(size, dtype=torch.float64, generator=torch.Generator(
            ).manual_seed(int(seed))) for seed in draws]) * self.noise_level
        height, width, side = shape[2], shape[3], self._patch(shape)
        rows, cols = torch.arange(height), torch.arange(width)
        top, left = draws[:, 0, None], draws[:, 1, None]
        in_rows = (rows >= top) & (rows < top + side)
        in_cols = (cols >= left) & (cols < left + side)
        return (in_rows[:, :, None] & in_cols[:, None, :]).reshape(len(draws), -1).double()
