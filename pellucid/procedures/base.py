"""The contract of the evaluation procedures.

A procedure evaluates an attribution *method*, not a set of heatmaps: it changes the model
(retrains it, randomizes its layers) and explains again, so it takes an explainer factory:

- an :class:`~pellucid.explain.Explainer` class, built as
  ``explainer(model, **explainer_kwargs)`` for every model the procedure makes;
- or a callable ``explainer(model, inputs, targets) -> heatmaps`` (any library's method).

Calling a procedure returns a :class:`~pellucid.metrics.MetricResult`. Heatmaps are checked
against the inputs (shape, finiteness) every time they come back from the factory.
"""
from __future__ import annotations

from typing import Any

import torch

from .._params import Configurable
from .._validation import check_heatmaps
from ..explain import Explainer


class Procedure(Configurable):
    """Base of the evaluation procedures; ``explainer`` and ``explainer_kwargs`` as in the
    module docstring. Subclasses set ``name`` and ``higher_is_better``."""

    name = "procedure"
    higher_is_better = True

    def _check_explainer(self, explainer: Any, explainer_kwargs: dict | None) -> None:
        is_class = isinstance(explainer, type) and issubclass(explainer, Explainer)
        if isinstance(explainer, Explainer):
            raise TypeError(f"explainer must be a factory: the class {type(explainer).__name__} "
                            "(with explainer_kwargs) or a callable (model, inputs, targets) -> "
                            "heatmaps; got an instance, which is bound to one model and cannot "
                            "explain the models the procedure makes")
        if not is_class and (isinstance(explainer, type) or not callable(explainer)):
            raise TypeError("explainer must be an Explainer class or a callable "
                            "(model, inputs, targets) -> heatmaps; got "
                            f"{getattr(explainer, '__name__', type(explainer).__name__)}")
        if explainer_kwargs is not None and not is_class:
            raise TypeError("explainer_kwargs go to an Explainer class; a callable explainer "
                            "takes (model, inputs, targets) only")

    def _heatmaps(self, model: Any, x: torch.Tensor, targets: Any) -> torch.Tensor:
        """Heatmaps of ``x`` for ``targets`` by the factory on ``model``, checked."""
        if isinstance(self.explainer, type):
            method = self.explainer(model, **(self.explainer_kwargs or {}))
            heatmaps = method.explain(x, targets)
        else:
            heatmaps = self.explainer(model, x, targets)
        return check_heatmaps(heatmaps, x)
