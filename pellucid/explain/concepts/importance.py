"""Concept importance: attribution in concept space (Fel et al., 2023, "A Holistic Approach to
Unifying Automatic Concept Extraction and Concept Importance Estimation").

``head`` is a :class:`~pellucid.models.Model` of the concept-space model
``u -> h(u W + offset)`` (:class:`~.modules.ConceptHead`) and ``coefficients`` the concept
coefficients of ``N`` inputs, ``(N, R)``, per spatial position ``(N, R, h, w)`` or per ViT
token ``(N, R, T)``. A concept is perturbed at every position (token) at once (CRAFT's
re-parameterization). Each function returns
one importance per input and concept, ``(N, R)`` float32; ``f`` below is the target score.

- ``sobol``: total Sobol index of the mask ``m_k`` in ``f(u * m)``, ``m ~ U[0, 1]^R`` drawn
  from a scrambled Sobol pick-freeze design (Jansen estimator; CRAFT, Fel et al., 2023).
  For an additive ``f(u * m) = b + sum_k m_k c_k`` it is ``c_k^2 / sum_j c_j^2``.
- ``occlusion``: ``f(u) - f(u with u_k = 0)``.
- ``gradient_input``: ``sum_positions u_k * df/du_k``.
"""
from __future__ import annotations

import numpy as np
import torch

from ..._batching import gradients_generated, iter_slices
from ...models import Model
from ..perturbation.sobol_estimators import jansen_total_indices, sobol_design


def masked_scores(head: Model, coefficients: torch.Tensor, targets: torch.Tensor,
                  masks: torch.Tensor, *, batch_size: int, progress: bool = False,
                  desc: str | None = None) -> torch.Tensor:
    """``f_{t_i}(u_i * masks[j])`` for every input ``i`` and mask ``j``: ``(N, M)``.

    ``masks`` ``(M, R)`` scale each concept at every position. The ``N * M`` perturbed
    coefficients are built ``batch_size`` at a time.
    """
    n_masks = len(masks)
    spatial = (1,) * (coefficients.ndim - 2)
    scores = []
    for s in iter_slices(len(coefficients) * n_masks, batch_size, progress, desc):
        index = torch.arange(s.start, s.stop)
        inputs, rows = index // n_masks, index % n_masks
        perturbed = coefficients[inputs] * masks[rows].view(len(index), -1, *spatial)
        out = head.predict(perturbed)
        scores.append(out.gather(1, targets[inputs][:, None])[:, 0])
    return torch.cat(scores).view(len(coefficients), n_masks)


def sobol_importance(head: Model, coefficients: torch.Tensor, targets: torch.Tensor, *,
                     nb_design: int = 32, batch_size: int = 64, seed: int | None = 0,
                     progress: bool = False) -> torch.Tensor:
    """Total Sobol indices of the concept masks, ``nb_design * (R + 2)`` passes per input."""
    n_concepts = coefficients.shape[1]
    a, b, c = sobol_design(nb_design, n_concepts, seed)
    masks = torch.from_numpy(np.concatenate([a, b, c.reshape(-1, n_concepts)]))
    scores = masked_scores(head, coefficients, targets, masks, batch_size=batch_size,
                           progress=progress, desc="concept Sobol").double().numpy()
    f_a, f_b = scores[:, :nb_design], scores[:, nb_design:2 * nb_design]
    f_c = scores[:, 2 * nb_design:].reshape(len(scores), n_concepts, nb_design)
    return torch.from_numpy(jansen_total_indices(f_a, f_b, f_c)).float()


def occlusion_importance(head: Model, coefficients: torch.Tensor, targets: torch.Tensor, *,
                         batch_size: int = 64, progress: bool = False) -> torch.Tensor:
    """``f(u) - f(u without concept k)``, ``R + 1`` passes per input."""
    n_concepts = coefficients.shape[1]
    masks = torch.cat([torch.ones(1, n_concepts), 1 - torch.eye(n_concepts)])
    scores = masked_scores(head, coefficients, targets, masks, batch_size=batch_size,
                           progress=progress, desc="concept occlusion")
    return scores[:, :1] - scores[:, 1:]


def gradient_input_importance(head: Model, coefficients: torch.Tensor, targets: torch.Tensor,
                              *, batch_size: int = 64, progress: bool = False
                              ) -> torch.Tensor:
    """``u * df/du`` summed over spatial positions or tokens (one backward pass per input)."""
    grads, _ = gradients_generated(head, len(coefficients),
                                   lambda s: (coefficients[s], targets[s]),
                                   batch_size=batch_size, progress=progress,
                                   desc="concept gradient x input")
    product = grads * coefficients
    return product.flatten(2).sum(2) if product.ndim > 2 else product


IMPORTANCE_METHODS = {
    "sobol": sobol_importance,
    "occlusion": occlusion_importance,
    "gradient_input": gradient_input_importance,
}
