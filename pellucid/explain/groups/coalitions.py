"""The batched coalition evaluator every group method shares.

A coalition ``z`` in ``{0, 1}^M`` of input ``x`` (feature mask with labels ``0 .. M - 1``) is
the perturbed input ``x * z[mask] + baseline * (1 - z[mask])``: kept groups show the input,
removed groups the baseline (every channel of a pixel together). The coalitions of a call are
small (``nb_samples x M`` booleans); full-resolution masks and perturbed inputs exist only for
one forward pass at a time (``batch_size`` of each, written into reused buffers), so memory
never grows with ``nb_samples``.
"""
from __future__ import annotations

import torch

from ..._batching import score_generated
from ..._scorer import Scorer
from ..perturbation.base import _Buffer


def score_coalitions(scorer: Scorer, x: torch.Tensor, reference: torch.Tensor,
                     masks: torch.Tensor, coalitions: list[torch.Tensor], *, batch_size: int,
                     progress: bool = False, desc: str | None = None) -> list[torch.Tensor]:
    """Scores ``(S_i, T)`` of every coalition of every input.

    ``x``, ``reference``: inputs and baselines ``(N, ...)``; ``masks``: ``(N, H, W)`` /
    ``(N, F)`` labels; ``coalitions[i]``: ``(S_i, M_i)`` in ``{0, 1}`` for input ``i``. The
    coalitions of all inputs form one stream cut into passes of ``batch_size``, so a pass may
    hold several inputs (tabular data with few groups).
    """
    device = scorer.model.device
    x, reference = x.to(device), reference.to(device)
    difference = x - reference
    flat_masks = masks.flatten(1).to(device)
    sizes = [len(z) for z in coalitions]
    starts = torch.tensor([0, *sizes]).cumsum(0).tolist()
    rows = torch.repeat_interleave(torch.arange(len(x)), torch.tensor(sizes))
    inputs_buffer, keep_buffer = _Buffer(), _Buffer()

    def make_inputs(s: slice) -> tuple[torch.Tensor, torch.Tensor]:
        out = inputs_buffer.take((s.stop - s.start, *x.shape[1:]), x.dtype, device)
        keep = keep_buffer.take((s.stop - s.start, flat_masks.shape[1]), x.dtype, device)
        for i in rows[s].unique().tolist():
            low, high = max(starts[i], s.start), min(starts[i + 1], s.stop)
            z = coalitions[i][low - starts[i]:high - starts[i]].to(device, x.dtype)
            block = slice(low - s.start, high - s.start)
            torch.index_select(z, 1, flat_masks[i], out=keep[block])
            kept = keep[block].view(-1, 1, *x.shape[2:]) if x.ndim == 4 else keep[block]
            torch.addcmul(reference[i], kept, difference[i], out=out[block])
        return out, rows[s]

    scores = score_generated(scorer, len(rows), make_inputs, batch_size=batch_size,
                             progress=progress, desc=desc)
    return list(scores.split(sizes))
