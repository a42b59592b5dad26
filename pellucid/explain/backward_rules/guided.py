"""Guided Backprop, Deconvnet and Guided Grad-CAM: gradients whose ReLU backward is replaced
(see ``relu_rules``)."""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..._scorer import Scorer
from ..base import WhiteBoxExplainer
from ..cam.gradient_cams import GradCAM
from ..gradients.base import AggregatedGradients
from .relu_rules import DeconvReLU, GuidedReLU, ReLURuleMode


class GuidedBackprop(AggregatedGradients):
    """Guided Backprop (Springenberg et al., 2015): the gradient of ``f_c`` w.r.t. the input in
    which every ReLU passes back ``1[x > 0] * max(R, 0)`` (only positive signal through active
    units). Functional, reused and in-place ReLUs get the rule too; no module hook is used.

    Heatmaps: maximum over channels of the absolute value (as Saliency); ``attribute`` gives the
    signed per-element values.
    """

    channel_reduction = "abs_max"
    relu_rule: type[torch.autograd.Function] = GuidedReLU

    def _attributions(self, x: torch.Tensor, scorer: Scorer) -> torch.Tensor:
        with ReLURuleMode(self.relu_rule):
            return super()._attributions(x, scorer)

    def _combine(self, x, means, context):
        return means[1]


class Deconvolution(GuidedBackprop):
    """Deconvnet (Zeiler & Fergus, 2014) as a backward rule: every ReLU passes back
    ``max(R, 0)``, whatever its input's sign. Heatmaps as :class:`GuidedBackprop`."""

    relu_rule = DeconvReLU


class GuidedGradCAM(WhiteBoxExplainer):
    """Guided Grad-CAM (Selvaraju et al., 2017): Guided Backprop times the Grad-CAM map of
    ``target_layer`` upsampled to the input, ``A_i = GBP_i * cam(h_i, w_i)`` (the map not
    min-max scaled, as Captum's ``GuidedGradCam``; upsampling bilinear, as pellucid's CAMs).

    Parameters:
        target_layer, reshape: as :class:`~pellucid.explain.cam.base.BaseCAM` (``None``: the
            last convolutional stage).
        **common: ``batch_size``, ``device``, ``progress``.

    Heatmaps: maximum over channels of the absolute value; ``attribute`` gives ``A``.
    """

    channel_reduction = "abs_max"
    input_kinds = ("images",)

    def __init__(self, model: Any, *, target_layer: Any = None,
                 reshape: Callable | None = None, **common: Any):
        super().__init__(model, **common)
        self._parts(target_layer, reshape)  # checks target_layer and reshape now
        self.target_layer, self.reshape = target_layer, reshape

    def _parts(self, target_layer: Any, reshape: Callable | None
               ) -> tuple[GuidedBackprop, GradCAM]:
        """The two explainers, made per call (no per-call state on ``self``)."""
        common = {"batch_size": self.batch_size, "device": self.device,
                  "progress": self.progress}
        return (GuidedBackprop(self.model, **common),
                GradCAM(self.model, target_layer=target_layer, reshape=reshape, normalize=False,
                        **common))

    def _attributions(self, x: torch.Tensor, scorer: Scorer) -> torch.Tensor:
        guided, cam = self._parts(self.target_layer, self.reshape)
        return guided._attributions(x, scorer) * cam._explain(x, scorer)[:, None]
