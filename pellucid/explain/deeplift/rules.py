"""DeepLIFT rules as autograd functions over a batch that carries the reference alongside.

The forward of each function is the ordinary operation; its backward returns the DeepLIFT
multiplier instead of the derivative (Shrikumar, Greenside, Kundaje, 2017). Two layouts of the
batch dimension are used (see :mod:`pellucid.explain.deeplift.layouts`):

- Rescale, ``[x ; x0]``: the input half and the reference half of every activation.
- RevealCancel, ``[x0 ; x ; x0 + dx_pos ; x0 + dx_neg]``: the reference, the input, and the
  reference plus the positive or the negative part of the difference-from-reference
  (``x - x0 = dx_pos + dx_neg``). The input rows carry the true activation exactly, so that
  nonlinearities, max-pool ties and sign splits see what the model computes.

Every function saves multipliers or indices, never its input, so an in-place operation on the
input afterwards (``nn.ReLU(inplace=True)``) does not invalidate the backward pass.
"""
from __future__ import annotations

from typing import Callable

import numpy.polynomial.legendre
import torch

EPS = 1e-10
"""|delta x| at or below which a ratio delta y / delta x is replaced by its limit (a derivative)."""


def derivative(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``fn'(x)`` elementwise, for an elementwise ``fn``."""
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(fn(leaf).sum(), leaf)
    return grad


def ratio(numerator: torch.Tensor, delta: torch.Tensor,
          limit: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``numerator / delta`` where ``|delta| > EPS``, else ``limit()`` (computed only if needed)."""
    small = ~(delta.abs() > EPS)  # also where delta is NaN: -inf in both rows (a masked logit)
    out = numerator / torch.where(small, torch.ones_like(delta), delta)
    if small.any():
        out = torch.where(small, limit(), out)
    return out


def sign_split(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(max(delta, 0), min(delta, 0))``. A zero delta sends half of the multipliers of each part
    back (the average of the positive and negative multipliers, as in the reference code of the
    paper); it contributes nothing either way."""
    share = (delta > 0).to(delta.dtype) + 0.5 * (delta == 0).to(delta.dtype)
    return delta * share, delta * (1 - share)


class RescaleElementwise(torch.autograd.Function):
    """Rescale rule on ``[x ; x0]``: multiplier ``(f(x) - f(x0)) / (x - x0)`` (``f'(x)`` where
    ``|x - x0| <= EPS``). The reference half gets no gradient."""

    @staticmethod
    def forward(ctx, streams, fn):
        out = fn(streams)
        x, x0 = streams.chunk(2)
        y, y0 = out.chunk(2)
        ctx.save_for_backward(ratio(y - y0, x - x0, lambda: derivative(fn, x)))
        return out

    @staticmethod
    def backward(ctx, grad):
        (multiplier,) = ctx.saved_tensors
        return torch.cat([grad.chunk(2)[0] * multiplier, torch.zeros_like(multiplier)]), None


class RevealCancelElementwise(torch.autograd.Function):
    """RevealCancel rule (paper Sec. 3.5.3) on ``[x0 ; x ; x0 + p ; x0 + n]``::

        dy_pos = 1/2 (f(x0 + p) - f(x0)) + 1/2 (f(x) - f(x0 + n))
        dy_neg = 1/2 (f(x0 + n) - f(x0)) + 1/2 (f(x) - f(x0 + p))

    Output ``[f(x0) ; f(x) ; f(x0) + dy_pos ; f(x0) + dy_neg]`` (``dy_pos + dy_neg = f(x) -
    f(x0)``); multipliers ``dy_pos / p`` and ``dy_neg / n`` (their limits when ``|p|`` or
    ``|n| <= EPS``). What reaches ``f(x)`` is a multiplier of ``dy_pos + dy_neg``, so it goes
    back through both.
    """

    @staticmethod
    def forward(ctx, streams, fn):
        out = fn(streams)
        x0, _, xp, xn = streams.chunk(4)
        f0, fx, f_pos, f_neg = out.chunk(4)
        dy_pos = 0.5 * ((f_pos - f0) + (fx - f_neg))
        dy_neg = 0.5 * ((f_neg - f0) + (fx - f_pos))
        ctx.save_for_backward(
            ratio(dy_pos, xp - x0, lambda: 0.5 * (derivative(fn, x0) + derivative(fn, xn))),
            ratio(dy_neg, xn - x0, lambda: 0.5 * (derivative(fn, x0) + derivative(fn, xp))))
        return torch.cat([f0, fx, f0 + dy_pos, f0 + dy_neg])

    @staticmethod
    def backward(ctx, grad):
        pos_multiplier, neg_multiplier = ctx.saved_tensors
        _, grad_x, grad_pos, grad_neg = grad.chunk(4)
        zeros = torch.zeros_like(grad_x)
        return torch.cat([zeros, zeros, (grad_x + grad_pos) * pos_multiplier,
                          (grad_x + grad_neg) * neg_multiplier]), None


class RescaleMaxPool(torch.autograd.Function):
    """Max pooling on ``[x ; x0]`` with Captum's rule, which keeps summation-to-delta exact.

    For each window, ``max(y, y0) - y0 >= 0`` is routed to the input's arg-max and
    ``y - max(y, y0) <= 0`` to the reference's arg-max (together ``y - y0``); the multiplier of an
    input position is what it received over its own ``x - x0`` (the pooling gradient where
    ``|x - x0| <= EPS``). ``pool(t)`` returns ``(values, flat indices)`` like
    ``F.max_pool2d_with_indices``.
    """

    @staticmethod
    def forward(ctx, streams, pool):
        out, indices = pool(streams)
        x, x0 = streams.chunk(2)
        y, y0 = out.chunk(2)
        top = torch.maximum(y, y0)
        ctx.save_for_backward(x - x0, top - y0, y - top, *indices.chunk(2))
        return out

    @staticmethod
    def backward(ctx, grad):
        delta_in, rise, fall, indices, ref_indices = ctx.saved_tensors
        grad = grad.chunk(2)[0]
        received = (unpool(grad * rise, indices, delta_in.shape)
                    + unpool(grad * fall, ref_indices, delta_in.shape))
        multiplier = ratio(received, delta_in, lambda: unpool(grad, indices, delta_in.shape))
        return torch.cat([multiplier, torch.zeros_like(multiplier)]), None


def unpool(values: torch.Tensor, indices: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Scatter-add pooled ``values`` back to the input positions ``indices`` (flat over the
    spatial dimensions, as max pooling returns them); overlapping windows add up."""
    out = values.new_zeros(shape).flatten(2)
    out.scatter_add_(2, indices.flatten(2), values.flatten(2))
    return out.view(shape)


def pair_mean(t: torch.Tensor) -> torch.Tensor:
    """``[(x + x0) / 2 ; (x + x0) / 2]`` of ``[x ; x0]``, detached."""
    t = t.detach()
    half = 0.5 * sum(t.chunk(2))
    return torch.cat([half, half])


def with_gradient_of(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """``value`` in the forward pass, the gradient of ``surrogate`` in the backward pass."""
    return value.detach() + (surrogate - surrogate.detach())


def bilinear(op: Callable, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Product rule on ``[x ; x0]`` for an operation ``op`` linear in each of two inputs
    (``*``, ``@``, ``einsum``): ``op(a, b) - op(a0, b0) = op(da, b_mean) + op(a_mean, db)`` with
    ``a_mean = (a + a0) / 2``, exactly; so the multipliers are those of ``op(., b_mean)`` for
    ``a`` and ``op(a_mean, .)`` for ``b`` (the Shapley value of the two-player product)."""
    return with_gradient_of(op(a, b), op(a, pair_mean(b)) + op(pair_mean(a), b))


LEGENDRE_NODES = 16


def averaged_jacobian(fn: Callable, x: torch.Tensor) -> torch.Tensor:
    """Fallback on ``[x ; x0]`` for an operation without a closed rule: the multipliers are the
    Jacobian of ``fn`` averaged along the segment from ``x0`` to ``x`` (integrated gradients of
    the operation alone), by Gauss-Legendre quadrature with ``LEGENDRE_NODES`` nodes, so
    ``m . dx = fn(x) - fn(x0)`` up to the quadrature error (exact for polynomials of degree 31
    along the segment, tiny for smooth operations, not for kinks or singularities)."""
    nodes, weights = numpy.polynomial.legendre.leggauss(LEGENDRE_NODES)
    x1, x0 = x.chunk(2)
    x0 = x0.detach()
    surrogate = sum(float(w / t) * fn(x0 + float(t) * (x1 - x0))
                    for t, w in zip(0.5 * (nodes + 1), 0.5 * weights))
    return with_gradient_of(fn(x), torch.cat([surrogate, torch.zeros_like(surrogate)]))
