"""Integrated Gradients and the quadrature rules of its path integral."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..._baselines import check_baseline, make_baseline
from ..._validation import check_choice, check_positive_int
from .base import AggregatedGradients


INTEGRATION_METHODS = ("riemann_trapezoid", "riemann_left", "riemann_middle", "riemann_right",
                       "gausslegendre")


def integration_rule(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Points ``alpha`` in ``[0, 1]`` and weights (summing to 1) of a quadrature rule.

    Riemann sums use ``steps`` equal cells (left / middle / right point of each); the trapezoid
    rule uses ``steps`` equally spaced points including both ends, with weights
    ``1/(steps-1)`` halved at the ends; Gauss-Legendre maps
    ``numpy.polynomial.legendre.leggauss`` from ``[-1, 1]`` to ``[0, 1]``.
    """
    n = steps
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return (nodes + 1) / 2, weights / 2
    if method == "riemann_trapezoid":
        if n < 2:
            raise ValueError("riemann_trapezoid needs steps >= 2 (both ends of the path)")
        weights = np.full(n, 1.0 / (n - 1))
        weights[[0, -1]] /= 2
        return np.linspace(0.0, 1.0, n), weights
    offset = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[method]
    return (np.arange(n) + offset) / n, np.full(n, 1.0 / n)


class IntegratedGradients(AggregatedGradients):
    """Integrated Gradients (Sundararajan, Taly & Yan, 2017).

    ``IG_i(x) = (x_i - b_i) * integral_0^1 d f_c(b + a (x - b)) / d x_i da``, the integral by a
    quadrature of ``steps`` points (``method``, see :func:`integration_rule`). Completeness:
    the attributions sum to ``f_c(x) - f_c(b)`` up to the quadrature error. Images: summed over
    channels (keeps completeness).

    Args:
        steps: points on the path from the baseline to the input (``N * steps`` gradients).
        method: ``"riemann_trapezoid"`` (default), ``"riemann_left"``, ``"riemann_middle"``,
            ``"riemann_right"`` or ``"gausslegendre"``. Unlike Captum's trapezoid rule, whose
            weights sum to ``(steps - 1) / steps``, ours sum to 1.
        baseline: the reference ``b``: a number, a tensor, ``"blur"`` or ``"mean"``.
    """

    channel_reduction = "sum"

    def __init__(self, model: Any, *, steps: int = 64, method: str = "riemann_trapezoid",
                 baseline: Any = 0.0, **common: Any):
        super().__init__(model, **common)
        self.steps = check_positive_int("steps", steps)
        self.method = check_choice("method", method, INTEGRATION_METHODS)
        self.baseline = check_baseline(baseline)
        integration_rule(self.method, self.steps)  # raises now for an impossible combination

    def _check_inputs(self, x):
        make_baseline(self.baseline, x)  # wrong shape or kind raises before any pass

    def _nb_copies(self):
        return self.steps

    def _copy_weights(self):
        return torch.from_numpy(integration_rule(self.method, self.steps)[1])

    def _prepare(self, x):
        alphas = torch.from_numpy(integration_rule(self.method, self.steps)[0]).float()
        baseline = make_baseline(self.baseline, x).to(x.device)
        return baseline, x - baseline, alphas.to(x.device)

    def _copies(self, x, sample, copy, context):
        baseline, difference, alphas = context
        sample, copy = sample.to(x.device), copy.to(x.device)
        alpha = alphas[copy].view(-1, *[1] * (x.ndim - 1))
        return torch.addcmul(baseline.index_select(0, sample),
                             difference.index_select(0, sample), alpha)

    def _combine(self, x, means, context):
        _, difference, _ = context
        return difference.cpu().double() * means[1]
