"""The one batched forward helper every method uses.

Memory is bounded by ``batch_size``: inputs that do not exist yet (perturbed copies, noisy
samples, interpolation points) are built one batch at a time by a ``make_inputs(slice)``
callback, so ``nb_samples`` or image size never decide how much is held at once.
Black-box passes run under ``torch.inference_mode()`` (in :meth:`Model.predict`); gradient
passes use ``torch.autograd.grad`` so no ``.grad`` is left on the user's parameters.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
from tqdm.auto import tqdm

from ._layer_masking import layer_masked_forward
from .models import Model


def iter_slices(n: int, batch_size: int, progress: bool = False, desc: str | None = None
                ) -> Iterator[slice]:
    """Slices ``[0, b), [b, 2b), ...`` covering ``range(n)``, with a tqdm bar when asked for and
    when there is more than one batch."""
    starts = range(0, n, batch_size)
    show = progress and len(starts) > 1
    for start in tqdm(starts, desc=desc, disable=not show, leave=False):
        yield slice(start, min(start + batch_size, n))


def predict_batched(model: Model, inputs: torch.Tensor, *, batch_size: int,
                    probabilities: bool = False, progress: bool = False,
                    desc: str | None = None) -> torch.Tensor:
    """Class scores ``(N, K)`` of the model on ``inputs``, ``batch_size`` at a time."""
    return torch.cat([model.predict(inputs[s], probabilities=probabilities)
                      for s in iter_slices(len(inputs), batch_size, progress, desc)])


def score_generated(scorer: Any, n: int,
                    make_inputs: Callable[[slice], tuple[torch.Tensor, torch.Tensor]], *,
                    batch_size: int, progress: bool = False, desc: str | None = None
                    ) -> torch.Tensor:
    """Scores ``(n, T)`` of a call's :class:`~pellucid._scorer.Scorer` on the items built by
    ``make_inputs(s) -> (batch, rows)`` for consecutive slices ``s`` (``rows``: the original
    input of each item). ``make_inputs`` may return ``(batch, rows, keep)`` instead: the items
    are then scored with the positions where ``keep`` ``(n, *spatial)`` is 0 masked at every
    layer (:func:`pellucid._layer_masking.layer_masked_forward`)."""
    outputs = [masked_scores(scorer, *make_inputs(s))
               for s in iter_slices(n, batch_size, progress, desc)]
    return torch.cat(outputs)


def masked_scores(scorer: Any, batch: torch.Tensor, rows: torch.Tensor,
                  keep: torch.Tensor | None = None) -> torch.Tensor:
    """``scorer(batch, rows)``, layer-masked by ``keep`` when given."""
    return scorer(batch, rows) if keep is None else layer_masked_forward(scorer, batch, keep, rows)


def gradients_generated(model: Model, n: int,
                        make_inputs: Callable[[slice], tuple[torch.Tensor, torch.Tensor]], *,
                        batch_size: int, progress: bool = False, desc: str | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of the target score w.r.t. the input, batched.

    ``make_inputs(s)`` returns ``(inputs, targets)`` for the items in slice ``s``. Returns the
    gradients (same shape as the inputs) and the target scores ``(n,)``, both float32 on the CPU.
    """
    grads, scores = [], []
    for s in iter_slices(n, batch_size, progress, desc):
        x, t = make_inputs(s)
        g, y = input_gradient(model, x, t)
        grads.append(g)
        scores.append(y)
    return torch.cat(grads), torch.cat(scores)


def input_gradient(model: Model, x: torch.Tensor, targets: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """d output[i, targets[i]] / d x[i] for one batch, and the scores; CPU float32."""
    return score_gradient(
        lambda leaf: model.forward_with_grad(leaf).reshape(len(leaf), -1).gather(
            1, targets.to(model.device).long()[:, None])[:, 0], x, model.device)


def score_gradient(score: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of ``score(x) -> (n,)`` (each row's own score) w.r.t. ``x`` for one batch, and
    the scores; CPU float32. ``x`` is copied to a fresh leaf on ``device``: no ``.grad`` is left
    anywhere."""
    leaf = x.detach().to(device, torch.float32).clone().requires_grad_(True)
    scores = score(leaf)
    (grad,) = torch.autograd.grad(scores.sum(), leaf)
    return grad.detach().float().cpu(), scores.detach().float().cpu()
