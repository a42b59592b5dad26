"""EVA (Fel et al., CVPR 2023): importance from verified bounds over a perturbation set."""
from __future__ import annotations

import numbers
from typing import Any

import torch

from ..._batching import iter_slices
from ..._scorer import Scorer
from ..._validation import check_choice, check_positive_int
from ...features import as_labels, check_feature_mask, resolve_feature_mask
from ...selectors import ClassScore
from ..base import WhiteBoxExplainer
from ..concepts.split import LayerSplit
from .verified import METHODS, bounded_pass, linear_bounds


class Eva(WhiteBoxExplainer):
    """EVA, Explainability with Verified perturbation Analysis (Fel et al., "Don't Lie to Me!
    Robust and Efficient Explainability with Verified Perturbation Analysis", CVPR 2023).

    The adversarial overlap of a perturbation set ``B`` is the most any other class can gain
    on the target class ``c`` inside it, ``AO(x, B) = max_{d in B} max_{k != c} f_k(x + d) -
    f_c(x + d)``, bounded from above by verified perturbation analysis (never estimated from
    samples). The importance of a region ``u`` is how much the overlap shrinks when ``u`` may
    no longer move: ``EVA(x, u) = AO(x, B) - AO(x, B_u)``, ``B`` the L-infinity ball of radius
    ``epsilon`` and ``B_u`` its points with ``d_u = 0``. Every region of every input is one box;
    the boxes are bounded ``batch_size`` at a time (one bounded pass each, plus CROWN's
    back-substitutions), all targets from the same passes.

    Args:
        epsilon: radius of the L-infinity ball, in input units (> 0).
        feature_mask: the regions (:mod:`pellucid.features`; default an 8 x 8 grid for images,
            one column each for tabular data).
        bounds: ``"crown-ibp"`` (default: CROWN back-substitution from the output, IBP bounds
            for the hidden layers; Zhang et al., 2020), ``"crown"`` (also every ReLU input with
            an unstable neuron tightened by CROWN: tightest, but one back-substitution per
            unstable neuron; on a two-conv 3 x 16 x 16 CNN at epsilon 0.02, measured: mean
            logit interval 0.010 against 0.026 for "crown-ibp" and 0.150 for "ibp", at about
            170x the time of "crown-ibp") or ``"ibp"``. CROWN bounds are intersected with
            IBP's, so they are never looser.
        target_layer: ``None`` (default: every bound verified) or a submodule (or dotted name)
            at which the model is split, ``f = h(g(x))`` (:class:`~pellucid.explain.concepts.
            LayerSplit`), for the paper's hybrid estimator (its Fig. 3, "scaling strategy"):
            the box of ``g(B)`` is estimated from ``nb_samples`` points of each perturbation set
            (the min and max of every activation) and only ``h`` is bounded, from that box.
            ``g`` may then use any operation (GELU, layer norm, attention); ``h`` must be
            supported. The points are vertices of the box (``+-epsilon`` with random signs on the
            free coordinates, the same draws for every box, seeded by ``seed``): where ``g`` is
            linear, or linear then monotone per activation (conv, ReLU), each activation's
            extremes are vertices, so with enough draws the box is exact. The estimated box lies
            inside ``g(B)``'s, so the overlap is **no longer a sound upper bound**; it never
            exceeds the fully verified IBP overlap, and equals it with ``bounds="ibp"`` when
            ``g`` is one affine layer (its IBP box is exact) and every vertex needed was drawn.
            ``g`` runs on ``batch_size`` points at a time (running min and max);
            ``forward_kwargs`` are refused in this mode.
        nb_samples: vertices drawn per perturbation set in the hybrid mode (>= 1).

    The model must be a torch Module built from the operations listed in
    :mod:`pellucid.explain.eva.mode` (linear, conv, batch norm in eval mode, average and max
    pooling, ReLU, residual additions, reshapes); any other raises ``NotImplementedError`` in
    the first bounded pass, naming the operation. ``targets`` must be classes.
    """

    multi_target = True

    def __init__(self, model: Any, *, epsilon: float = 0.1, feature_mask: Any = None,
                 bounds: str = "crown-ibp", target_layer: Any = None, nb_samples: int = 256,
                 **common: Any):
        super().__init__(model, **common)
        if (isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real)
                or not epsilon > 0 or epsilon == float("inf")):
            raise ValueError(f"epsilon must be a positive finite number, got {epsilon!r}")
        check_choice("bounds", bounds, METHODS)
        if not (feature_mask is None or callable(feature_mask)):
            as_labels(feature_mask)
        self.epsilon = epsilon
        self.feature_mask = feature_mask
        self.bounds = bounds
        self.target_layer = target_layer
        self.nb_samples = check_positive_int("nb_samples", nb_samples)
        self._parts = None  # (g, h); split here: a bad layer or a skip across it fails now
        if target_layer is not None:
            split = LayerSplit(self._model.module, target_layer)
            self._parts = split.g, split.h

    def _check_inputs(self, x: torch.Tensor) -> None:
        if not (self.feature_mask is None or callable(self.feature_mask)):
            check_feature_mask(self.feature_mask, x)  # the default fits; a callable's: once made

    def _explain(self, x: torch.Tensor, scorer: Scorer) -> torch.Tensor:
        if not isinstance(scorer.selector, ClassScore):
            raise ValueError("Eva compares the target class with the others: targets must be "
                             "classes (None, ints, an (N, T) array or ClassScore), got "
                             f"{type(scorer.selector).__name__}")
        if self._parts is not None and scorer.forward_kwargs:
            raise ValueError("Eva with a target_layer (hybrid bounds) runs g and h on the "
                             "activations alone: forward_kwargs are not supported, got "
                             f"{sorted(scorer.forward_kwargs)}")
        masks = resolve_feature_mask(self.feature_mask, x)
        seed = int(torch.randint(2**62, (), generator=self._generator()))
        counts = (masks.flatten(1).amax(1) + 1).tolist()
        # box 0 of each input is the whole ball, box 1 + j the ball with region j fixed
        inputs = torch.repeat_interleave(torch.arange(len(x)), torch.tensor(counts) + 1)
        regions = torch.cat([torch.arange(-1, m) for m in counts])
        overlaps = torch.cat([
            self._overlap(x, masks, inputs[s], regions[s], scorer, seed)
            for s in iter_slices(len(inputs), self.batch_size, self.progress, "Eva")])
        heatmaps, start = [], 0
        for i, m in enumerate(counts):
            values = overlaps[start] - overlaps[start + 1:start + 1 + m]  # (M, T)
            heatmaps.append(values.T[:, masks[i]])
            start += m + 1
        return torch.stack(heatmaps)

    def _overlap(self, x: torch.Tensor, masks: torch.Tensor, rows: torch.Tensor,
                 regions: torch.Tensor, scorer: Scorer, seed: int) -> torch.Tensor:
        """Upper bounds ``(n, T)`` of the adversarial overlap of each box."""
        free = (masks[rows] != regions.view(-1, *[1] * (masks.ndim - 1)))
        free = free[:, None] if x.ndim == 4 else free  # every channel of a pixel
        model = scorer.model
        centre = x[rows].to(model.device, model.dtype)
        radius = (self.epsilon * free).to(centre)
        if self._parts is None:
            mode, node = bounded_pass(model.module, centre - radius, centre + radius,
                                      self.bounds, forward_kwargs=scorer.kwargs_for(rows),
                                      output=scorer.selector.tensor)
        else:
            lower, upper = self._empirical_box(centre, radius, seed)
            mode, node = bounded_pass(self._parts[1], lower, upper, self.bounds,
                                      output=scorer.selector.tensor)
        n, k = node.lower.shape
        if k < 2:
            raise ValueError(f"Eva needs at least 2 classes to compare, the model outputs {k}")
        # ClassScore reads outputs[i, class]: applied to 0 .. K-1 it gives the classes
        labels = torch.arange(k, dtype=node.lower.dtype, device=node.lower.device)
        classes = scorer.selector.select(labels.expand(n, k), rows.to(labels.device)).long()
        t = classes.shape[1]
        spec = torch.eye(k, dtype=node.lower.dtype, device=node.lower.device).expand(n, t, k, k)
        spec = spec - torch.nn.functional.one_hot(classes, k).to(spec)[:, :, None, :]
        _, upper = linear_bounds(mode, node, spec.reshape(n, t * k, k))
        upper = upper.view(n, t, k).masked_fill(spec.abs().sum(-1) == 0, -torch.inf)
        return upper.amax(-1).float().cpu()

    def _empirical_box(self, centre: torch.Tensor, radius: torch.Tensor, seed: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Min and max of ``g`` over ``nb_samples`` vertices ``centre +- radius`` of each box;
        draw ``s`` is seeded ``seed + s`` and shared by the boxes (so the result does not depend
        on ``batch_size``); ``g`` sees at most ``batch_size`` points at a time."""
        chunk = max(1, self.batch_size // len(centre))
        lower = upper = None
        with torch.no_grad():
            for start in range(0, self.nb_samples, chunk):
                draws = range(start, min(start + chunk, self.nb_samples))
                signs = torch.stack([
                    torch.randint(2, centre.shape[1:],
                                  generator=torch.Generator().manual_seed(seed + s))
                    for s in draws]).to(centre) * 2 - 1
                points = centre[:, None] + radius[:, None] * signs  # (n, c, ...)
                out = self._parts[0](points.flatten(0, 1))
                out = out.view(len(centre), len(draws), *out.shape[1:])
                low, high = out.amin(1), out.amax(1)
                lower = low if lower is None else torch.minimum(lower, low)
                upper = high if upper is None else torch.maximum(upper, high)
        return lower, upper
