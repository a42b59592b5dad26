"""Capture of a ViT's attention matrices while it runs, with no hook and no change to the model.

Inside ``with AttentionCapture() as capture:`` (a ``TorchFunctionMode``, as DeepLIFT's mode),
each attention computed by the forward pass is appended to ``capture.layers`` in call order,
whichever way it is computed:

- ``nn.MultiheadAttention`` (torchvision's ViT; called with ``need_weights=False`` or ``True``):
  ``F.multi_head_attention_forward`` is replaced by the same computation written out with
  ``F.linear`` and the attention below (masks, key padding, dropout, separate projection weights;
  ``add_bias_kv``, ``add_zero_attn`` and static keys are refused). A mode cannot run a function's
  own body while it still intercepts the calls inside, hence the rewrite. An active mode also
  switches off the module's fused fast path, which would otherwise skip the functional call.
- ``F.scaled_dot_product_attention`` (timm's fused attention): replaced by the same math written
  out, ``softmax(q k^T * scale + mask) @ v`` (boolean masks keep ``True``, float masks are
  added, ``is_causal``, ``scale``, ``enable_gqa`` and ``dropout_p`` as documented by torch),
  so that the attention matrix is a tensor of the graph and gradients reach it;
- attention written by hand (``(q @ k.transpose(-2, -1)) * scale``, ``.softmax(-1)``,
  ``attn_drop``, ``@ v``): a ``softmax`` over the last axis of a 4-D tensor ``(B, heads, L, S)``
  is an attention; a dropout of it and its product with the values are followed.

Each :class:`Attention` holds the softmax output exactly as the model uses it (so
``torch.autograd.grad`` w.r.t. it gives ``dy/dA``) and, when the product ``A @ v`` was seen, the
values. Function modes are thread-local in torch: another thread running the same model
meanwhile is not captured. Leaving the ``with`` block (also by an exception) removes the mode.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

SOFTMAX = (F.softmax, torch.softmax, torch.Tensor.softmax)
DROPOUT = (F.dropout, torch.dropout)
MATMUL = (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__)
MULTI_HEAD = inspect.signature(F.multi_head_attention_forward)


@dataclass
class Attention:
    """One attention call: ``weights`` as computed (``(B, heads, L, S)``; ``(B, L, S)`` for an
    SDPA call without a head axis), ``values`` ``(.., S, d)`` laid out alike (or ``None``)."""

    weights: torch.Tensor
    heads: int
    values: torch.Tensor | None = None
    mixers: list = field(default_factory=list)  # the tensors multiplied with the values

    def as_heads(self, tensor: torch.Tensor) -> torch.Tensor:
        """``weights`` (or a tensor laid out like them, e.g. their gradient) as
        ``(B, heads, L, S)``."""
        return tensor.reshape(-1, self.heads, *tensor.shape[-2:])

    def value_tokens(self, tensor: torch.Tensor) -> torch.Tensor:
        """``values`` (or their gradient) as tokens ``(B, S, heads * d)``, heads concatenated
        as the output projection reads them."""
        per_head = tensor.reshape(-1, self.heads, *tensor.shape[-2:])
        return per_head.transpose(1, 2).flatten(2)


class AttentionCapture(TorchFunctionMode):
    """Records every attention of the forward passes run inside the block (see the module
    docstring) in ``layers``."""

    def __init__(self):
        super().__init__()
        self.layers: list[Attention] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        # The mode is off while this runs: the calls below are the plain ones.
        kwargs = kwargs or {}
        if func is F.multi_head_attention_forward:
            return self._multi_head(**MULTI_HEAD.bind(*args, **kwargs).arguments)
        if func is F.scaled_dot_product_attention:
            return self._scaled_dot_product(*args, **kwargs)
        out = func(*args, **kwargs)
        if func in SOFTMAX and self._is_attention_softmax(args, kwargs, out):
            self.layers.append(Attention(out, out.shape[1], mixers=[out]))
        elif func in DROPOUT and self._mixes(args[0] if args else kwargs.get("input")):
            self.layers[-1].mixers.append(out)
        elif func in MATMUL and len(args) == 2 and self._mixes(args[0]):
            self.layers[-1].values = args[1]
        return out

    def _is_attention_softmax(self, args, kwargs, out) -> bool:
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        return isinstance(out, torch.Tensor) and out.ndim == 4 and dim in (-1, 3)

    def _mixes(self, tensor: Any) -> bool:
        return bool(self.layers) and any(tensor is t for t in self.layers[-1].mixers)

    def _scaled_dot_product(self, query, key, value, attn_mask=None, dropout_p=0.0,
                            is_causal=False, scale=None, enable_gqa=False):
        """``F.scaled_dot_product_attention`` written out (its documented reference code)."""
        length, source = query.shape[-2], key.shape[-2]
        if enable_gqa:
            key = key.repeat_interleave(query.shape[-3] // key.shape[-3], dim=-3)
            value = value.repeat_interleave(query.shape[-3] // value.shape[-3], dim=-3)
        scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
        logits = query @ key.transpose(-2, -1) * scale
        if is_causal:
            causal = torch.ones(length, source, dtype=torch.bool, device=query.device).tril()
            logits = logits.masked_fill(~causal, float("-inf"))
        if attn_mask is not None:
            logits = (logits.masked_fill(~attn_mask, float("-inf"))
                      if attn_mask.dtype == torch.bool else logits + attn_mask)
        weights = torch.softmax(logits, dim=-1)
        self.layers.append(Attention(weights, weights.shape[1] if weights.ndim == 4 else 1,
                                     values=value))
        if dropout_p > 0:
            weights = torch.dropout(weights, dropout_p, train=True)
        return weights @ value

    def _multi_head(self, query, key, value, embed_dim_to_check, num_heads, in_proj_weight,
                    in_proj_bias, bias_k, bias_v, add_zero_attn, dropout_p, out_proj_weight,
                    out_proj_bias, training=True, key_padding_mask=None, need_weights=True,
                    attn_mask=None, use_separate_proj_weight=False, q_proj_weight=None,
                    k_proj_weight=None, v_proj_weight=None, static_k=None, static_v=None,
                    average_attn_weights=True, is_causal=False):
        """``F.multi_head_attention_forward`` written out (inputs ``(L, B, E)`` or unbatched
        ``(L, E)``; ``is_causal`` is a hint there: ``attn_mask`` holds the causal mask)."""
        if bias_k is not None or bias_v is not None or add_zero_attn or (
                static_k is not None or static_v is not None):
            raise ValueError("attention capture does not support nn.MultiheadAttention with "
                             "add_bias_kv, add_zero_attn or static keys/values")
        batched = query.ndim == 3
        if not batched:
            query, key, value = query[:, None], key[:, None], value[:, None]
            key_padding_mask = None if key_padding_mask is None else key_padding_mask[None]
        length, batch, embed = query.shape
        if embed != embed_dim_to_check:
            raise ValueError(f"nn.MultiheadAttention expects embedding dimension "
                             f"{embed_dim_to_check}, got {embed}")
        weights = ((q_proj_weight, k_proj_weight, v_proj_weight) if use_separate_proj_weight
                   else in_proj_weight.chunk(3))
        biases = (None,) * 3 if in_proj_bias is None else in_proj_bias.chunk(3)
        q, k, v = (F.linear(t, w, b).reshape(len(t), batch, num_heads, -1).permute(1, 2, 0, 3)
                   for t, w, b in zip((query, key, value), weights, biases, strict=True))
        mask = additive_mask(attn_mask, query.dtype)
        if mask is not None and mask.ndim == 3:  # (B*heads, L, S)
            mask = mask.reshape(batch, num_heads, *mask.shape[1:])
        padding = additive_mask(key_padding_mask, query.dtype)
        if padding is not None:
            padding = padding[:, None, None, :]
            mask = padding if mask is None else mask + padding
        out = self._scaled_dot_product(q, k, v, mask, dropout_p if training else 0.0)
        out = F.linear(out.permute(2, 0, 1, 3).reshape(length, batch, embed), out_proj_weight,
                       out_proj_bias)
        attention = None
        if need_weights:
            attention = self.layers[-1].weights
            attention = attention.mean(1) if average_attn_weights else attention
        if not batched:
            out = out[:, 0]
            attention = None if attention is None else attention[0]
        return out, attention


def additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """``nn.MultiheadAttention``'s masks as numbers added to the logits: a boolean mask is
    ``True`` where attention is *not* allowed (-inf there); a float mask is added as it is."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
        mask, float("-inf"))
