"""RISE: Randomized Input Sampling for Explanation (Petsiuk, Das, Saenko, 2018)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..._validation import check_positive_int, check_probability
from ..._scorer import Scorer
from .base import MaskExplainer, inpainting


def linear_resize_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """``(out_size, in_size)`` weights of a 1-D linear resize, pixel-area aligned
    (``align_corners=False``), mirror-reflected past the edges. ``R @ v`` equals
    ``skimage.transform.resize(v, out_size, order=1, mode="reflect")``, i.e.
    ``scipy.ndimage.zoom(v, out/in, order=1, mode="mirror", grid_mode=True)``: the upsampling of
    the RISE reference code (eclique/RISE ``generate_masks``)."""
    coords = (torch.arange(out_size, dtype=torch.float64) + 0.5) * in_size / out_size - 0.5
    low = torch.floor(coords)
    frac = coords - low
    weights = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)
    for index, weight in ((low, 1 - frac), (low + 1, frac)):
        index = index.long()
        if in_size > 1:  # mirror about the first and last samples: -1 -> 1, n -> n - 2
            index = index.abs()
            index = torch.where(index > in_size - 1, 2 * (in_size - 1) - index, index)
        weights.index_put_((rows, index.clamp(0, in_size - 1)), weight, accumulate=True)
    return weights.float()


@dataclass
class RiseMaskDesign:
    """RISE masks (Petsiuk et al., 2018, Sec. 3.2), drawn once, built at full size on demand.

    Binary ``grid_size x grid_size`` grids with ``P(1) = p``; each is upsampled bilinearly to
    ``((grid_size + 1) * cell_h, (grid_size + 1) * cell_w)`` with ``cell = ceil(size / grid_size)``
    and cropped to ``(H, W)`` at its own random offset in ``[0, cell_h) x [0, cell_w)`` (rows and
    columns drawn independently, one pair per mask).
    """

    grids: torch.Tensor        # (nb_samples, grid_size, grid_size) in {0, 1}
    row_offsets: torch.Tensor  # (nb_samples,) long
    col_offsets: torch.Tensor  # (nb_samples,) long
    size: tuple[int, int]

    @classmethod
    def draw(cls, nb_samples: int, grid_size: int, probability: float, size: tuple[int, int],
             generator: torch.Generator) -> "RiseMaskDesign":
        cells = [math.ceil(side / grid_size) for side in size]
        grids = (torch.rand(nb_samples, grid_size, grid_size, generator=generator)
                 < probability).float()
        rows = torch.randint(0, cells[0], (nb_samples,), generator=generator)
        cols = torch.randint(0, cells[1], (nb_samples,), generator=generator)
        return cls(grids, rows, cols, tuple(size))

    def __len__(self) -> int:
        return len(self.grids)

    def masks(self, indices: slice) -> torch.Tensor:
        """Full-size masks ``(m, H, W)`` in ``[0, 1]`` for ``indices``:
        ``M = R_rows[offset_r : offset_r + H] @ grid @ R_cols[offset_c : offset_c + W]^T``."""
        grid_size = self.grids.shape[-1]
        height, width = self.size
        up_h = (grid_size + 1) * math.ceil(height / grid_size)
        up_w = (grid_size + 1) * math.ceil(width / grid_size)
        rows = linear_resize_matrix(grid_size, up_h)
        cols = linear_resize_matrix(grid_size, up_w)
        row_index = self.row_offsets[indices, None] + torch.arange(height)   # (m, H)
        col_index = self.col_offsets[indices, None] + torch.arange(width)    # (m, W)
        return rows[row_index] @ self.grids[indices] @ cols[col_index].transpose(1, 2)


class Rise(MaskExplainer):
    """RISE (Petsiuk et al., 2018): the saliency of a pixel is the average score of randomly
    masked copies of the input, weighted by how much each mask keeps of that pixel::

        saliency = sum_i f_c(x * M_i + (1 - M_i) * baseline) * M_i / (nb_samples * p)

    Images: ``M_i`` are smooth masks, one shared set for all inputs of a call: binary
    ``grid_size x grid_size`` grids with ``P(1) = p = preservation_probability``, upsampled
    bilinearly to ``(grid_size + 1) * ceil(H / grid_size)`` rows (likewise columns) and cropped to
    ``H x W`` at a random offset drawn for each mask on its own (see
    :class:`RiseMaskDesign`). Tabular ``(N, F)``: ``M_i`` are Bernoulli
    ``(p)`` draws per feature (``grid_size`` unused).

    ``f_c`` is the probability of class ``c`` (softmax of the logits), as in the paper, when
    ``probabilities=True`` (default; refused for a model without classes, see
    :mod:`pellucid.selectors`); ``False`` scores the raw outputs. ``baseline``: what masked
    parts become: ``0.0`` (the paper's ``x * M``), a number, a tensor broadcastable to the
    inputs (e.g. a background mean for tabular data), ``"blur"`` or ``"mean"`` (see
    :mod:`pellucid._baselines`). ``masking="layer"``: binary masks (``M_i >= 1/2``) and the
    removed pixels masked at every layer of a CNN instead of filled (see
    :class:`~pellucid.explain.perturbation.base.MaskExplainer`); the sum is divided by the
    number of masks that keep each pixel, ``E[f | pixel kept]`` (the paper's Eq. 4), since
    thresholded masks keep a pixel with a frequency that is not exactly ``p`` (0.073 for
    ``p = 0.1``, 0.835 for ``p = 0.8``).

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

    def _explain(self, x: torch.Tensor, scorer: Scorer) -> torch.Tensor:
        x = x.to(self._model.device)  # perturbed copies are built where the model runs
        masks_for = self._mask_source(x)
        saliency = torch.zeros(len(x), scorer.nb_targets, *x.shape[2 if x.ndim == 4 else 1:])
        layer = self.masking == "layer"
        kept = torch.zeros(saliency.shape[2:])  # how many masks keep each pixel (layer masking)

        def accumulate(images: slice, masks: torch.Tensor, scores: torch.Tensor):
            # saliency[k, t] += sum_m scores[m, k, t] * masks[m]
            weighted = torch.einsum("mkt,mp->ktp", scores.to(masks), masks.flatten(1))
            saliency[images] += weighted.reshape(saliency[images].shape).cpu()
            if layer and images.start == 0:  # each mask once
                kept.add_(masks.sum(0).cpu())

        self._masked_scores(x, scorer, self.nb_samples, masks_for, inpainting(x, self._fill()),
                           accumulate)
        if layer:  # E[f | pixel kept]: binary masks keep a pixel with
            return saliency / kept.clamp(min=1)  # a frequency that is not exactly p
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
