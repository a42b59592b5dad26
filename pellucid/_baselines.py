"""Reference inputs (``baseline``).

``baseline`` is, everywhere in pellucid:
- a number: a constant input;
- a tensor/array broadcastable to the inputs (one reference per input, or one for all);
- ``"blur"``: each image blurred as in the RISE reference code (:func:`gaussian_blur`,
  kernel 11, sigma 5); for tabular inputs this is not defined and raises;
- ``"mean"``: each image's per-channel mean; for tabular inputs the per-feature mean of the
  batch being explained (pass a background mean as a tensor to choose another).
"""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch

from ._imaging import gaussian_blur
from ._validation import check_finite

BASELINE_NAMES = ("blur", "mean")


def check_baseline(baseline: Any) -> Any:
    """Validate the kind of ``baseline`` and that it is finite (its shape is checked against
    inputs later)."""
    if isinstance(baseline, str):
        if baseline not in BASELINE_NAMES:
            raise ValueError(f"baseline must be a number, a tensor, or one of {BASELINE_NAMES}; "
                             f"got {baseline!r}")
        return baseline
    if isinstance(baseline, numbers.Real) and not isinstance(baseline, bool):
        check_finite(torch.tensor(float(baseline)), "baseline")
        return float(baseline)
    if isinstance(baseline, (torch.Tensor, np.ndarray)):
        check_finite(torch.as_tensor(baseline), "baseline")
        return baseline
    raise TypeError(f"baseline must be a number, a tensor, or one of {BASELINE_NAMES}; "
                    f"got {type(baseline).__name__}")


def make_baseline(baseline: Any, x: torch.Tensor) -> torch.Tensor:
    """The reference input for each of ``x``: a new tensor of ``x``'s shape, dtype and
    device (a tensor ``baseline`` on another device is moved there)."""
    if isinstance(baseline, str):
        if baseline == "blur":
            if x.ndim != 4:
                raise ValueError("baseline 'blur' needs images (N, C, H, W); "
                                 f"got shape {tuple(x.shape)}")
            return gaussian_blur(x)
        if x.ndim == 4:
            return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
        return x.mean(dim=0, keepdim=True).expand_as(x).clone()
    if isinstance(baseline, numbers.Real):
        return torch.full_like(x, float(baseline))
    reference = torch.as_tensor(baseline).to(x.device, x.dtype)
    try:
        return torch.broadcast_to(reference, x.shape).clone()
    except RuntimeError as error:
        raise ValueError(f"baseline of shape {tuple(reference.shape)} does not broadcast to "
                         f"inputs of shape {tuple(x.shape)}") from error
