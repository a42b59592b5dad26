"""Average drop and increase in confidence (Chattopadhay, Sarkar, Howlader & Balasubramanian,
2018, "Grad-CAM++"), computed as pytorch-grad-cam (``CamMultImageConfidenceChange``) and
TorchCAM (``ClassificationMetric``) do: the heatmap is min-max normalized to [0, 1] per input
(``(h - min h) / (max h - min h)``; a constant map becomes 0), the input is multiplied by it
(every channel of a pixel by the pixel's value; tabular: feature by feature) and the target's
confidence on that explanation map, ``O``, is compared with the confidence on the input, ``Y``.
Confidence is the softmax probability (``probabilities=True``, as both libraries) or the raw
output.
"""
from __future__ import annotations

from typing import Any

import torch

from .._batching import score_generated
from .base import MetricResult, ModelMetric


def normalized_maps(heatmaps: torch.Tensor) -> torch.Tensor:
    """Each map min-max scaled to [0, 1] (a constant map becomes 0), float64."""
    flat = heatmaps.reshape(len(heatmaps), -1).double()
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    span = high - low
    scaled = torch.where(span > 0, (flat - low) / span.clamp(min=1e-300), torch.zeros_like(flat))
    return scaled.view(heatmaps.shape)


class _ConfidenceChange(ModelMetric):
    """Scores ``Y`` (inputs) and ``O`` (inputs times the normalized map); subclasses implement
    ``_from_confidences(Y, O)``."""

    def __init__(self, model: Any, *, probabilities: bool = True, **common: Any):
        super().__init__(model, **common)
        self.probabilities = bool(probabilities)

    def _score(self, x, heatmaps, scorer):
        weights = normalized_maps(heatmaps).to(x.dtype)
        weights = weights[:, None] if x.ndim == 4 else weights

        def explanation_maps(s):
            return x[s] * weights[s], torch.arange(s.start, s.stop)

        before = self._input_scores(x, scorer).double()
        after = score_generated(scorer, len(x), explanation_maps, batch_size=self.batch_size,
                                progress=self.progress, desc=self.name)[:, 0].double()
        return MetricResult(self.name, self._from_confidences(before, after).numpy(),
                            higher_is_better=self.higher_is_better,
                            details={"confidence": before.numpy(),
                                     "confidence_on_map": after.numpy()})

    def _from_confidences(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class AverageDrop(_ConfidenceChange):
    """Average drop (Chattopadhay et al., 2018): per input ``max(0, Y - O) / Y``, the share of
    the confidence lost on the explanation map (the paper's percentage divided by 100); lower
    is better. ``relative=False`` gives pytorch-grad-cam's ``DropInConfidence``,
    ``max(0, Y - O)``. With ``relative`` and a confidence ``Y <= 0`` (raw outputs) the score is
    NaN.

    Parameters:
        probabilities: softmax probability of the target (True, default) or raw output.
        relative: divide by ``Y`` (True, default: the paper, TorchCAM) or not.
    """

    name = "average_drop"
    higher_is_better = False

    def __init__(self, model: Any, *, probabilities: bool = True, relative: bool = True,
                 **common: Any):
        super().__init__(model, probabilities=probabilities, **common)
        self.relative = bool(relative)

    def _from_confidences(self, before, after):
        drop = (before - after).clamp(min=0)
        if not self.relative:
            return drop
        return torch.where(before > 0, drop / before.clamp(min=1e-300),
                           torch.full_like(drop, float("nan")))


class AverageIncrease(_ConfidenceChange):
    """Increase in confidence (Chattopadhay et al., 2018): per input ``1[O > Y]``, so ``mean``
    is the share of inputs whose confidence rises on the explanation map (pytorch-grad-cam's
    ``IncreaseInConfidence``); higher is better.

    Parameters:
        probabilities: softmax probability of the target (True, default) or raw output.
    """

    name = "average_increase"
    higher_is_better = True

    def _from_confidences(self, before, after):
        return (after > before).double()
