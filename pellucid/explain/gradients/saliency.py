"""Saliency and Gradient * Input: the gradient at the input itself."""
from __future__ import annotations

from .base import AggregatedGradients


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
