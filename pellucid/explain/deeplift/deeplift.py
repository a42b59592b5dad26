"""DeepLift (one reference) and DeepLiftShap (a background of references)."""
from __future__ import annotations

from typing import Any

import torch

from ..._baselines import check_baseline, make_baseline
from ..._validation import as_float_tensor, check_finite
from .base import DeepLiftBase

class DeepLift(DeepLiftBase):
    """DeepLIFT (Shrikumar et al., 2017): ``C_i = (x_i - x0_i) m_i`` with Rescale or
    RevealCancel multipliers; ``sum_i C_i = f_c(x) - f_c(x0)``. See the module docstring.

    Parameters:
        baseline: the reference ``x0``: a number, a tensor broadcastable to the inputs,
            ``"blur"`` or ``"mean"`` (see ``pellucid._baselines``).
        rule: ``"rescale"`` or ``"reveal_cancel"``.
        **common: ``batch_size`` (rows per pass; each input takes 2, or 4 with RevealCancel),
            ``device``, ``progress`` (``seed`` is unused: the method is deterministic).

    Heatmaps: contributions summed over channels ``(N, H, W)``; ``(N, F)`` for tabular inputs.
    """

    def __init__(self, model: Any, *, baseline: Any = 0.0, rule: str = "rescale",
                 **common: Any):
        super().__init__(model, rule=rule, **common)
        self.baseline = check_baseline(baseline)

    def _check_inputs(self, x: torch.Tensor) -> None:
        make_baseline(self.baseline, x)  # shape and kind, early (finiteness: check_baseline)

    def _pairs(self, x):
        index = torch.arange(len(x))
        return make_baseline(self.baseline, x), index, index


class DeepLiftShap(DeepLiftBase):
    """DeepLIFT-SHAP (Lundberg & Lee, 2017): the mean over ``background`` samples ``b`` of
    single-reference DeepLIFT, ``C_i = mean_b (x_i - b_i) m_i(x, b)``, an estimate of the
    Shapley values of ``f_c`` with the background as the reference distribution;
    ``sum_i C_i = f_c(x) - mean_b f_c(b)``.

    Parameters:
        background: reference inputs ``(B, C, H, W)`` or ``(B, F)``, same sample shape as the
            inputs. Every (input, background sample) pair is one DeepLIFT pass, batched.
        rule: ``"rescale"`` or ``"reveal_cancel"``.
        **common: as :class:`DeepLift`.

    Heatmaps: contributions summed over channels ``(N, H, W)``; ``(N, F)`` for tabular inputs.
    """

    def __init__(self, model: Any, *, background: Any, rule: str = "rescale", **common: Any):
        super().__init__(model, rule=rule, **common)
        self.background = background
        sample = as_float_tensor(background, "background")
        if sample.ndim not in (2, 4) or len(sample) == 0:
            raise ValueError("background must hold reference inputs (B, C, H, W) or (B, F) with "
                             f"B >= 1; got shape {tuple(sample.shape)}")
        check_finite(sample, "background")

    def _background(self) -> torch.Tensor:
        return as_float_tensor(self.background, "background").cpu()

    def _check_inputs(self, x: torch.Tensor) -> None:
        shape = tuple(self._background().shape)
        if shape[1:] != tuple(x.shape[1:]):
            raise ValueError(f"background samples must have the inputs' sample shape "
                             f"{tuple(x.shape[1:])}; got background of shape {shape}")

    def _pairs(self, x):
        background = self._background()
        n, b = len(x), len(background)
        return background, torch.arange(n).repeat_interleave(b), torch.arange(b).repeat(n)
