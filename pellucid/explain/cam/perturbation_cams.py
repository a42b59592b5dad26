"""Gradient-free CAMs that weigh each channel by forward passes: Score-CAM and Ablation-CAM.

Each (sample, channel) pair is one perturbed forward pass; the pairs run in chunks of
``batch_size`` through :func:`pellucid._batching.score_generated` (never all ``B x C`` at once,
never one at a time), so memory is bounded by ``batch_size`` whatever the channel count.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch

from ..._imaging import upsample
from ..._batching import score_generated
from .base import BaseCAM, Batch, forward_hook, min_max_normalize, safe_divide


class _PerturbationCAM(BaseCAM):
    """Channel weights from one forward pass per (sample, channel) pair."""

    needs_gradients = False

    def _channel_weights(self, activations, gradients, batch: Batch) -> torch.Tensor:
        sample, channel = self._evaluated_channels(activations).nonzero(as_tuple=True)
        with self._perturbation(activations, batch, sample, channel) as make_inputs:
            scores = score_generated(
                batch.scorer, len(sample),
                lambda s: (make_inputs(s), batch.rows[sample[s].cpu()]),
                batch_size=self.batch_size) if len(sample) else None
        weights = torch.zeros_like(activations[:, :, 0, 0])
        if len(sample):
            perturbed = scores[:, 0]
            weights[sample, channel] = self._weights_from_scores(
                perturbed.to(weights), batch.scores[sample].to(weights))
        return weights

    def _evaluated_channels(self, activations: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` bool: the pairs that need a forward pass (the others weigh 0)."""
        raise NotImplementedError

    def _perturbation(self, activations, batch: Batch, sample, channel):
        """Context manager yielding ``make_inputs(slice)`` for the pairs ``(sample, channel)``."""
        raise NotImplementedError

    def _weights_from_scores(self, perturbed: torch.Tensor, original: torch.Tensor
                             ) -> torch.Tensor:
        raise NotImplementedError


class ScoreCAM(_PerturbationCAM):
    """Score-CAM (Wang et al., 2020): ``ReLU(sum_k w_k A_k)`` with ``w_k = softmax(f(X * M_k))_c``,
    the class probability of the input masked by ``M_k``, the activation ``A_k`` upsampled
    (bilinear) to input size and min-max scaled to ``[0, 1]``. Baseline-free, as in the authors'
    code (a baseline score would shift every weight by the same constant). Channels constant at
    layer resolution have no mask and weigh 0. Costs one forward pass per non-constant channel
    and input. ``probabilities=False`` weighs by the raw target score instead (for a model
    without classes, e.g. through a regression or segmentation selector)."""

    def __init__(self, model: Any, *, probabilities: bool = True, **common: Any):
        super().__init__(model, **common)
        self.probabilities = bool(probabilities)

    def _evaluated_channels(self, activations):
        flat = activations.flatten(2)
        return flat.amax(2) > flat.amin(2)

    @contextlib.contextmanager
    def _perturbation(self, activations, batch: Batch, sample, channel):
        size = tuple(batch.inputs.shape[2:])

        def make_inputs(s: slice) -> torch.Tensor:
            masks = min_max_normalize(upsample(activations[sample[s], channel[s]], size))
            return batch.inputs[sample[s]] * masks[:, None]

        yield make_inputs

    def _weights_from_scores(self, perturbed, original):
        return perturbed


class AblationCAM(_PerturbationCAM):
    """Ablation-CAM (Desai & Ramaswamy, 2020): ``ReLU(sum_k w_k A_k)`` with
    ``w_k = (y_c - y_c^k) / y_c``, ``y_c^k`` the output when channel ``k`` of the target layer is
    zeroed (0 where ``y_c = 0``).

    The ablation is a temporary forward hook on the target layer that zeroes, in each item of a
    batch of repeated inputs, its own channel (the model's layers are never replaced). With
    ``reshape`` the channel is zeroed where ``reshape`` takes it from (e.g. one feature of every
    patch token). All-zero channels are not run (zeroing them changes nothing: weight 0).
    Costs one forward pass per non-zero channel and input.
    """

    def _evaluated_channels(self, activations):
        return activations.flatten(2).abs().amax(2) > 0

    @contextlib.contextmanager
    def _perturbation(self, activations, batch: Batch, sample, channel):
        current: list[torch.Tensor] = []

        def make_inputs(s: slice) -> torch.Tensor:
            current[:] = [channel[s]]
            return batch.inputs[sample[s]]

        def ablate(_module, _inputs, output):
            positions = self._channel_positions(output, batch.reshape)[current[0]]  # (n, h*w)
            flat = output.reshape(len(output), -1).clone()
            flat[torch.arange(len(output), device=flat.device)[:, None], positions] = 0
            return flat.reshape(output.shape)

        with forward_hook(batch.layer, ablate):
            yield make_inputs

    def _channel_positions(self, output: torch.Tensor, reshape: Callable | None
                           ) -> torch.Tensor:
        """``(C, h*w)``: where each channel of ``reshape(output)`` lies in one flattened item
        of the layer's output."""
        per_item = output.shape[1:]
        index = torch.arange(output[0].numel(), dtype=torch.float64, device=output.device)
        maps = self._to_maps(index.reshape(1, *per_item), reshape)[0]
        return maps.reshape(len(maps), -1).long()

    def _weights_from_scores(self, perturbed, original):
        return safe_divide(original - perturbed, original)

