"""RISE: Randomized Input Sampling for Explanation (Petsiuk, Das, Saenko, 2018)."""
from __future__ import annotations

from typing import Any

import torch

from .._validation import check_positive_int, check_probability
from ._masks import MaskExplainer, RiseMaskDesign, inpainting


class Rise(MaskExplainer):
    """RISE (Petsiuk et al., 2018): the saliency of a pixel is the average score of randomly
    masked copies of the input, weighted by how much each mask keeps of that pixel::

        saliency = sum_i f_c(x * M_i + (1 - M_i) * baseline) * M_i / (nb_samples * p)

    Images: ``M_i`` are smooth masks, one shared set for all inputs of a call: binary
    ``grid_size x grid_size`` grids with ``P(1) = p = preservation_probability``, upsampled
    bilinearly to ``(grid_size + 1) * ceil(H / grid_size)`` rows (likewise columns) and cropped to
    ``H x W`` at a random offset drawn for each mask on its own (see
    :class:`~pellucid.explain._masks.RiseMaskDesign`). Tabular ``(N, F)``: ``M_i`` are Bernoulli
    ``(p)`` draws per feature (``grid_size`` unused).

    ``f_c`` is the probability of class ``c`` (softmax of the logits), as in the paper, when
    ``probabilities=True`` (default; a single-output model is scored raw); ``False`` scores the raw
    outputs. ``baseline``: what masked parts become: ``0.0`` (the paper's ``x * M``), a number, a
    tensor broadcastable to the inputs (e.g. a background mean for tabular data), ``"blur"`` or
    ``"mean"`` (see :mod:`pellucid._baselines`).

    Cost: ``nb_samples`` forward passes per input, ``batch_size`` at a time.
    """

    def __init__(self, model: Any, *, nb_samples: int = 4000, grid_size: int = 7,
                 preservation_probability: float = 0.5, baseline: Any = 0.0,
                 probabilities: bool = True, **common: Any):
        super().__init__(model, baseline=baseline, probabilities=probabilities, **common)
        self.nb_samples = check_positive_int("nb_samples", nb_samples)
        self.grid_size = check_positive_int("grid_size", grid_size)
        self.preservation_probability = check_probability("preservation_probability",
                                                          preservation_probability)

    def _explain(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = x.to(self._model.device)  # perturbed copies are built where the model runs
        masks_for = self._mask_source(x)
        saliency = torch.zeros((len(x), *x.shape[2:]) if x.ndim == 4 else x.shape)

        def accumulate(images: slice, masks: torch.Tensor, scores: torch.Tensor):
            # saliency[k] += sum_m scores[m, k] * masks[m]
            weighted = scores.T.to(masks) @ masks.flatten(1)
            saliency[images] += weighted.reshape(saliency[images].shape).cpu()

        self._masked_scores(x, targets, self.nb_samples, masks_for, inpainting(x, self.baseline),
                           accumulate)
        return saliency / (self.nb_samples * self.preservation_probability)

    def _mask_source(self, x: torch.Tensor):
        """``masks_for(slice)`` over this call's masks: RISE grids for images, Bernoulli per
        feature for tabular inputs."""
        generator = self._generator()
        if x.ndim == 2:
            masks = (torch.rand(self.nb_samples, x.shape[1], generator=generator)
                     < self.preservation_probability).float()
            return lambda indices: masks[indices]
        design = RiseMaskDesign.draw(self.nb_samples, self.grid_size,
                                     self.preservation_probability, tuple(x.shape[2:]), generator)
        return design.masks
