"""Non-elementwise operations written as compositions of exact rules, on ``[x ; x0]``.

Each function takes the stacked pair(s) ``[x ; x0]`` and returns the operation's output with
the same stacking; its backward pass gives DeepLIFT multipliers that keep summation-to-delta
exactly, because it is built only from

- linear maps (means, sums, centring, affine parameters, masks added or filled): their gradient;
- elementwise nonlinearities (``exp``, ``log``, ``square``, ``rsqrt``, ``reciprocal``):
  the Rescale rule :class:`~.rules.RescaleElementwise`;
- products of two input-dependent tensors (``*``, ``@``): the product rule :func:`~.rules.bilinear`.

So LayerNorm is ``(x - mean) * rsqrt(mean((x - mean)^2) + eps) * w + b`` (centring linear,
square and rsqrt Rescale, the product by the product rule); softmax is
``exp(z - c) * reciprocal(sum exp(z - c))`` with ``c`` the larger of the two rows' maxima, the
same for ``x`` and ``x0`` (a constant, so no multiplier is lost to it); attention is
``softmax(q k^T * scale + bias) v``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..attention.capture import additive_mask
from .rules import RescaleElementwise, bilinear


def _rescale(t: torch.Tensor, fn) -> torch.Tensor:
    return RescaleElementwise.apply(t, fn)


def _product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return bilinear(torch.mul, a, b)


def normalise(x: torch.Tensor, dims: tuple[int, ...], eps: float, centre: bool = True
              ) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps)`` over ``dims`` (biased variance), or
    ``x / sqrt(mean(x^2) + eps)`` when not ``centre`` (RMSNorm)."""
    centred = x - x.mean(dims, keepdim=True) if centre else x
    variance = _rescale(centred, torch.square).mean(dims, keepdim=True) + eps
    return _product(centred, _rescale(variance, torch.rsqrt))


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    dims = tuple(range(-len(tuple(normalized_shape)), 0))
    return _affine(normalise(x, dims, eps), weight, bias)


def rms_norm(x, normalized_shape, weight=None, eps=None):
    dims = tuple(range(-len(tuple(normalized_shape)), 0))
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    return _affine(normalise(x, dims, eps, centre=False), weight, None)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    grouped = x.reshape(len(x), num_groups, -1)
    out = normalise(grouped, (2,), eps).reshape(x.shape)
    shape = (1, -1, *[1] * (x.ndim - 2))
    return _affine(out, None if weight is None else weight.view(shape),
                   None if bias is None else bias.view(shape))


def _affine(x, weight, bias):
    x = x if weight is None else x * weight
    return x if bias is None else x + bias


def pair_max(z: torch.Tensor, dim: int) -> torch.Tensor:
    """The larger of the maxima of the ``x`` and ``x0`` rows along ``dim``, detached, stacked
    for both (``-inf`` rows give 0)."""
    top = torch.maximum(*z.detach().amax(dim, keepdim=True).chunk(2))
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    return torch.cat([top, top])


def softmax(z: torch.Tensor, dim: int) -> torch.Tensor:
    """``e / sum(e)`` with ``e = exp(z - c)``. Underflows (a NaN result) only if the two rows'
    logits differ by more than the exponent range (about 87 in float32)."""
    e = _rescale(z - pair_max(z, dim), torch.exp)
    return _product(e, _rescale(e.sum(dim, keepdim=True), torch.reciprocal))


def log_softmax(z: torch.Tensor, dim: int) -> torch.Tensor:
    """``z - c - log(sum exp(z - c))``."""
    shifted = z - pair_max(z, dim)
    return shifted - _rescale(_rescale(shifted, torch.exp).sum(dim, keepdim=True), torch.log)


def attention(q, k, v, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    """``softmax(q k^T * scale + mask) v`` as ``F.scaled_dot_product_attention`` computes it
    (dropout is not applied: the model must be in eval mode). Boolean masks keep the ``True``
    positions; float masks are added."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    if enable_gqa and k.shape[-3] != q.shape[-3]:
        repeats = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(repeats, -3), v.repeat_interleave(repeats, -3)
    scores = bilinear(torch.matmul, q * scale, k.transpose(-2, -1))
    if is_causal:
        attn_mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool,
                               device=q.device).tril()
    if attn_mask is not None:
        scores = (scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool
                  else scores + attn_mask)
    return bilinear(torch.matmul, softmax(scores, -1), v)


def multi_head_attention(query, key, value, num_heads, in_proj_weight, in_proj_bias,
                         out_proj_weight, out_proj_bias, key_padding_mask=None,
                         need_weights=True, attn_mask=None, use_separate_proj_weight=False,
                         q_proj_weight=None, k_proj_weight=None, v_proj_weight=None,
                         average_attn_weights=True, is_causal=False):
    """``F.multi_head_attention_forward`` on batch-first ``(N, T, E)`` inputs, without
    ``bias_k``/``bias_v``, zero attention or static keys (the caller checks); returns
    ``(output (N, T, E), weights or None)``."""
    n, t, e = query.shape
    s, d = key.shape[1], e // num_heads
    weights = ((q_proj_weight, k_proj_weight, v_proj_weight) if use_separate_proj_weight
               else in_proj_weight.chunk(3))
    biases = (None,) * 3 if in_proj_bias is None else in_proj_bias.chunk(3)
    q, k, v = (F.linear(x, w, b).view(n, -1, num_heads, d).transpose(1, 2)
               for x, w, b in zip((query, key, value), weights, biases))
    mask = torch.zeros(1, 1, t, s, dtype=query.dtype, device=query.device)
    if attn_mask is not None:
        shape = (1, 1, t, s) if attn_mask.ndim == 2 else (-1, num_heads, t, s)  # (N * h, t, s)
        mask = mask + additive_mask(attn_mask, query.dtype).to(query.dtype).view(shape)
    elif is_causal:
        mask = mask.masked_fill(~torch.ones(t, s, dtype=torch.bool).tril(), float("-inf"))
    if key_padding_mask is not None:
        padding = additive_mask(key_padding_mask, query.dtype).to(query.dtype)
        mask = mask + padding.view(n, 1, 1, s)
    scores = bilinear(torch.matmul, q / math.sqrt(d), k.transpose(-2, -1)) + mask
    probabilities = softmax(scores, -1)
    out = bilinear(torch.matmul, probabilities, v).transpose(1, 2).reshape(n, t, e)
    out = F.linear(out, out_proj_weight, out_proj_bias)
    if not need_weights:
        return out, None
    return out, probabilities.mean(1) if average_attn_weights else probabilities

