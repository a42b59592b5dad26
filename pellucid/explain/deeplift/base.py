"""What DeepLift and DeepLiftShap share: passes over stacked (input, reference) pairs whose
nonlinearities follow the rule's layout, attributions averaged over each input's pairs."""
from __future__ import annotations

from typing import Any

import torch

from ..._batching import iter_slices
from ..._scorer import Scorer
from ..._validation import check_choice
from ..base import WhiteBoxExplainer
from .layouts import LAYOUTS
from .mode import DeepLiftMode

RULES = tuple(LAYOUTS)


class DeepLiftBase(WhiteBoxExplainer):
    """Attributions averaged over (input, reference) pairs; subclasses choose the pairs."""

    def __init__(self, model: Any, *, rule: str = "rescale", **common: Any):
        super().__init__(model, **common)
        self.rule = check_choice("rule", rule, RULES)

    def _pairs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(references, input index, reference index)`` of every pair."""
        raise NotImplementedError

    def _attributions(self, x: torch.Tensor, scorer: Scorer) -> torch.Tensor:
        """Contributions ``(x - x0) * m`` with the input's shape, averaged over each input's
        pairs. A pass holds ``batch_size // streams`` pairs of 2 or 4 rows (at least one pair)."""
        x = x.cpu()
        references, inputs_of, references_of = self._pairs(x)
        pairs_per_pass = max(1, self.batch_size // LAYOUTS[self.rule].streams)
        total = torch.zeros_like(x)
        for s in iter_slices(len(inputs_of), pairs_per_pass, self.progress,
                             desc=type(self).__name__):
            i = inputs_of[s]
            total.index_add_(0, i, self._pass(x[i], references[references_of[s]], scorer, i))
        counts = torch.bincount(inputs_of, minlength=len(x)).to(x.dtype)
        return total / counts.view(-1, *[1] * (x.ndim - 1))

    def _pass(self, x: torch.Tensor, x0: torch.Tensor, scorer: Scorer, rows: torch.Tensor
              ) -> torch.Tensor:
        layout = LAYOUTS[self.rule]
        device = self._model.device
        delta = (x - x0).to(device).requires_grad_(True)
        stacked = layout.build(x0.to(device), delta)
        with DeepLiftMode(layout, rows=len(stacked)):
            outputs = self._model.forward_with_grad(
                stacked, **scorer.kwargs_for(rows.repeat(layout.streams)))
        scores = scorer.select(layout.input_stream(outputs, len(stacked)), rows)
        (multipliers,) = torch.autograd.grad(scores.sum(), delta)
        return (delta * multipliers).detach().float().cpu()
