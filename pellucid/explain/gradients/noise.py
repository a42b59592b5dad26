"""Gradients at noisy copies of the input: SmoothGrad, SquareGrad, VarGrad."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..._validation import check_non_negative, check_positive_int
from .base import AggregatedGradients


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
