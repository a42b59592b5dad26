"""Explainer base classes: one ``explain(inputs, targets)`` for every attribution method.

A method is a small subclass that declares its hyperparameters as keyword-only arguments of
``__init__`` (stored under the same names, validated there, shown by ``repr``, as in
scikit-learn) and implements ``_explain(inputs, targets)`` on validated tensors.
"""
from __future__ import annotations

import inspect
from typing import Any

import torch

from .._batching import predict_batched
from .._validation import (check_input_matches_module, check_inputs, check_positive_int,
                           check_seed, check_targets, check_white_box)
from ..models import as_model, preserved_running_stats


class Explainer:
    """Base of every attribution method.

    Parameters common to all methods:
        model: a ``torch.nn.Module`` (logits), a scikit-learn estimator or a numpy callable.
        batch_size: most inputs in one forward pass; bounds memory.
        seed: random seed (same seed, same heatmap); unused by deterministic methods.
        device: where the model runs; ``None`` = the model's own device.
        progress: show a tqdm bar when the work takes more than one batch.

    ``explain(inputs, targets=None)`` returns a float32 CPU heatmap ``(N, H, W)`` for images
    ``(N, C, H, W)`` and ``(N, F)`` for tabular inputs ``(N, F)``. ``targets``: ``None`` (the
    predicted class), an int, or one int per input.
    """

    def __init__(self, model: Any, *, batch_size: int = 64, seed: int | None = 0,
                 device: Any = None, progress: bool = True):
        self.model = model
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.seed = check_seed(seed)
        self.device = device
        self.progress = bool(progress)
        self._model = as_model(model, device=device)

    # -- scikit-learn habits -------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        names: list[str] = []
        for klass in cls.__mro__:
            if "__init__" not in vars(klass) or klass is object:
                continue
            for p in inspect.signature(klass.__init__).parameters.values():
                if p.kind == p.KEYWORD_ONLY and p.name not in names:
                    names.append(p.name)
        return names

    def get_params(self) -> dict[str, Any]:
        """Hyperparameters by name (the model excluded)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    # -- the interface -------------------------------------------------------------------
    def explain(self, inputs: Any, targets: Any = None) -> torch.Tensor:
        """Heatmaps of ``inputs`` for ``targets``; see the class docstring."""
        heatmaps = self._run(self._explain, inputs, targets)
        return heatmaps.detach().float().cpu().contiguous()

    __call__ = explain

    def _run(self, method: Any, inputs: Any, targets: Any) -> Any:
        """``method(x, t)`` on the validated inputs ``x`` and resolved targets ``t``, the
        model's batch-norm running statistics put back afterwards: what every public entry
        point of an explainer does around its computation."""
        x = check_inputs(inputs)
        if self._model.module is not None:
            check_input_matches_module(x, self._model.module)
        self._check_inputs(x)
        with preserved_running_stats(self._model.module):
            return method(x, self.resolve_targets(x, targets))

    def resolve_targets(self, x: torch.Tensor, targets: Any) -> torch.Tensor:
        """``(N,)`` long tensor of the classes to explain; ``None`` means the predicted class."""
        if targets is None:
            scores = predict_batched(self._model, x, batch_size=self.batch_size)
            return scores.argmax(dim=1)
        first = self._model.predict(x[:1])
        return check_targets(targets, len(x), first.shape[1])

    def _check_inputs(self, x: torch.Tensor) -> None:
        """Method-specific input checks (e.g. images only); the default accepts both kinds."""

    def _explain(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _generator(self) -> torch.Generator:
        """A private generator seeded with ``seed`` (the global RNG is never touched)."""
        generator = torch.Generator()
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)
        return generator


class WhiteBoxExplainer(Explainer):
    """Base of methods that need gradients or internals: the model must be a Module."""

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
