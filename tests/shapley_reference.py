"""Exact Shapley values of feature groups, enumerated from the definition (the reference of
the KernelShap and ShapleyValueSampling tests)."""
import itertools
import math

import torch


def exact_shapley(model, x, baseline, mask):
    """Shapley values ``(M, K)`` of the groups of ``mask`` for one input and every output, from
    the definition: phi_g = sum_{S not containing g} |S|! (M - |S| - 1)! / M! (v(S + g) - v(S))."""
    m = int(mask.max()) + 1
    keeps = list(itertools.product([0, 1], repeat=m))
    kept = torch.tensor(keeps, dtype=torch.bool)[:, mask]
    if x.ndim == 3:
        kept = kept[:, None]
    with torch.no_grad():
        outputs = model(torch.where(kept, x, baseline)).double()
    value = dict(zip(keeps, outputs))
    phi = torch.zeros(m, outputs.shape[1], dtype=torch.float64)
    for keep in keeps:
        for g in range(m):
            if not keep[g]:
                size = sum(keep)
                weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
                with_g = keep[:g] + (1,) + keep[g + 1:]
                phi[g] += weight * (value[with_g] - value[keep])
    return phi
