"""Gradient attribution methods: Saliency, GradientInput, IntegratedGradients, SmoothGrad,
VarGrad, SquareGrad.

All are one computation, :class:`AggregatedGradients`: the gradient of the target score at
``K`` copies of each input (the input itself, noisy samples, or points on a path), summed with
one weight per copy, then turned into attributions. The ``N * K`` copies share one index space
and are built one batch at a time, so memory is bounded by ``batch_size`` (plus the running
sums, one input-sized tensor per statistic), never by ``nb_samples`` or ``steps``.

Channel rules for images (tabular ``(N, F)`` attributions are returned as computed):

=====================  ==============================  ========================================
method                 attribution before reduction     channels -> pixel
=====================  ==============================  ========================================
Saliency               ``|g|``                          max (Simonyan et al.)
SmoothGrad             ``|E[g(x + noise)]|``            max, as Saliency (noise 0 = Saliency)
GradientInput          ``x * g``                        sum (keeps ``sum = f(x)`` for linear f)
IntegratedGradients    ``(x - b) * mean path gradient`` sum (keeps completeness)
SquareGrad             ``E[g(x + noise) ** 2]``         mean (non-negative)
VarGrad                ``Var[g(x + noise)]``            mean (non-negative)
=====================  ==============================  ========================================
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._baselines import check_baseline, make_baseline
from .._batching import input_gradient, iter_slices
from .._validation import check_choice, check_non_negative, check_positive_int
from .base import WhiteBoxExplainer, reduce_channels


class AggregatedGradients(WhiteBoxExplainer):
    """Gradients of ``K`` copies of each input, aggregated (base of every gradient method).

    Subclasses set ``channel_reduction`` and ``moments`` (powers of the gradient averaged over
    the copies) and may override ``_nb_copies``, ``_copy_weights``, ``_prepare``, ``_copies``;
    they must implement ``_combine``.
    """

    channel_reduction = "sum"
    moments: tuple[int, ...] = (1,)

    def _explain(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return reduce_channels(self._attributions(x, targets), self.channel_reduction)

    def _attributions(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-element attributions, shape of ``x`` (before channel reduction)."""
        x_model = x.to(self._model.device)
        context = self._prepare(x_model)
        k = self._nb_copies()
        weights = self._copy_weights().double()
        means = {p: torch.zeros(x.shape, dtype=torch.float64) for p in self.moments}
        for s in iter_slices(len(x) * k, self.batch_size, self.progress, type(self).__name__):
            items = torch.arange(s.start, s.stop)
            sample, copy = items // k, items % k
            copies = self._copies(x_model, sample, copy, context)
            grads, _ = input_gradient(self._model, copies, targets[sample])
            weight = weights[copy].view(-1, *[1] * (x.ndim - 1))
            grads = grads.double()
            for p in self.moments:
                means[p].index_add_(0, sample, weight * (grads if p == 1 else grads**p))
        return self._combine(x.cpu(), means, context).float()

    def _nb_copies(self) -> int:
        return 1

    def _copy_weights(self) -> torch.Tensor:
        """Weight of each copy's gradient, ``(K,)``; uniform ``1/K`` (a mean) by default."""
        k = self._nb_copies()
        return torch.full((k,), 1.0 / k, dtype=torch.float64)

    def _prepare(self, x: torch.Tensor) -> Any:
        """What ``_copies`` and ``_combine`` need for this call (baseline, noise scale...)."""
        return None

    def _copies(self, x: torch.Tensor, sample: torch.Tensor, copy: torch.Tensor,
                context: Any) -> torch.Tensor:
        """The copies ``copy`` of inputs ``sample`` (one batch); by default the inputs."""
        return x.index_select(0, sample.to(x.device))

    def _combine(self, x: torch.Tensor, means: dict[int, torch.Tensor], context: Any
                 ) -> torch.Tensor:
        """Attributions from the weighted means of the gradient's powers (``means[p]``)."""
        raise NotImplementedError


class Saliency(AggregatedGradients):
    """Saliency (Simonyan, Vedaldi & Zisserman, 2014): ``|d f_c / d x|``.

    Images: the maximum over channels of the absolute gradient, as in the paper. Tabular: the
    absolute gradient of each feature (same magnitude rule, so one method means one thing).
    For the signed gradient times the input, see :class:`GradientInput`.
    """

    channel_reduction = "abs_max"

    def _combine(self, x, means, context):
        return means[1].abs()


class GradientInput(AggregatedGradients):
    """Gradient * Input (Shrikumar et al., 2016): ``x * d f_c / d x``, signed.

    Images: summed over channels (for a linear model the map sums to ``f(x) - f(0)``).
    """

    channel_reduction = "sum"

    def _combine(self, x, means, context):
        return x * means[1]


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


class NoisyGradients(AggregatedGradients):
    """Gradients at ``nb_samples`` noisy copies ``x + N(0, sigma^2)`` of each input, with
    ``sigma = noise_level * (max(x) - min(x))`` per input (Smilkov et al., 2017, who
    recommend 10-20%). The noise of copy ``k`` comes from a private generator seeded with
    ``(seed, k)`` and is shared by every input (scaled by its own sigma), so an input's map
    depends neither on ``batch_size`` nor on the other inputs explained with it."""

    min_samples = 1

    def __init__(self, model: Any, *, nb_samples: int = 50, noise_level: float = 0.2,
                 **common: Any):
        super().__init__(model, **common)
        self.nb_samples = check_positive_int("nb_samples", nb_samples)
        self.noise_level = check_non_negative("noise_level", noise_level)
        if self.nb_samples < self.min_samples:
            raise ValueError(f"{type(self).__name__} needs nb_samples >= {self.min_samples}, "
                             f"got {nb_samples!r}")

    def _nb_copies(self):
        return self.nb_samples

    def _prepare(self, x):
        dims = tuple(range(1, x.ndim))
        sigma = self.noise_level * (x.amax(dim=dims) - x.amin(dim=dims))
        root = np.random.SeedSequence().entropy if self.seed is None else self.seed % 2**64
        return sigma, root

    def _copies(self, x, sample, copy, context):
        sigma, root = context
        copies, position = torch.unique(copy, return_inverse=True)
        noise = np.stack([np.random.default_rng([root, k]).standard_normal(
            x.shape[1:], dtype=np.float32) for k in copies.tolist()])
        sample, position = sample.to(x.device), position.to(x.device)
        scale = sigma[sample].view(-1, *[1] * (x.ndim - 1))
        noise = torch.from_numpy(noise).to(x.device).index_select(0, position)
        return torch.addcmul(x.index_select(0, sample), scale, noise)


class SmoothGrad(NoisyGradients):
    """SmoothGrad (Smilkov et al., 2017): the gradient averaged over noisy copies, then shown as
    :class:`Saliency` shows a gradient: ``|E[g(x + noise)]|``, max over channels. With
    ``noise_level=0`` it equals Saliency. (Captum's ``NoiseTunnel(Saliency)`` averages ``|g|``
    instead; Xplique takes a signed channel mean.)"""

    channel_reduction = "abs_max"

    def _combine(self, x, means, context):
        return means[1].abs()


class SquareGrad(NoisyGradients):
    """SquareGrad / SmoothGrad-Squared (Hooker et al., 2019): ``E[g(x + noise) ** 2]``;
    images: mean over channels."""

    channel_reduction = "mean"
    moments = (2,)

    def _combine(self, x, means, context):
        return means[2]


class VarGrad(NoisyGradients):
    """VarGrad (Adebayo et al., 2018): the unbiased sample variance of the gradient over noisy
    copies, ``K / (K - 1) * (E[g^2] - E[g]^2)`` (``nb_samples = K >= 2``; Captum's NoiseTunnel
    uses the biased ``E[g^2] - E[g]^2``); images: mean over channels. Sums are kept in float64
    and the tiny negative values rounding can leave are set to 0."""

    channel_reduction = "mean"
    moments = (1, 2)
    min_samples = 2

    def _combine(self, x, means, context):
        k = self.nb_samples
        return (k / (k - 1) * (means[2] - means[1] ** 2)).clamp(min=0)
