"""Occlusion (Zeiler & Fergus, 2014): how much the target score drops when a patch is hidden."""
from __future__ import annotations

import numbers
from typing import Any

import torch

from ..._baselines import check_baseline, make_baseline
from ..._batching import score_generated
from ..._layer_masking import check_layer_masking
from ..._scorer import Scorer
from ..base import Explainer


class Occlusion(Explainer):
    """Occlusion (Zeiler & Fergus, 2014), black-box: torch modules, scikit-learn, callables.

    A window slides over the input; each position gives the drop ``f_c(x) - f_c(x_p)`` where
    ``x_p`` is ``x`` with the window replaced by the baseline (all channels of a pixel together).
    The attribution of a pixel (feature) is the average drop over the windows covering it
    (Captum's averaging convention), so overlapping windows do not inflate the map. For a linear
    tabular model, ``patch_size=1`` and baseline 0, this is exactly ``w_c * x``.

    Windows start at ``0, stride, 2 * stride, ...``; when the stride does not reach the border
    exactly, one last window flush with the border is added, so every pixel is covered and every
    window has the same size (Captum crops its last window instead; both agree whenever
    ``(size - patch) % stride == 0``).

    Args:
        patch_size: images: an int or ``(height, width)``, default 8 (at most the image size);
            tabular: an int number of consecutive features, default 1.
        stride: step between windows, an int or ``(height, width)``; default ``patch_size``
            (windows that do not overlap).
        baseline: what hides a patch: a number, a tensor, ``"mean"`` or ``"blur"``.
        probabilities: explain the drop in probability (softmax of a Module's logits) instead of
            the drop in the model's raw scores (the default: logits for a Module; a scikit-learn
            estimator's raw scores are already ``predict_proba`` when it has one).
        masking: ``"fill"`` (the window becomes the baseline) or ``"layer"`` (layer masking,
            Balasubramanian & Feizi 2023: the window is masked at every layer of a CNN, so the
            model never sees a fill; :mod:`pellucid._layer_masking`;
            images and torch Modules only; ``baseline`` is then unused).

    Cost: ``N * (windows + 1)`` forward passes, ``batch_size`` occluded copies at a time.
    """

    default_image_patch = 8

    def __init__(self, model: Any, *, patch_size: Any = None, stride: Any = None,
                 baseline: Any = 0.0, probabilities: bool = False, masking: str = "fill",
                 **common: Any):
        super().__init__(model, **common)
        check_layer_masking(masking, self._model)
        self.masking = masking
        self.patch_size = check_window("patch_size", patch_size)
        self.stride = check_window("stride", stride)
        self.baseline = check_baseline(baseline)
        self.probabilities = bool(probabilities)

    def _check_inputs(self, x: torch.Tensor) -> None:
        self._windows(x.shape)  # sizes that do not fit raise here, before any forward pass
        check_layer_masking(self.masking, self._model, x)
        if self.masking == "fill":  # a layer mask reads no baseline
            make_baseline(self.baseline, x)

    multi_target = True

    def _explain(self, x: torch.Tensor, scorer: Scorer) -> torch.Tensor:
        images = as_images(x.to(self._model.device))
        fill = self.baseline if self.masking == "fill" else 0.0
        baseline = as_images(make_baseline(fill, x).to(images.device))
        rows, cols, (height, width) = self._windows(x.shape)
        # copy 0 of each input is the input itself (its window starts past the border)
        row_starts = [images.shape[2], *rows.tolist()]
        col_starts = [images.shape[3], *cols.tolist()]
        k = len(row_starts)

        buffer = torch.empty(0, *images.shape[1:], device=images.device)

        def make_inputs(s: slice) -> tuple[torch.Tensor, torch.Tensor]:
            # one copy of the inputs into a reused buffer, then each window's slice overwritten
            # by the baseline (copy 0 has its window past the border: an empty slice)
            nonlocal buffer
            sample = torch.arange(s.start, s.stop) // k
            window = torch.arange(s.start, s.stop) % k
            if len(buffer) < len(sample):
                buffer = torch.empty(len(sample), *images.shape[1:], device=images.device)
            out = buffer[:len(sample)]
            torch.index_select(images, 0, sample.to(images.device), out=out)
            for j, (n, w) in enumerate(zip(sample.tolist(), window.tolist())):
                r, c = row_starts[w], col_starts[w]
                out[j, :, r:r + height, c:c + width] = baseline[n, :, r:r + height, c:c + width]
            return out.view(len(sample), *x.shape[1:]), sample

        def layer_masked(s: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            # the same copies, and each window masked at every layer (its fill never read)
            batch, sample = make_inputs(s)
            keep = torch.ones(len(sample), *images.shape[2:], device=images.device)
            for j, w in enumerate((torch.arange(s.start, s.stop) % k).tolist()):
                keep[j, row_starts[w]:row_starts[w] + height,
                     col_starts[w]:col_starts[w] + width] = 0
            return batch, sample, keep

        scores = score_generated(scorer, len(x) * k,
                                 layer_masked if self.masking == "layer" else make_inputs,
                                 batch_size=self.batch_size, progress=self.progress,
                                 desc="Occlusion")
        scores = scores.view(len(x), k, -1)              # (N, 1 + windows, T)
        drops = scores[:, :1] - scores[:, 1:]
        total = torch.zeros(len(x), scores.shape[2], images.shape[2], images.shape[3])
        count = torch.zeros(images.shape[2], images.shape[3])
        for drop, row, col in zip(drops.unbind(1), row_starts[1:], col_starts[1:]):
            total[..., row:row + height, col:col + width] += drop[..., None, None]
            count[row:row + height, col:col + width] += 1
        heatmaps = total / count                         # (N, T, H, W)
        return heatmaps if x.ndim == 4 else heatmaps[:, :, 0]

    def _windows(self, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """Top-left corners (rows, cols) of every window and the window size, on the spatial
        view of the inputs (tabular ``(N, F)`` is seen as images ``(N, 1, 1, F)``)."""
        if len(shape) == 2:
            for name, value in (("patch_size", self.patch_size), ("stride", self.stride)):
                if value is not None and not isinstance(value, numbers.Integral):
                    raise ValueError(f"{name} for tabular inputs (N, F) must be an int number of "
                                     f"features, got {value!r}")
            size, patch = (1, shape[1]), (1, self.patch_size or 1)
            stride = patch if self.stride is None else (1, int(self.stride))
        else:
            size = (shape[2], shape[3])
            patch = pair(self.patch_size, tuple(min(self.default_image_patch, s) for s in size))
            stride = pair(self.stride, patch)
        if patch[0] > size[0] or patch[1] > size[1]:
            raise ValueError(f"patch_size {self.patch_size!r} is larger than the inputs: window "
                             f"{patch} on inputs of shape {tuple(shape)}")
        starts = [window_starts(length, p, s) for length, p, s in zip(size, patch, stride)]
        rows, cols = torch.meshgrid(torch.tensor(starts[0]), torch.tensor(starts[1]),
                                    indexing="ij")
        return rows.reshape(-1), cols.reshape(-1), patch


def check_window(name: str, value: Any) -> Any:
    """``None``, an int >= 1 or a pair of ints >= 1 (returned unchanged, as given)."""
    values = value if isinstance(value, (tuple, list)) else (value,)
    ok = value is None or (len(values) in (1, 2) and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in values))
    if not ok:
        raise ValueError(f"{name} must be an int >= 1 or a pair (height, width) of them, "
                         f"got {value!r}")
    return value


def pair(value: Any, default: Any) -> tuple[int, int]:
    if value is None:
        return default
    if isinstance(value, numbers.Integral):
        return int(value), int(value)
    return (int(value[0]), int(value[-1]))


def window_starts(length: int, patch: int, stride: int) -> list[int]:
    """``0, stride, ...`` while the window fits, plus a last window flush with the border."""
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return starts


def as_images(x: torch.Tensor) -> torch.Tensor:
    """Images as they are; tabular ``(N, F)`` as ``(N, 1, 1, F)`` (a view)."""
    return x if x.ndim == 4 else x[:, None, None, :]
