"""Output selectors: which scalar of the model's output is explained (or scored), per input.

Every explainer and metric takes ``targets``, turned into a selector by :func:`as_selector`:

- ``None``: the class the model predicts on the original inputs (:class:`ClassScore`);
- an int, or one int per input: that class (:class:`ClassScore`);
- a ``(N, T)`` array of ints: ``T`` classes per input; explainers return ``(N, T, H, W)``
  (``(N, T, F)`` for tabular inputs), and black-box methods get all ``T`` maps from the same
  forward passes;
- for a model returning a tuple or dict, the forms above read its first element (with a
  warning); :class:`OutputElement` chooses another;
- a :class:`Selector`: :class:`RegressionOutput`, :class:`SegmentationScore`,
  :class:`ClassDifference`, :class:`OutputElement`, or :class:`ClassScore` itself;
- any other callable ``f(outputs) -> (n,)`` (or ``(n, T)``): applied to each batch of raw
  outputs, e.g. ``lambda y: y[:, 3] - y[:, 5]``.

A selector maps a batch of model outputs and ``rows`` (for each output row, the index of the
input it comes from: perturbed copies of input ``i`` all have row ``i``) to scores ``(n, T)``.
Before any expensive pass it is *bound* to one call (:meth:`Selector.bind`): checked against
the outputs of the first input, and completed where it needs the model's predictions on the
original inputs (the predicted class, the predicted segmentation region). Binding returns a new
object: the selector a user passed is never changed, so one can serve several threads.

``probabilities=True`` (where a method or metric offers it) is applied between the two
steps: the softmax over dimension 1 of the tensor the selector reads (its classes). It is
refused before any pass when that tensor has no class dimension of at least 2 entries (a
regression output, one binary score) and for a plain callable (which sees raw outputs).
"""
from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import torch

from ._validation import check_class_indices

Outputs = Any  # a tensor, or a tuple / dict of them


@dataclass(frozen=True, eq=False)
class BindContext:
    """What a selector may look at when it is bound to one call.

    Attributes:
        n_inputs: ``N``, the number of inputs explained.
        first_outputs: the raw outputs of the first input (batch of 1), for shape checks.
        predictions: ``predictions(reduce)`` runs the model on all ``N`` original inputs,
            ``batch_size`` at a time, and joins ``reduce(outputs, rows)`` of each batch (e.g.
            the argmax: memory stays bounded by ``batch_size``); called only by selectors that
            need the predictions.
    """

    n_inputs: int
    first_outputs: Outputs
    predictions: Callable[[Callable[[Outputs, torch.Tensor], torch.Tensor]], torch.Tensor]


class Selector:
    """Base of the output selectors (see the module docstring).

    Subclasses implement :meth:`select` and, where they have per-input values or need the
    predictions, :meth:`bind`. ``nb_targets`` is ``T``; ``multiple`` says whether results
    carry a target dimension (``(N, T, ...)``) even when ``T = 1``.
    """

    nb_targets = 1
    multiple = False
    reads_raw_outputs = False  # a callable: probabilities=True must not change what it sees

    def bind(self, context: BindContext) -> "Selector":
        """The selector for one call, checked against ``context.first_outputs``."""
        return self

    def tensor(self, outputs: Outputs) -> torch.Tensor:
        """The tensor the selector reads (and ``probabilities`` softmaxes): the outputs, or the
        first element of a tuple / dict output (with a warning that says how to choose)."""
        if torch.is_tensor(outputs):
            return outputs
        elements = (list(outputs.items()) if isinstance(outputs, dict) else
                    list(enumerate(outputs)) if isinstance(outputs, (tuple, list)) else [])
        if not elements or not torch.is_tensor(elements[0][1]):
            raise TypeError(f"{type(self).__name__} needs a tensor output; the model returns a "
                            f"{type(outputs).__name__}: select an element with "
                            "OutputElement(key, selector)")
        key, first = elements[0]
        warnings.warn(f"the model returns a {type(outputs).__name__}; explaining its first "
                      f"element ({key!r}). Choose another with OutputElement(key, selector).",
                      UserWarning, stacklevel=2)
        return first

    def select(self, tensor: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Scores ``(n, T)`` of a batch; ``rows`` ``(n,)`` long, on the tensor's device."""
        raise NotImplementedError

    def column(self, j: int) -> "Selector":
        """A selector of target ``j`` alone (``T = 1``); white-box methods explain the targets
        one after the other through it."""
        if j != 0 or self.nb_targets != 1:
            raise NotImplementedError(f"{type(self).__name__} has no target {j}")
        return self


def as_selector(targets: Any) -> Selector:
    """``targets`` as a :class:`Selector` (see the module docstring)."""
    if isinstance(targets, Selector):
        return targets
    if targets is None or isinstance(targets, (numbers.Integral, np.ndarray, list, tuple)) or (
            torch.is_tensor(targets)):
        return ClassScore(targets)
    if callable(targets):
        return FunctionSelector(targets)
    raise TypeError("targets must be None, an int, one int per input, an (N, T) array of ints, "
                    f"a pellucid.selectors.Selector or a callable; got {type(targets).__name__}")


def _flat(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(len(tensor), -1)


@dataclass(frozen=True, eq=False)
class ClassScore(Selector):
    """The score of a class: ``outputs.reshape(n, -1)[i, classes[i]]``.

    ``classes``: ``None`` (the class predicted on the original input), an int, one int per
    input, or an ``(N, T)`` array (``T`` classes per input: results get a target dimension).
    """

    classes: Any = None
    _bound: torch.Tensor | None = field(default=None, repr=False)  # (N, T) long once bound

    @property
    def nb_targets(self) -> int:
        return 1 if self._bound is None else self._bound.shape[1]

    @property
    def multiple(self) -> bool:
        values = self.classes
        return values is not None and not isinstance(values, numbers.Integral) and (
            np.ndim(values.cpu() if torch.is_tensor(values) else values) == 2)

    def bind(self, context):
        size = _flat(self.tensor(context.first_outputs)).shape[1]
        if self.classes is None:
            predicted = context.predictions(
                lambda out, rows: _flat(self.tensor(out)).argmax(1).cpu())
            return replace(self, _bound=predicted[:, None].cpu())
        classes = check_class_indices("targets", self.classes, context.n_inputs, size,
                                      allow_columns=True)
        return replace(self, _bound=classes)

    def select(self, tensor, rows):
        return _flat(tensor).gather(1, self._bound.to(rows.device)[rows])

    def column(self, j):
        return replace(self, classes=self._bound[:, j], _bound=self._bound[:, j:j + 1])


def top_class_hits(selector: Selector, outputs: Outputs, rows: torch.Tensor
                   ) -> torch.Tensor | None:
    """``(n,)`` bool: whether each row's target class is the model's top class (for accuracy
    curves); ``None`` for selectors other than :class:`ClassScore` (no class to hit)."""
    if not isinstance(selector, ClassScore):
        return None
    flat = _flat(selector.tensor(outputs))
    return (flat.argmax(1).cpu() == selector._bound[rows.cpu(), 0])


@dataclass(frozen=True, eq=False)
class RegressionOutput(Selector):
    """Output ``index`` of a regression model returning ``(N,)`` or ``(N, K)``."""

    index: int = 0

    def bind(self, context):
        size = _flat(self.tensor(context.first_outputs)).shape[1]
        check_class_indices("RegressionOutput index", self.index, 1, size)
        return self

    def select(self, tensor, rows):
        return _flat(tensor)[:, self.index:self.index + 1]


@dataclass(frozen=True, eq=False)
class ClassDifference(Selector):
    """``score[positive] - score[negative]``: the evidence for one class against another (each
    an int or one int per input)."""

    positive: Any
    negative: Any
    _bound: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    def bind(self, context):
        size = _flat(self.tensor(context.first_outputs)).shape[1]
        pair = tuple(check_class_indices(name, value, context.n_inputs, size)
                     for name, value in (("positive", self.positive),
                                         ("negative", self.negative)))
        return replace(self, _bound=pair)

    def select(self, tensor, rows):
        flat = _flat(tensor)
        positive, negative = (t.to(rows.device)[rows] for t in self._bound)
        return flat.gather(1, positive) - flat.gather(1, negative)


@dataclass(frozen=True, eq=False)
class SegmentationScore(Selector):
    """For a segmentation model returning ``(N, K, H, W)``: the sum of class ``class_index``'s
    scores over a region, ``sum_{h,w} y[i, c, h, w] * mask[i, h, w]`` (pytorch-grad-cam's
    ``SemanticSegmentationTarget``).

    ``class_index``: an int or one int per input. ``mask``: ``None`` for the region the model
    assigns to that class on the original input (argmax over classes), or a ``(H, W)`` or
    ``(N, H, W)`` array (bool or weights).
    """

    class_index: Any
    mask: Any = None
    _bound: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    def bind(self, context):
        first = self.tensor(context.first_outputs)
        if first.ndim != 4:
            raise ValueError("SegmentationScore needs outputs (N, K, H, W); the model returns "
                             f"shape {tuple(first.shape)}")
        n, (classes, height, width) = context.n_inputs, first.shape[1:]
        index = check_class_indices("class_index", self.class_index, n, classes)[:, 0]
        if self.mask is None:  # one output channel: a binary segmentation, positive logit
            mask = context.predictions(
                lambda out, rows: self._region(self.tensor(out), index[rows]))
        else:
            mask = torch.as_tensor(np.asarray(self.mask.cpu() if torch.is_tensor(self.mask)
                                              else self.mask)).float()
            if mask.shape not in ((height, width), (n, height, width)):
                raise ValueError(f"mask must have shape ({height}, {width}) or ({n}, {height}, "
                                 f"{width}) to match outputs {tuple(first.shape)}; got "
                                 f"{tuple(mask.shape)}")
            mask = mask.expand(n, height, width)
        return replace(self, _bound=(index, mask))

    @staticmethod
    def _region(outputs: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``(n, H, W)`` float: where the model predicts class ``index`` of each row (argmax
        over classes; for one output channel, where its logit is positive)."""
        if outputs.shape[1] == 1:
            return (outputs[:, 0] > 0).float().cpu()
        predicted = outputs.argmax(1).cpu()
        return (predicted == index[:, None, None]).float()

    def select(self, tensor, rows):
        index, mask = (t.to(rows.device)[rows] for t in self._bound)
        maps = tensor[torch.arange(len(tensor), device=rows.device), index]
        return (maps * mask.to(maps.dtype)).sum((1, 2))[:, None]


@dataclass(frozen=True, eq=False)
class OutputElement(Selector):
    """For a model returning a tuple or dict: element ``key``, read by ``selector`` (default:
    the predicted class, :class:`ClassScore`)."""

    key: Any
    selector: Any = None

    @property
    def inner(self) -> Selector:
        return as_selector(self.selector)

    @property
    def nb_targets(self) -> int:
        return self.inner.nb_targets

    @property
    def multiple(self) -> bool:
        return self.inner.multiple

    @property
    def reads_raw_outputs(self) -> bool:
        return self.inner.reads_raw_outputs

    def element(self, outputs: Outputs) -> Outputs:
        """``outputs[key]`` (a namedtuple's field by its name too)."""
        try:
            if isinstance(self.key, str) and hasattr(outputs, "_fields"):
                return getattr(outputs, self.key)
            return outputs[self.key]
        except (KeyError, IndexError, TypeError, AttributeError) as error:
            raise ValueError(f"OutputElement({self.key!r}): the model's outputs "
                             f"({type(outputs).__name__}) have no element {self.key!r}") from error

    def tensor(self, outputs):
        return self.inner.tensor(self.element(outputs))

    def bind(self, context):
        self.tensor(context.first_outputs)  # a missing element raises here
        element = self.element
        inner = self.inner.bind(BindContext(
            context.n_inputs, element(context.first_outputs),
            lambda reduce: context.predictions(lambda out, rows: reduce(element(out), rows))))
        return replace(self, selector=inner)

    def select(self, tensor, rows):
        return self.inner.select(tensor, rows)

    def column(self, j):
        return replace(self, selector=self.inner.column(j))


@dataclass(frozen=True, eq=False)
class FunctionSelector(Selector):
    """A callable ``f(outputs) -> (n,)`` or ``(n, T)`` on each batch of raw outputs."""

    function: Callable
    _nb_targets: int = field(default=1, repr=False)
    reads_raw_outputs = True

    @property
    def nb_targets(self) -> int:
        return self._nb_targets

    @property
    def multiple(self) -> bool:
        return self._nb_targets > 1

    def tensor(self, outputs):
        return outputs

    def bind(self, context):
        scores = self._call(context.first_outputs)
        if len(scores) != 1:
            raise ValueError(f"the targets function must return one score per input (or an "
                             f"(n, T) array); on one input it returned shape "
                             f"{tuple(scores.shape)}")
        return replace(self, _nb_targets=scores.shape[1])

    def _call(self, outputs):
        scores = self.function(outputs)
        if not torch.is_tensor(scores) or scores.ndim not in (1, 2):
            shape = tuple(scores.shape) if torch.is_tensor(scores) else type(scores).__name__
            raise ValueError(f"the targets function must return a tensor (n,) or (n, T); "
                             f"got {shape}")
        return scores if scores.ndim == 2 else scores[:, None]

    def select(self, tensor, rows):
        return self._call(tensor)

    def column(self, j):
        return FunctionSelector(lambda outputs: self._call(outputs)[:, j], 1)
