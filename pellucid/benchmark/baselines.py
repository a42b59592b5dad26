"""Reference "methods" a benchmark compares real attribution methods against."""
from __future__ import annotations

import torch

from .._scorer import Scorer
from ..explain import Explainer


class RandomAttribution(Explainer):
    """Uniform random heatmaps in [0, 1), seeded: the chance level of every metric.

    A method that does not beat it on a faithfulness or localization metric carries no
    information about the model for that metric (Hooker et al., 2019 use the same control).
    """

    def _explain(self, x: torch.Tensor, scorer: Scorer) -> torch.Tensor:
        shape = (x.shape[0], *x.shape[2:]) if x.ndim == 4 else tuple(x.shape)
        return torch.rand(shape, generator=self._generator())


BUILTIN_METHODS = {"Random": RandomAttribution}
