"""What removed pixels or features are replaced with (the "substrate" of RISE's causal metrics).

``"blur"`` here is the blur of the RISE reference code (eclique/RISE, ``evaluation.gkern``):
the kernel is ``scipy.ndimage.gaussian_filter(dirac_11x11, sigma=5)``, i.e. a Gaussian of
radius ``int(4 * sigma + 0.5) = 20`` folded back into the 11 x 11 window by scipy's
``mode="reflect"``, which makes it much flatter than an 11-tap truncated Gaussian (centre tap
0.0088 against 0.0120; :func:`pellucid._baselines.gaussian_blur`, used by the explainers, is the
truncated one). It is applied per channel with zero padding 5 (``conv2d(x, kern, padding=5)``).
Every other baseline (a number, a tensor, ``"mean"``) is :func:`pellucid._baselines.make_baseline`.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .._baselines import make_baseline


def rise_kernel1d(kernel_size: int = 11, sigma: float = 5.0, truncate: float = 4.0
                  ) -> torch.Tensor:
    """1-D factor of RISE's blur kernel: a unit impulse at the centre of ``kernel_size`` samples
    filtered by a Gaussian of radius ``int(truncate * sigma + 0.5)`` with half-sample symmetric
    (``reflect``) boundaries. Sums to 1; the 2-D kernel is its outer product with itself."""
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-offsets**2 / (2 * sigma**2))
    weights = weights / weights.sum()
    positions = (torch.arange(kernel_size)[:, None] + offsets.long()[None, :]) % (2 * kernel_size)
    reflected = torch.where(positions < kernel_size, positions, 2 * kernel_size - 1 - positions)
    return (weights * (reflected == kernel_size // 2)).sum(1).float()


def rise_blur(x: torch.Tensor, kernel_size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """RISE's insertion substrate: each channel of ``(N, C, H, W)`` images convolved with
    :func:`rise_kernel1d` along both axes, zero padding ``kernel_size // 2``."""
    kernel = rise_kernel1d(kernel_size, sigma).to(x.device, x.dtype)
    channels, pad = x.shape[1], kernel_size // 2
    horizontal = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    out = F.conv2d(x, horizontal, padding=(0, pad), groups=channels)
    return F.conv2d(out, vertical, padding=(pad, 0), groups=channels)


def make_substrate(baseline: Any, x: torch.Tensor) -> torch.Tensor:
    """The replacement input for each of ``x`` (a new tensor of ``x``'s shape)."""
    if isinstance(baseline, str) and baseline == "blur":
        if x.ndim != 4:
            raise ValueError("baseline 'blur' needs images (N, C, H, W); got inputs of shape "
                             f"{tuple(x.shape)}; use a number, 'mean' or a tensor for tabular data")
        return rise_blur(x)
    return make_baseline(baseline, x)
