"""What one call asks of the model: the scores ``(n, T)`` of batches of (perturbed) inputs.

A :class:`Scorer` joins the model adapter, the bound output selector, the ``probabilities``
policy and the ``forward_kwargs`` of one ``explain`` or metric call. Every forward pass of a
method goes through it with ``rows``: for each row of the batch, the index of the original input
it comes from (perturbed copies, noisy samples and path points of input ``i`` have row ``i``),
which picks that input's target and its slice of the forward arguments.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

from ._batching import iter_slices
from .models import Model
from .selectors import BindContext, Selector, as_selector


@dataclass(frozen=True)
class Scorer:
    """Scores of the model for one call; built by :meth:`bind`."""

    model: Model
    selector: Selector
    probabilities: bool
    forward_kwargs: dict[str, Any]
    n_inputs: int

    @classmethod
    def bind(cls, model: Model, targets: Any, x: torch.Tensor, *, probabilities: bool,
             forward_kwargs: Any, batch_size: int) -> "Scorer":
        """Check ``targets`` (and ``probabilities``) on the first input, then bind the selector
        (a pass over all inputs only where it needs the predictions, e.g. ``targets=None``)."""
        kwargs = check_forward_kwargs(forward_kwargs, model)
        selector = as_selector(targets)
        scorer = cls(model, selector, bool(probabilities), kwargs, len(x))
        first_rows = torch.zeros(1, dtype=torch.long)
        try:
            first = scorer.forward(x[:1], first_rows)
        except RuntimeError as error:  # a shape or dtype the model cannot take, said plainly
            raise ValueError(f"the model cannot run on inputs of shape {tuple(x.shape)} (it "
                             f"failed on the first one): {error}") from error
        scorer._check_probabilities(first)

        def predictions(reduce: Callable[[Any, torch.Tensor], torch.Tensor]) -> torch.Tensor:
            batches = []
            for s in iter_slices(len(x), batch_size):
                rows = torch.arange(s.start, s.stop)
                batches.append(reduce(scorer.forward(x[s], rows), rows))
            return torch.cat(batches)
        bound = selector.bind(BindContext(len(x), first, predictions))
        return replace(scorer, selector=bound)

    @property
    def nb_targets(self) -> int:
        return self.selector.nb_targets

    @property
    def multiple(self) -> bool:
        return self.selector.multiple

    def column(self, j: int) -> "Scorer":
        return replace(self, selector=self.selector.column(j))

    def kwargs_for(self, rows: torch.Tensor) -> dict[str, Any]:
        """The forward arguments of a batch: tensors with one row per input indexed by
        ``rows``, anything else as given; on the model's device."""
        out = {}
        for name, value in self.forward_kwargs.items():
            if torch.is_tensor(value) and value.ndim and len(value) == self.n_inputs:
                value = value[rows.to(value.device)]
            out[name] = value.to(self.model.device) if torch.is_tensor(value) else value
        return out

    def forward(self, batch: torch.Tensor, rows: torch.Tensor) -> Any:
        """Raw outputs of a batch (no graph)."""
        return self.model.forward(batch, **self.kwargs_for(rows))

    def select(self, outputs: Any, rows: torch.Tensor) -> torch.Tensor:
        """Scores ``(n, T)`` from raw outputs, on their device."""
        tensor = self.selector.tensor(outputs)
        if self.probabilities:
            tensor = self.model.to_probabilities(tensor)
        return self.selector.select(tensor, rows.to(tensor.device))

    def __call__(self, batch: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Scores ``(n, T)`` of a batch, float32 on the CPU (no graph)."""
        return self.select(self.forward(batch, rows), rows).float().cpu().clone()

    def with_grad(self, batch: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Scores ``(n, T)`` of a batch on the model's device, in the autograd graph."""
        outputs = self.model.forward_with_grad(batch, **self.kwargs_for(rows))
        return self.select(outputs, rows)

    def _check_probabilities(self, first_outputs: Any) -> None:
        if not self.probabilities:
            return
        if self.selector.reads_raw_outputs:
            raise ValueError("probabilities=True cannot be combined with a targets function: "
                             "it receives the raw outputs; apply the softmax inside it, or "
                             "pass probabilities=False")
        tensor = self.selector.tensor(first_outputs)
        if tensor.ndim < 2 or tensor.shape[1] < 2:
            raise ValueError(f"probabilities=True takes the softmax over the classes (dimension "
                             f"1), but the model's output has shape {tuple(tensor.shape)} (a "
                             "regression or one binary score?), whose softmax is constant; pass "
                             "probabilities=False to use the raw output")


def check_forward_kwargs(forward_kwargs: Any, model: Model) -> dict[str, Any]:
    """``None`` or a dict of extra forward arguments (a Module only)."""
    if forward_kwargs is None:
        return {}
    if not isinstance(forward_kwargs, dict):
        raise TypeError(f"forward_kwargs must be a dict of extra forward arguments, got "
                        f"{type(forward_kwargs).__name__}")
    if forward_kwargs and model.module is None:
        raise TypeError(f"forward_kwargs need a torch.nn.Module; a {model.kind} model takes its "
                        "inputs alone")
    return dict(forward_kwargs)
