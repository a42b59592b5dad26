"""KernelSHAP (Lundberg & Lee, 2017): Shapley values of groups as a weighted linear regression
over coalitions, with the sampling scheme of shap's KernelExplainer."""
from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import torch

from ..._batching import iter_slices
from ..._validation import check_positive_int
from .base import GroupExplainer
from .lime import CHUNK


class KernelShap(GroupExplainer):
    """KernelSHAP (Lundberg & Lee, 2017, Theorem 2) over groups (parameters:
    :class:`~pellucid.explain.groups.base.GroupExplainer`).

    The values ``phi`` minimise ``sum_z pi(z) (f(h(z)) - f(h(0)) - z . phi)^2`` subject to
    ``sum phi = f(x) - f(baseline)`` (efficiency holds exactly), with the Shapley kernel
    ``pi(z) = (M - 1) / (C(M, |z|) |z| (M - |z|))`` and ``h(z)`` the input with the groups of
    ``z`` kept and the others set to the baseline. The constraint is eliminated (the last
    group's value is ``f(x) - f(baseline)`` minus the others), as in shap, and the rest solved
    by its normal equations (``torch.linalg.lstsq``, minimum norm where the samples do not
    determine every value).

    Coalitions (shap's KernelExplainer scheme): sizes ``s`` and ``M - s`` are taken together,
    from the smallest, and every coalition of a size is enumerated while the budget covers its
    share of the kernel's mass; the remaining sizes are sampled (size ``s`` with probability
    proportional to its mass, then a uniform subset) in antithetic pairs (a coalition and its
    complement), duplicates merged into one evaluation with a larger weight. When
    ``2^M - 2 <= nb_samples`` every coalition is enumerated and the values are the exact
    Shapley values.

    Cost: at most ``nb_samples + 2`` forward passes per input (``f(x)``, ``f(baseline)`` and
    the coalitions), ``batch_size`` at a time.
    """

    def __init__(self, model: Any, *, nb_samples: int = 2048, **kwargs: Any):
        super().__init__(model, **kwargs)
        self.nb_samples = check_positive_int("nb_samples", nb_samples)

    def _design(self, m: int, generator: torch.Generator) -> tuple[torch.Tensor, Any]:
        ends = torch.stack([torch.zeros(m, dtype=torch.bool), torch.ones(m, dtype=torch.bool)])
        if m == 1:
            return ends, torch.zeros(0, dtype=torch.float64)
        coalitions, weights = shapley_kernel_design(m, self.nb_samples, generator)
        return torch.cat([ends, coalitions]), weights

    def _solve(self, z: torch.Tensor, weights: torch.Tensor, scores: torch.Tensor
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        base, prediction = scores[0], scores[1]
        delta = prediction - base
        m = z.shape[1]
        if m == 1:
            return delta[None], {"prediction": prediction, "base_value": base}
        # y - f0 - z_last * delta = sum_{j < m} (z_j - z_last) phi_j, weighted least squares
        # by its normal equations, accumulated over chunks of coalitions: memory O(m^2), not
        # the O(nb_samples * m) float64 design that numpy.linalg.lstsq copies (measured for
        # 20 000 coalitions of 95 superpixels: the solve peaks at 21 MiB)
        gram = torch.zeros(m - 1, m - 1, dtype=torch.float64)
        moment = torch.zeros(m - 1, scores.shape[1], dtype=torch.float64)
        for s in iter_slices(len(z) - 2, CHUNK):
            chunk = z[2:][s].double()
            design = chunk[:, :-1] - chunk[:, -1:]
            target = scores[2:][s] - base - chunk[:, -1:] * delta
            weighted = design * weights[s, None]
            gram += weighted.T @ design
            moment += weighted.T @ target
        head = torch.linalg.lstsq(gram, moment, driver="gelsd").solution  # rank-deficient too
        values = torch.cat([head, delta[None] - head.sum(0, keepdim=True)])
        return values, {"prediction": prediction, "base_value": base}


def shapley_kernel_design(m: int, nb_samples: int, generator: torch.Generator
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Coalitions ``(S, m)`` (``S <= nb_samples``, none empty or full) and their regression
    weights ``(S,)`` float64 (sum 1), following shap's ``KernelExplainer``: sizes enumerated in
    full while the budget covers them, the rest sampled by size in complementary pairs."""
    sizes = np.arange(1, m)
    mass = (m - 1) / (sizes * (m - sizes))                   # kernel mass of each size
    mass = mass / mass.sum()
    rows, weights = [], []
    budget, left = nb_samples, 1.0
    size_pairs = [(s, m - s) if s != m - s else (s,) for s in range(1, m // 2 + 1)]
    full = 0
    for pair in size_pairs:
        count = sum(math.comb(m, s) for s in pair)
        share = sum(mass[s - 1] for s in pair)
        if budget * share / left < count - 1e-8:
            break
        for s in pair:
            subsets = np.array(list(itertools.combinations(range(m), s)))
            block = np.zeros((len(subsets), m), dtype=bool)
            np.put_along_axis(block, subsets, True, axis=1)
            rows.append(torch.from_numpy(block))
            weights.append(torch.full((len(block),), mass[s - 1] / math.comb(m, s),
                                      dtype=torch.float64))
        budget, left, full = budget - count, left - share, full + 1
    if full < len(size_pairs) and budget >= 1:
        sampled, counts = _sampled_pairs(m, size_pairs[full:], mass, budget, generator)
        rows.append(sampled)
        weights.append(counts * (left / counts.sum()))
    return torch.cat(rows), torch.cat(weights)


def _sampled_pairs(m: int, size_pairs: list[tuple[int, ...]], mass: np.ndarray, budget: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``budget // 2`` coalitions drawn by size (probability: the pair's kernel mass) and
    uniformly within it, each with its complement; distinct rows and how often each came."""
    pair_mass = torch.tensor([sum(mass[s - 1] for s in pair) for pair in size_pairs])
    draws = max(1, budget // 2)
    picks = torch.multinomial(pair_mass, draws, replacement=True, generator=generator)
    smallest = torch.tensor([pair[0] for pair in size_pairs])[picks]
    both = torch.empty(2 * draws, m, dtype=torch.bool)
    for s in iter_slices(draws, CHUNK):  # a chunk at a time: the float keys and their sort
        # are 16 bytes per draw and group (the same numbers as one torch.rand(draws, m))
        keys = torch.rand(s.stop - s.start, m, generator=generator)  # the `size` smallest kept
        chosen = keys <= keys.sort(1).values.gather(1, smallest[s, None] - 1)
        both[s], both[draws + s.start:draws + s.stop] = chosen, ~chosen
    unique, counts = torch.unique(both, dim=0, return_counts=True)
    return unique, counts.double()
