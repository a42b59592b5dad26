"""What RISE and Sobol attribution share: random masks, and the batched loop that runs the model
on masked copies of every input.

Masks are drawn once per ``explain`` call (low-resolution, ``O(nb_masks * grid_size^2)``
numbers) and shared by all inputs of the call. Full-resolution masks and perturbed inputs are
built one forward pass at a time (a block of masks times inputs, at most ``batch_size`` pairs,
written into one reused buffer), so memory never grows with ``nb_samples`` / ``nb_design``, and
the result does not depend on ``batch_size``.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

from ..._baselines import check_baseline, make_baseline
from ..._batching import iter_slices, masked_scores
from ..._layer_masking import check_layer_masking
from ..._scorer import Scorer
from ..base import Explainer


class MaskExplainer(Explainer):
    """Base of the black-box methods that score masked copies of each input (RISE, Sobol).

    ``probabilities``: score the softmax of the model's outputs rather than its raw outputs
    (the policy of :mod:`pellucid.selectors`: refused for a model without classes). Every
    target of a call (``(N, T)`` targets) is scored from the same forward passes.

    ``masking="layer"`` (Balasubramanian & Feizi, 2023; images and torch Modules): the masks
    are made binary (a pixel is kept where ``M >= 1/2``) and the removed pixels are masked at
    every layer of the CNN instead of filled (:mod:`pellucid._layer_masking`; ``baseline``
    unused). Layer masking has no soft masks: a position is seen or not.
    """

    multi_target = True

    def __init__(self, model: Any, *, baseline: Any = 0.0, probabilities: bool = True,
                 masking: str = "fill", **common: Any):
        super().__init__(model, **common)
        check_layer_masking(masking, self._model)
        self.masking = masking
        self.baseline = check_baseline(baseline)
        self.probabilities = bool(probabilities)

    def _check_inputs(self, x: torch.Tensor) -> None:
        check_layer_masking(self.masking, self._model, x)
        if self.masking == "fill":
            make_baseline(self.baseline, x)  # wrong shape or kind raises before any pass

    def _fill(self) -> Any:
        """What the removed pixels become in the inputs: the baseline, or 0 under layer
        masking (masked at every layer, their value is never read)."""
        return 0.0 if self.masking == "layer" else self.baseline

    def _masked_scores(self, x: torch.Tensor, scorer: Scorer, nb_masks: int,
                       masks_for: Callable[[slice], torch.Tensor], perturb: Perturbation,
                       consume: Callable[[slice, torch.Tensor, torch.Tensor], None]
                       | None = None) -> torch.Tensor:
        """Target scores ``(nb_masks, N, T)`` of the model on every (mask, input) pair.

        Each forward pass is a block of ``m`` masks times ``k`` inputs (``m * k <= batch_size``):
        ``masks_for(mask_slice)`` builds the block's masks ``(m, ...)``, ``perturb(image_slice,
        masks)`` its ``m * k`` inputs, mask-major. ``consume(image_slice, masks, scores)``, if
        given, sees each block's scores ``(m, k, T)`` (to accumulate without storing masks).
        """
        n = len(x)
        images_per_pass = min(n, self.batch_size)
        masks_per_pass = max(1, self.batch_size // images_per_pass)
        scores = torch.empty(nb_masks, n, scorer.nb_targets)
        layer = self.masking == "layer"
        for mask_slice in iter_slices(nb_masks, masks_per_pass, self.progress,
                                      type(self).__name__):
            masks = masks_for(mask_slice).to(x.device)
            if layer:
                masks = (masks >= 0.5).to(masks)
            for image_slice in iter_slices(n, images_per_pass):
                k = image_slice.stop - image_slice.start
                rows = torch.arange(image_slice.start, image_slice.stop).repeat(len(masks))
                keep = masks.repeat_interleave(k, 0) if layer else None  # mask-major items
                block = masked_scores(scorer, perturb(image_slice, masks), rows, keep)
                block = block.view(len(masks), -1, block.shape[1])
                scores[mask_slice, image_slice] = block
                if consume is not None:
                    consume(image_slice, masks, block)
        return scores


Perturbation = Callable[[slice, torch.Tensor], torch.Tensor]


def _pair_up(masks: torch.Tensor, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks ``(m, ...)`` and inputs ``(k, ...)`` as broadcastable ``(m, 1, [1,] ...)`` and
    ``(1, k, ...)``: a mask covers every channel of an image."""
    masks = masks[:, None, None] if inputs.ndim == 4 else masks[:, None]
    return masks, inputs[None]


class _Buffer:
    """One block of perturbed inputs (or masks), reused from pass to pass: a fresh tensor of a
    whole batch of images each pass costs as much in page faults as writing it."""

    def __init__(self):
        self.storage = torch.empty(0)

    def view(self, masks: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Room for ``len(masks)`` copies of ``inputs``: ``(m, *inputs.shape)``."""
        return self.take((len(masks), *inputs.shape), inputs.dtype, inputs.device)

    def take(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
             ) -> torch.Tensor:
        """An uninitialised ``shape`` tensor on the buffer's storage, grown when too small."""
        size = math.prod(shape)
        if (self.storage.numel() < size or self.storage.device != torch.device(device)
                or self.storage.dtype != dtype):
            self.storage = self.allocate(size, dtype, device)
        return self.storage[:size].view(shape)

    @staticmethod
    def allocate(size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """``torch.empty(size)``, but from ``np.empty`` on the CPU: numpy asks Linux for huge
        pages for large arrays (``madvise(MADV_HUGEPAGE)``), so writing a fresh 38 MB batch
        (64 x 3 x 224 x 224) the first time costs 6 ms instead of 27 ms, and freeing it 0.3 ms
        instead of 3.5 ms (about half of SobolAttribution's own time on a small CNN)."""
        numpy_dtype = _NUMPY_DTYPES.get(dtype)
        if torch.device(device).type != "cpu" or numpy_dtype is None:
            return torch.empty(size, dtype=dtype, device=device)
        return torch.from_numpy(np.empty(size, dtype=numpy_dtype))


_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64,
                 torch.float16: np.float16}


def inpainting(x: torch.Tensor, baseline: Any) -> Perturbation:
    """``x * M + (1 - M) * reference = reference + M * (x - reference)``, ``reference`` the
    ``baseline`` of each input (:func:`pellucid._baselines.make_baseline`); one fused pass."""
    reference = make_baseline(baseline, x)
    difference = x - reference
    buffer = _Buffer()

    def perturb(images: slice, masks: torch.Tensor) -> torch.Tensor:
        keep, diff = _pair_up(masks, difference[images])
        out = buffer.view(masks, difference[images])
        return torch.addcmul(reference[images][None], keep, diff, out=out).flatten(0, 1)
    return perturb


def amplitude(x: torch.Tensor, sigma: float) -> Perturbation:
    """``x * (M - 1/2) * sigma`` (the amplitude operator of Fel et al.'s reference code)."""
    buffer = _Buffer()

    def perturb(images: slice, masks: torch.Tensor) -> torch.Tensor:
        scale, inputs = _pair_up((masks - 0.5) * sigma, x[images])
        out = buffer.view(masks, x[images])
        return torch.mul(inputs, scale, out=out).flatten(0, 1)
    return perturb
