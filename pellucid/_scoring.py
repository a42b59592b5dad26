"""Array helpers shared by the metrics and the evaluation procedures: ranks, chunking by
sample, areas under curves, row-wise correlation."""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from scipy.stats import rankdata


def descending_ranks(heatmaps: torch.Tensor) -> torch.Tensor:
    """``(N, P)`` position of every pixel/feature when sorted by decreasing heatmap value (0 =
    most relevant); ties keep the row-major order."""
    flat = heatmaps.reshape(len(heatmaps), -1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    positions = torch.arange(flat.shape[1]).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def runs_by_sample(s: slice, per_sample: int) -> Iterator[tuple[int, slice, slice]]:
    """For a chunk ``s`` of items ordered sample by sample (``per_sample`` items each): every
    sample it touches, the positions of that sample's items in the chunk and their indices
    within the sample. A chunk of ``batch_size`` items touches at most
    ``batch_size / per_sample + 2`` samples."""
    for sample in range(s.start // per_sample, (s.stop - 1) // per_sample + 1):
        first = max(s.start, sample * per_sample)
        last = min(s.stop, (sample + 1) * per_sample)
        yield (sample, slice(first - s.start, last - s.start),
               slice(first - sample * per_sample, last - sample * per_sample))


def normalized_auc(curves: np.ndarray) -> np.ndarray:
    """Area under each row of ``curves`` by the trapezoid rule over equally spaced points,
    divided by the x-range (RISE's ``auc``: ``(sum - first/2 - last/2) / (S - 1)``)."""
    curves = np.asarray(curves, dtype=np.float64)
    return trapezoid_auc(curves, np.arange(curves.shape[-1]))


def check_fractions(name: str, fractions: Sequence[float]) -> tuple[float, ...]:
    """Increasing fractions in [0, 1), e.g. (0.1, ..., 0.9)."""
    values = tuple(float(p) for p in np.atleast_1d(np.asarray(fractions, dtype=float)))
    if not values or any(not 0 <= p < 1 for p in values) or any(
            b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"{name} must be increasing fractions in [0, 1), e.g. "
                         f"(0.1, 0.2, ..., 0.9); got {fractions!r}")
    return values


def trapezoid_auc(curves: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Trapezoid area under each row over ``fractions``, divided by their range (one point: the
    value itself)."""
    if len(fractions) == 1:
        return curves[..., 0].astype(np.float64)
    widths = np.diff(np.asarray(fractions, dtype=np.float64))
    area = ((curves[..., 1:] + curves[..., :-1]) / 2 * widths).sum(-1)
    return area / (fractions[-1] - fractions[0])


def pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (float64); NaN where
    a row is constant (the correlation is undefined there)."""
    a = a.double() - a.double().mean(-1, keepdim=True)
    b = b.double() - b.double().mean(-1, keepdim=True)
    denominator = (a.square().sum(-1) * b.square().sum(-1)).sqrt()
    out = (a * b).sum(-1) / denominator
    return torch.where(denominator > 0, out, torch.full_like(out, float("nan")))


def spearman_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each row (average ranks for ties); NaN for a constant row."""
    ranks = [torch.from_numpy(rankdata(t.reshape(len(t), -1).double().numpy(), axis=1))
             for t in (a, b)]
    return pearson_rows(*ranks)


def scaled_magnitude(heatmaps: torch.Tensor) -> torch.Tensor:
    """``|h| / max |h|`` per map (a zero map stays zero), float64."""
    magnitude = heatmaps.abs().double()
    peak = magnitude.flatten(1).amax(1).clamp(min=torch.finfo(torch.float64).tiny)
    return magnitude / peak.view(-1, *[1] * (magnitude.ndim - 1))
