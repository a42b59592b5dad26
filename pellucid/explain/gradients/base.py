"""The one computation behind every gradient method: :class:`AggregatedGradients`."""
from __future__ import annotations

from typing import Any

import torch

from ..._batching import iter_slices, score_gradient
from ..._scorer import Scorer
from ..base import WhiteBoxExplainer


class AggregatedGradients(WhiteBoxExplainer):
    """Gradients of ``K`` copies of each input, aggregated (base of every gradient method).

    Subclasses set ``channel_reduction`` and ``moments`` (powers of the gradient averaged over
    the copies) and may override ``_nb_copies``, ``_copy_weights``, ``_prepare``, ``_copies``;
    they must implement ``_combine``.
    """

    moments: tuple[int, ...] = (1,)

    def _attributions(self, x: torch.Tensor, scorer: Scorer) -> torch.Tensor:
        """Per-element attributions, shape of ``x`` (before channel reduction)."""
        x_model = x.to(self._model.device)
        context = self._prepare(x_model)
        k = self._nb_copies()
        weights = self._copy_weights().double()
        means = {p: torch.zeros(x.shape, dtype=torch.float64) for p in self.moments}
        for s in iter_slices(len(x) * k, self.batch_size, self.progress, type(self).__name__):
            items = torch.arange(s.start, s.stop)
            sample, copy = items // k, items % k
            copies = self._copies(x_model, sample, copy, context)
            grads, _ = score_gradient(lambda leaf: scorer.with_grad(leaf, sample)[:, 0], copies,
                                      self._model.device)
            weight = weights[copy].view(-1, *[1] * (x.ndim - 1))
            grads = grads.double()
            for p in self.moments:
                means[p].index_add_(0, sample, weight * (grads if p == 1 else grads**p))
        return self._combine(x.cpu(), means, context).float()

    def _nb_copies(self) -> int:
        return 1

    def _copy_weights(self) -> torch.Tensor:
        """Weight of each copy's gradient, ``(K,)``; uniform ``1/K`` (a mean) by default."""
        k = self._nb_copies()
        return torch.full((k,), 1.0 / k, dtype=torch.float64)

    def _prepare(self, x: torch.Tensor) -> Any:
        """What ``_copies`` and ``_combine`` need for this call (baseline, noise scale...)."""
        return None

    def _copies(self, x: torch.Tensor, sample: torch.Tensor, copy: torch.Tensor,
                context: Any) -> torch.Tensor:
        """The copies ``copy`` of inputs ``sample`` (one batch); by default the inputs."""
        return x.index_select(0, sample.to(x.device))

    def _combine(self, x: torch.Tensor, means: dict[int, torch.Tensor], context: Any
                 ) -> torch.Tensor:
        """Attributions from the weighted means of the gradient's powers (``means[p]``)."""
        raise NotImplementedError
