"""The batched coalition evaluator every group method shares.

A coalition ``z`` in ``{0, 1}^M`` of input ``x`` (feature mask with labels ``0 .. M - 1``) is
the perturbed input ``x * z[mask] + baseline * (1 - z[mask])``: kept groups show the input,
removed groups the baseline (every channel of a pixel together). The coalitions of a call are
small (``nb_samples x M`` booleans); perturbed inputs exist only for one forward pass at a time
(``batch_size`` of them, written into a reused buffer), their full-resolution masks only for a
block of rows (about 4 MiB), so memory never grows with ``nb_samples``. (A boolean batch of
masks and ``torch.where`` would be smaller still but were 8 times slower than ``index_select``
and ``addcmul`` on float masks: 56 ms against 7 ms a batch of 64 at 224 x 224.)

Nothing made in one pass outlives it except its scores, written into one tensor allocated at
the first pass. Measured on 20 000 coalitions of a 224 x 224 image (95 superpixels, batch 64, a
pooled linear model, glibc's default malloc): with a list of per-pass score tensors and
per-pass index and coalition tensors, RSS crept by about 0.3 MiB a pass (small long-lived
blocks between each pass's large temporaries keep glibc from reusing its heap), to 117-211 MiB
above the call's start; with this loop 67 MiB, and 44 MiB with the masks in blocks and the
designs drawn in chunks (``benchmarks/bench_feature_groups.py``).
"""
from __future__ import annotations

import bisect

import torch

from ..._batching import iter_slices, masked_scores
from ..._scorer import Scorer
from ..perturbation.base import _Buffer


def score_coalitions(scorer: Scorer, x: torch.Tensor, reference: torch.Tensor,
                     masks: torch.Tensor, coalitions: list[torch.Tensor], *, batch_size: int,
                     progress: bool = False, desc: str | None = None,
                     layer_masking: bool = False) -> list[torch.Tensor]:
    """Scores ``(S_i, T)`` of every coalition of every input.

    ``x``, ``reference``: inputs and baselines ``(N, ...)``; ``masks``: ``(N, H, W)`` /
    ``(N, F)`` labels; ``coalitions[i]``: ``(S_i, M_i)`` in ``{0, 1}`` for input ``i``. The
    coalitions of all inputs form one stream cut into passes of ``batch_size``, so a pass may
    hold several inputs (tabular data with few groups). ``scorer(batch, rows)`` gives the
    scores of one pass (``rows``: the input of each item). ``layer_masking``: the removed
    groups are also masked at every layer (:mod:`pellucid._layer_masking`; images only).
    """
    device = scorer.model.device
    x, reference = x.to(device), reference.to(device)
    difference = x - reference
    flat_masks = masks.flatten(1).to(device)
    sizes = [len(z) for z in coalitions]
    starts = torch.tensor([0, *sizes]).cumsum(0).tolist()
    rows = torch.repeat_interleave(torch.arange(len(x)), torch.tensor(sizes))
    # full-size masks a few rows at a time (about _MASK_BYTES), not a whole batch of them
    step = max(1, _MASK_BYTES // (flat_masks.shape[1] * x.element_size()))
    inputs_buffer, keep_buffer, z_buffer = _Buffer(), _Buffer(), _Buffer()
    pass_keep_buffer = _Buffer()
    scores = None
    for s in iter_slices(starts[-1], batch_size, progress, desc):
        out = inputs_buffer.take((s.stop - s.start, *x.shape[1:]), x.dtype, device)
        pass_keep = (pass_keep_buffer.take((s.stop - s.start, *x.shape[2:]), x.dtype, device)
                     if layer_masking else None)
        # the inputs whose coalitions fall in this pass, a block of rows at a time
        for i in range(bisect.bisect_right(starts, s.start) - 1,
                       bisect.bisect_left(starts, s.stop)):
            for low in range(max(starts[i], s.start), min(starts[i + 1], s.stop), step):
                high = min(low + step, starts[i + 1], s.stop)
                z = z_buffer.take((high - low, coalitions[i].shape[1]), x.dtype, device)
                z.copy_(coalitions[i][low - starts[i]:high - starts[i]])
                keep = keep_buffer.take((high - low, flat_masks.shape[1]), x.dtype, device)
                torch.index_select(z, 1, flat_masks[i], out=keep)
                kept = keep.view(-1, 1, *x.shape[2:]) if x.ndim == 4 else keep
                torch.addcmul(reference[i], kept, difference[i],
                              out=out[low - s.start:high - s.start])
                if pass_keep is not None:
                    pass_keep[low - s.start:high - s.start] = keep.view(-1, *x.shape[2:])
        result = masked_scores(scorer, out, rows[s], pass_keep)
        if scores is None:
            scores = torch.empty(starts[-1], *result.shape[1:], dtype=result.dtype)
        scores[s] = result
        del result
    return list(scores.split(sizes))


_MASK_BYTES = 4 * 2 ** 20
