"""Shapley value sampling (Castro, Gómez & Tejada, 2009) with antithetic permutations
(Mitchell, Cooper, Frank & Holmes, 2022, "Sampling permutations for Shapley value
estimation")."""
from __future__ import annotations

import math
from typing import Any

import torch

from ..._validation import check_positive_int
from .base import GroupExplainer


class ShapleyValueSampling(GroupExplainer):
    """Shapley values of the groups estimated over random orderings (parameters:
    :class:`~pellucid.explain.groups.base.GroupExplainer`)::

        phi_g = mean over permutations pi of  f(x_{pre_pi(g) + g}) - f(x_{pre_pi(g)})

    where ``x_S`` shows the groups of ``S`` and the baseline elsewhere and ``pre_pi(g)`` are
    the groups before ``g`` in ``pi``. Permutations come in antithetic pairs: each random one
    and its reverse (``nb_samples`` is rounded up to an even number). Every permutation's
    contributions sum to ``f(x) - f(baseline)``, so the values do too (to float rounding);
    ``explain_groups`` reports each value's standard error, from the spread of the pair means
    (NaN with a single pair).

    Cost: ``nb_samples * (M - 1) + 2`` forward passes per input (``M`` groups: the empty and
    full coalitions are scored once), ``batch_size`` at a time.
    """

    def __init__(self, model: Any, *, nb_samples: int = 20, **kwargs: Any):
        super().__init__(model, **kwargs)
        self.nb_samples = check_positive_int("nb_samples", nb_samples)

    def _design(self, m: int, generator: torch.Generator) -> tuple[torch.Tensor, Any]:
        pairs = math.ceil(self.nb_samples / 2)
        orders = torch.rand(pairs, m, generator=generator).argsort(1)
        orders = torch.stack([orders, orders.flip(1)], 1).flatten(0, 1)   # (P, m), P = 2 pairs
        positions = orders.argsort(1)                                     # rank of each group
        # coalition k of permutation p: the first k groups of p, k = 1 .. m - 1
        sizes = torch.arange(1, m)
        inner = positions[:, None, :] < sizes[None, :, None]              # (P, m - 1, m)
        empty, full = torch.zeros(1, m, dtype=torch.bool), torch.ones(1, m, dtype=torch.bool)
        return torch.cat([empty, full, inner.flatten(0, 1)]), orders

    def _solve(self, z: torch.Tensor, orders: torch.Tensor, scores: torch.Tensor
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        count, m = orders.shape
        chain = torch.cat([scores[:1].expand(count, 1, -1),
                           scores[2:].view(count, m - 1, -1),
                           scores[1:2].expand(count, 1, -1)], 1)          # (P, m + 1, T)
        steps = chain[:, 1:] - chain[:, :-1]                              # gain of the k-th group
        contributions = torch.zeros_like(steps).scatter_(
            1, orders[:, :, None].expand_as(steps), steps)                # (P, m, T) by group
        pair_means = contributions.view(-1, 2, m, steps.shape[2]).mean(1)
        values = pair_means.mean(0)
        error = pair_means.std(0) / math.sqrt(len(pair_means)) if len(pair_means) > 1 else \
            torch.full_like(values, float("nan"))
        return values, {"prediction": scores[1], "base_value": scores[0],
                        "standard_error": error}
