"""Explainer base classes: one ``explain(inputs, targets)`` for every attribution method.

A method is a small subclass that declares its hyperparameters as keyword-only arguments of
``__init__`` (stored under the same names, validated there, shown by ``repr``, as in
scikit-learn) and implements ``_explain(x, scorer)`` on validated inputs, reading the model only
through the call's :class:`~pellucid._scorer.Scorer`.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from .._runner import ModelRunner
from .._scorer import Scorer
from .._validation import check_white_box


class Explainer(ModelRunner):
    """Base of every attribution method (parameters: :class:`~pellucid._runner.ModelRunner`).

    ``explain(inputs, targets=None, *, forward_kwargs=None)`` returns a float32 CPU heatmap
    ``(N, H, W)`` for images ``(N, C, H, W)`` and ``(N, F)`` for tabular inputs ``(N, F)``.
    ``targets``: ``None`` (the predicted class), an int, one int per input, an ``(N, T)`` array
    (then heatmaps ``(N, T, H, W)``), or an output selector (:mod:`pellucid.selectors`).
    ``forward_kwargs``: extra arguments of the model's ``forward``; tensors with one row per
    input go with their input.

    Methods whose ``_explain`` handles ``T`` targets at once (from the same forward passes) set
    ``multi_target = True`` and return ``(N, T, ...)``; for the others the targets are explained
    one after the other.
    """

    multi_target = False

    def explain(self, inputs: Any, targets: Any = None, *, forward_kwargs: Any = None
                ) -> torch.Tensor:
        """Heatmaps of ``inputs`` for ``targets``; see the class docstring."""
        return self._per_target(self._explain, inputs, targets, forward_kwargs)

    __call__ = explain

    def _per_target(self, method: Callable[[torch.Tensor, Scorer], torch.Tensor], inputs: Any,
                    targets: Any, forward_kwargs: Any) -> torch.Tensor:
        """``method(x, scorer)`` in the call's prelude: ``(N, T, ...)`` when the targets are
        multiple, else ``(N, ...)``; float32 on the CPU."""
        x = self._validate(inputs)
        with self._call(x, targets, forward_kwargs) as scorer:
            if self.multi_target:
                results = method(x, scorer)
            else:
                results = torch.stack([method(x, scorer.column(j))
                                       for j in range(scorer.nb_targets)], dim=1)
        results = results if scorer.multiple else results[:, 0]
        return results.detach().float().cpu().contiguous()

    def _explain(self, x: torch.Tensor, scorer: Scorer) -> torch.Tensor:
        raise NotImplementedError


class WhiteBoxExplainer(Explainer):
    """Base of methods that need gradients or internals: the model must be a Module."""

    channel_reduction = "sum"  # how per-element attributions become a heatmap

    def attribute(self, inputs: Any, targets: Any = None, *, forward_kwargs: Any = None
                  ) -> torch.Tensor:
        """Per-element attributions with the inputs' shape (before the channel rule of
        ``explain``), for the methods that compute them (gradients, DeepLIFT)."""
        if type(self)._attributions is WhiteBoxExplainer._attributions:  # before any pass
            raise NotImplementedError(f"{type(self).__name__} has no per-element attributions; "
                                      "use explain()")
        return self._per_target(self._attributions, inputs, targets, forward_kwargs)

    def _explain(self, x: torch.Tensor, scorer: Scorer) -> torch.Tensor:
        return reduce_channels(self._attributions(x, scorer), self.channel_reduction)

    def _attributions(self, x: torch.Tensor, scorer: Scorer) -> torch.Tensor:
        raise NotImplementedError

    def __init__(self, model: Any, **common: Any):
        check_white_box(model, type(self).__name__)
        super().__init__(model, **common)

    @property
    def module(self) -> torch.nn.Module:
        return self._model.module


def reduce_channels(attributions: torch.Tensor, rule: str) -> torch.Tensor:
    """Images ``(N, C, H, W) -> (N, H, W)`` by ``"sum"``, ``"abs_max"`` (max over channels of
    the absolute value, Simonyan et al.) or ``"mean"``; tabular ``(N, F)`` is returned as is."""
    if attributions.ndim != 4:
        return attributions
    if rule == "sum":
        return attributions.sum(1)
    if rule == "abs_max":
        return attributions.abs().amax(1)
    if rule == "mean":
        return attributions.mean(1)
    raise ValueError(f"channel reduction must be 'sum', 'abs_max' or 'mean', got {rule!r}")
