"""Model adapters: one interface over torch modules, scikit-learn estimators and numpy callables.

``as_model(obj)`` returns a :class:`Model` whose :meth:`Model.predict` maps a float tensor of
inputs to a float32 CPU tensor of scores ``(N, K)``:

- ``torch.nn.Module``: its outputs (logits by default). ``predict(x, probabilities=True)``
  applies a softmax over the last dimension, unless the module was declared with
  ``as_model(module, outputs="probabilities")``, in which case its outputs are returned as is.
- scikit-learn estimator: ``predict_proba`` if it has one (already probabilities), else
  ``decision_function`` (a binary decision ``d`` becomes the two scores ``(-d/2, d/2)`` so that
  the softmax of the pair is ``sigmoid(d)``), else ``predict`` as one regression output.
  Images are flattened to ``(N, C*H*W)`` before they reach the estimator.
- any callable ``numpy -> numpy``: its output, a 1-D output read as one column.

The one documented way to get probabilities is ``model.predict(x, probabilities=True)``.
Black-box passes run under ``torch.inference_mode()`` and never change the model's mode.
"""
from __future__ import annotations

import contextlib
import itertools
import warnings
import weakref
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

OUTPUT_KINDS = ("logits", "probabilities")


class Model:
    """Common interface of the adapters; see the module docstring."""

    kind = "abstract"
    module: nn.Module | None = None

    def __init__(self, outputs: str = "logits"):
        if outputs not in OUTPUT_KINDS:
            raise ValueError(f"outputs must be one of {OUTPUT_KINDS}, got {outputs!r}")
        self.outputs = outputs
        self.device = torch.device("cpu")
        self.dtype = torch.float32

    def _raw_scores(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, **forward_kwargs: Any) -> Any:
        """The model's raw outputs on ``x`` as it returns them (a tensor, or for a Module a
        tuple / dict), without the graph; what output selectors read."""
        if forward_kwargs:
            raise TypeError(f"forward_kwargs need a torch.nn.Module; a {self.kind} model takes "
                            "its inputs alone")
        scores = self._raw_scores(x)
        return scores[:, None] if scores.ndim == 1 else scores

    def to_probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Softmax over the class dimension (1), unless the outputs already are probabilities."""
        return scores if self.outputs == "probabilities" else torch.softmax(scores, dim=1)

    def predict(self, x: torch.Tensor, probabilities: bool = False) -> torch.Tensor:
        """Scores ``(N, K)`` as float32 on the CPU; softmax-ed when ``probabilities``."""
        scores = self._raw_scores(x)
        if scores.ndim == 1:
            scores = scores[:, None]
        scores = scores.reshape(scores.shape[0], -1).float().cpu()
        if probabilities and self.outputs == "logits":
            scores = torch.softmax(scores, dim=1)
        return scores.clone()  # a normal tensor even if computed under inference_mode

    __call__ = predict

    @property
    def is_differentiable(self) -> bool:
        return self.module is not None


class TorchModel(Model):
    """A ``torch.nn.Module``. ``device=None`` uses the device of the module's first parameter."""

    kind = "torch"

    def __init__(self, module: nn.Module, outputs: str = "logits", device=None):
        super().__init__(outputs)
        self.module = module
        self.device = torch.device(device) if device is not None else module_device(module)
        if module_device(module).type == "meta":
            raise ValueError(f"{type(module).__name__} is on the meta device: it has shapes but "
                             "no weights, so it cannot be run; materialise it first "
                             "(module.to_empty(device='cpu') and load_state_dict)")
        self.dtype = module_dtype(module)

    def _raw_scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def forward(self, x: torch.Tensor, **forward_kwargs: Any) -> Any:
        if has_stochastic_training_layers(self.module):
            warn_training_mode(self.module)
        with torch.inference_mode():
            return self.module(x.to(self.device, self.dtype), **forward_kwargs)

    def forward_with_grad(self, x: torch.Tensor, **forward_kwargs: Any) -> Any:
        """Forward pass that records the graph (for white-box methods), on the model's device."""
        if has_stochastic_training_layers(self.module):
            warn_training_mode(self.module)
        with torch.enable_grad():
            return self.module(x.to(self.device, self.dtype), **forward_kwargs)


class SklearnModel(Model):
    """A scikit-learn estimator: ``predict_proba``, else ``decision_function``, else ``predict``."""

    kind = "sklearn"

    def __init__(self, estimator: Any):
        if hasattr(estimator, "predict_proba"):
            self.method, outputs = "predict_proba", "probabilities"
        elif hasattr(estimator, "decision_function"):
            self.method, outputs = "decision_function", "logits"
        elif hasattr(estimator, "predict"):
            self.method, outputs = "predict", "logits"
        else:
            raise TypeError(
                f"expected a scikit-learn estimator with predict_proba, decision_function or "
                f"predict; got {type(estimator).__name__}"
            )
        super().__init__(outputs)
        self.estimator = estimator

    def _raw_scores(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().cpu().numpy().reshape(len(x), -1)
        out = np.asarray(getattr(self.estimator, self.method)(array), dtype=np.float32)
        if self.method == "decision_function" and out.ndim == 1:
            out = np.stack([-out / 2, out / 2], axis=1)
        return torch.from_numpy(out)


class CallableModel(Model):
    """Any callable ``numpy array -> numpy array`` of scores; inputs keep their shape."""

    kind = "callable"

    def __init__(self, function: Callable, outputs: str = "logits"):
        super().__init__(outputs)
        self.function = function

    def _raw_scores(self, x: torch.Tensor) -> torch.Tensor:
        # a copy: a function that changes its argument in place must not reach the caller's data
        out = np.asarray(self.function(x.detach().cpu().numpy().copy()), dtype=np.float32)
        if out.ndim == 0 or len(out) != len(x):
            raise ValueError(f"the model callable must return one row of scores per input: "
                             f"for inputs of shape {tuple(x.shape)} it returned shape "
                             f"{out.shape}")
        if not np.isfinite(out).all():
            warn_non_finite(self.function)
        return torch.from_numpy(out)


def as_model(obj: Any, outputs: str = "logits", device=None) -> Model:
    """Wrap ``obj`` (a Module, a scikit-learn estimator, a callable or a Model) as a
    :class:`Model`."""
    if isinstance(obj, Model):
        return obj
    if isinstance(obj, nn.Module):
        return TorchModel(obj, outputs=outputs, device=device)
    if any(hasattr(obj, name) for name in ("predict_proba", "decision_function", "predict")):
        return SklearnModel(obj)
    if callable(obj):
        return CallableModel(obj, outputs=outputs)
    raise TypeError(
        "expected a torch.nn.Module, a scikit-learn estimator or a callable numpy -> numpy; "
        f"got {type(obj).__name__}"
    )


def module_device(module: nn.Module) -> torch.device:
    """Device of the module's first parameter or buffer (CPU for a module with neither)."""
    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    return torch.device("cpu") if first is None else first.device


def module_dtype(module: nn.Module) -> torch.dtype:
    """The floating dtype of the module's first floating parameter or buffer (float32 for a
    module with none): inputs are cast to it, so float64 and half-precision models run in
    their own dtype while heatmaps stay float32."""
    floating = (t for t in itertools.chain(module.parameters(), module.buffers())
                if t.is_floating_point())
    return next(floating, torch.empty(0)).dtype


def has_stochastic_training_layers(module: nn.Module) -> bool:
    """True when a dropout or batch-norm layer is in training mode (outputs depend on the batch
    or on chance)."""
    kinds = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)
    return any(isinstance(m, kinds) and m.training for m in module.modules())


@contextlib.contextmanager
def preserved_running_stats(module: nn.Module | None) -> Iterator[None]:
    """Put back the running statistics (``running_mean``, ``running_var``,
    ``num_batches_tracked``) of batch-norm layers in training mode when the block ends, even on
    an exception: forward passes in training mode update them, and pellucid never changes a
    user's model. (Their outputs still use batch statistics: see :func:`warn_training_mode`.)"""
    saved = {} if module is None else {
        (layer, name): buffer.clone()
        for layer in module.modules()
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.training
        for name, buffer in layer.named_buffers(recurse=False) if buffer is not None}
    try:
        yield
    finally:
        with torch.no_grad():
            for (layer, name), value in saved.items():
                getattr(layer, name).copy_(value)


_warned: weakref.WeakSet = weakref.WeakSet()  # modules and callables warned about (not ids:
# a freed object's id is reused)


def warn_non_finite(function: Callable) -> None:
    """Warn once per callable that it returned NaN or inf: every map built on those scores is
    NaN."""
    try:
        if function in _warned:
            return
        _warned.add(function)
    except TypeError:  # not weakly referable: warn every time rather than never
        pass
    warnings.warn(f"the model callable {getattr(function, '__name__', type(function).__name__)} "
                  "returned NaN or inf scores; explanations built on them are NaN",
                  RuntimeWarning, stacklevel=4)


def warn_training_mode(module: nn.Module) -> None:
    """Warn once per module: dropout/batch-norm in train mode make explanations random."""
    if module not in _warned:
        _warned.add(module)
        warnings.warn(
            f"{type(module).__name__} is in training mode; pellucid never changes the mode. "
            "Call model.eval() first for deterministic explanations.",
            stacklevel=3,
        )
