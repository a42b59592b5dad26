"""How the (input, reference) pairs of one pass are stacked along the batch dimension, and what
each kind of operation becomes on that stack, for each DeepLIFT rule.

An operation that is not intercepted runs on the whole stack as it is. For an affine operation
(addition, bias, reshape, concatenation, average pooling, eval-mode dropout...) that is exactly
right in both layouts: on ``[x ; x0]`` its backward is its gradient, i.e. the linear rule; on
``[x0 ; x ; x0 + p ; x0 + n]`` it maps ``x0 + p`` to ``f(x0) + L p``, so the parts pass through.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from .rules import RescaleElementwise, RescaleMaxPool, RevealCancelElementwise, sign_split


class Layout:
    """One rule's stacking: ``streams`` rows per pair, how to build them, where the target score
    is read, and what each intercepted operation becomes. Linear and convolution layers keep
    their gradient unless a layout says otherwise."""

    streams: int

    def build(self, reference: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    input_row = 0  # which stream holds the inputs x (the rows whose scores are explained)

    def input_stream(self, outputs: Any, rows: int) -> Any:
        """The outputs of the input rows: their target scores' gradients w.r.t. ``delta`` are
        the multipliers. ``rows``: the stacked batch's length. Tuples (named ones too) and dicts
        are mapped element by element; what is not batched with the rows (a scalar loss,
        ``None``) passes as it is."""
        if torch.is_tensor(outputs):
            batched = outputs.ndim > 0 and len(outputs) == rows
            return outputs.chunk(self.streams)[self.input_row] if batched else outputs
        if isinstance(outputs, dict):
            return {key: self.input_stream(value, rows) for key, value in outputs.items()}
        if isinstance(outputs, tuple) and hasattr(outputs, "_make"):  # a namedtuple
            return outputs._make(self.input_stream(value, rows) for value in outputs)
        if isinstance(outputs, (tuple, list)):
            return type(outputs)(self.input_stream(value, rows) for value in outputs)
        return outputs

    def elementwise(self, x: torch.Tensor, fn: Callable) -> torch.Tensor:
        raise NotImplementedError

    def max_pool(self, x: torch.Tensor, pool: Callable) -> torch.Tensor:
        """``pool(t) -> (values, flat indices)``."""
        raise NotImplementedError

    def weighted(self, call: Callable, x: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor | None) -> torch.Tensor:
        """``call(input, weight, bias)``: a linear or convolution layer."""
        return call(x, weight, bias)

    def pairwise(self, fn: Callable, *tensors: torch.Tensor) -> Any:
        """``fn(*pairs)`` for a rule written on ``[x ; x0]`` stacks (``composites``, products,
        the averaged-Jacobian fallback); ``fn`` returns a tensor or a tuple of tensors and
        ``None``."""
        raise NotImplementedError


class RescaleLayout(Layout):
    """``[x ; x0]``. Linear operations keep their gradient; nonlinearities use the Rescale rule."""

    streams = 2

    def build(self, reference, delta):
        return torch.cat([reference + delta, reference])

    def elementwise(self, x, fn):
        return RescaleElementwise.apply(x, fn)

    def max_pool(self, x, pool):
        return RescaleMaxPool.apply(x, pool)

    def pairwise(self, fn, *tensors):
        return fn(*tensors)


class RevealCancelLayout(Layout):
    """``[x0 ; x ; x0 + p ; x0 + n]``: the reference, the input, and the reference plus the
    positive part ``p`` or the negative part ``n`` of the difference-from-reference
    (``x - x0 = p + n``). The ``x`` rows are the model's true activations.

    Where the parts are split, as in the paper and its reference code (kundajelab/deeplift):
    - model inputs and the inputs of linear and convolution layers are split by the sign of their
      total difference ``x - x0``, and the layer sends ``w * dx_i`` to the positive part when
      positive (paper Sec. 3.5.1: ``dy+ = sum 1{w_i dx_i > 0} w_i dx_i``);
    - a nonlinearity outputs its RevealCancel parts ``dy_pos, dy_neg`` (Sec. 3.5.3);
    - max pooling gets the Rescale-style rule of :class:`RescaleMaxPool` on ``(x, x0)`` (the paper
      gives no RevealCancel rule for it) and its output difference is split by sign; so do the
      rules written on pairs (normalisations, softmax, products of two input-dependent
      tensors, attention, the averaged-Jacobian fallback: ``pairwise``);
    - other linear operations (eval-mode batch norm, additions, average pooling, reshapes) carry
      the two parts as they are, as the reference code does for batch norm. A negative factor
      turns the positive part negative, which changes nothing: the RevealCancel formulas are
      symmetric in their two parts, only their grouping matters. A signed operation with
      several terms that is not listed above (a matmul with a weight, a subtraction of two
      activations) carries the parts without re-grouping its terms by sign: the sum stays
      exact, its positive and negative terms stay mixed.
    Their backward passes are the transposed maps, so the positive and negative multipliers are
    propagated separately; contributions still sum to ``f(x) - f(x0)``.
    """

    streams = 4

    def build(self, reference, delta):
        return _restack(reference, reference + delta, *sign_split(delta))

    input_row = 1

    def elementwise(self, x, fn):
        return RevealCancelElementwise.apply(x, fn)

    def max_pool(self, x, pool):
        return self.pairwise(lambda pair: RescaleMaxPool.apply(pair, pool), x)

    def pairwise(self, fn, *tensors):
        pairs = []
        for tensor in tensors:
            x0, x1, _, _ = tensor.chunk(4)
            pairs.append(torch.cat([x1, x0]))
        out = fn(*pairs)
        if isinstance(out, tuple):
            return tuple(None if y is None else self._split(y) for y in out)
        return self._split(out)

    @staticmethod
    def _split(out: torch.Tensor) -> torch.Tensor:
        y1, y0 = out.chunk(2)
        return _restack(y0, y1, *sign_split(y1 - y0))

    def weighted(self, call, x, weight, bias):
        x0, x1, _, _ = x.chunk(4)
        parts = torch.cat(sign_split(x1 - x0))
        weight = weight.detach()
        pos_by_pos_w, neg_by_pos_w = call(parts, weight.clamp(min=0), None).chunk(2)
        pos_by_neg_w, neg_by_neg_w = call(parts, weight.clamp(max=0), None).chunk(2)
        y0, y1 = call(torch.cat([x0, x1]), weight, bias).chunk(2)
        return _restack(y0, y1, pos_by_pos_w + neg_by_neg_w, pos_by_neg_w + neg_by_pos_w)


def _restack(y0: torch.Tensor, y1: torch.Tensor, pos: torch.Tensor,
             neg: torch.Tensor) -> torch.Tensor:
    """``[y0 ; y1 ; y0 + pos ; y0 + neg]``."""
    return torch.cat([y0, y1, y0 + pos, y0 + neg])


LAYOUTS = {"rescale": RescaleLayout(), "reveal_cancel": RevealCancelLayout()}
