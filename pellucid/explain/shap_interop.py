"""shap's own explainers (Lundberg & Lee, 2017) behind pellucid's :class:`Explainer` interface."""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

import numpy as np
import torch

from .._baselines import check_baseline, make_baseline
from .._batching import score_generated
from .._scorer import Scorer
from .._shap_values import import_shap
from .._validation import as_float_tensor, check_choice, check_positive_int
from .base import Explainer

ALGORITHMS = ("auto", "permutation", "partition", "exact", "kernel")

# shap draws from numpy's global generator; one lock serialises shap calls so that pellucid can
# seed it for the call and put the caller's state back (the global RNG is left as it was).
_GLOBAL_RNG_LOCK = threading.Lock()


class ShapExplainer(Explainer):
    """shap's explainers with pellucid's conventions, so shap and pellucid methods can be mixed
    in one benchmark: same targets, same ``(N, H, W)`` / ``(N, F)`` float32 output, same seeds,
    ``batch_size``-bounded model calls, any model ``as_model`` wraps.

    Each input is explained by its own shap call, whose model function returns the scores of
    all of the call's targets (one set of model evaluations serves every target; except with
    ``"partition"``, whose search would depend on the other targets: one call per target). The
    masker hides features with one reference per input (``baseline``, pellucid's convention:
    the values then sum to ``f(x) - f(baseline)``) or with a reference data set
    (``background``, shap's interventional expectation: they sum to
    ``f(x) - mean f(background)``).

    Args:
        algorithm: ``"auto"`` (shap's own choice: ``"partition"`` for images, ``"exact"`` for
            at most 10 features, else ``"permutation"``), ``"permutation"``
            (``shap.PermutationExplainer``, antithetic permutations),
            ``"exact"`` (``shap.ExactExplainer``, all coalitions; a few dozen features at most),
            ``"kernel"`` (``shap.KernelExplainer``, without its L1 feature selection so that
            every feature gets a value) or ``"partition"`` (``shap.PartitionExplainer``, Owen
            values over a feature hierarchy). Images: ``"partition"`` only (shap's choice for
            images; the other algorithms treat every pixel and channel as a feature); tabular
            ``"partition"`` needs a ``background`` to cluster the features on.
        nb_samples: model evaluations per input (shap's ``max_evals``; ``nsamples`` for kernel);
            ignored by ``"exact"``.
        baseline: the reference of each input: a number, a tensor, ``"mean"`` or ``"blur"``.
        background: ``(B, F)`` reference samples (tabular) used instead of ``baseline``.

    shap seeds numpy's global generator; pellucid sets it to ``seed`` for each call and restores
    the caller's state afterwards, under a lock (so threads sharing shap wait for each other).
    """

    multi_target = True

    def __init__(self, model: Any, *, algorithm: str = "auto", nb_samples: int = 500,
                 baseline: Any = 0.0, background: Any = None, **common: Any):
        super().__init__(model, **common)
        self.algorithm = check_choice("algorithm", algorithm, ALGORITHMS)
        self.nb_samples = check_positive_int("nb_samples", nb_samples)
        self.baseline = check_baseline(baseline)
        self.background = None if background is None else as_float_tensor(background,
                                                                             "background")

    def _algorithm_for(self, x: torch.Tensor) -> str:
        if self.algorithm != "auto":
            return self.algorithm
        if x.ndim == 4:
            return "partition"
        return "exact" if x.shape[1] <= 10 else "permutation"

    def _check_inputs(self, x: torch.Tensor) -> None:
        algorithm = self._algorithm_for(x)
        if x.ndim == 4:
            if algorithm != "partition":
                raise ValueError(f"ShapExplainer explains images with algorithm='partition' "
                                 f"only; got {self.algorithm!r}")
            if self.background is not None:
                raise ValueError("ShapExplainer on images hides pixels with `baseline`; "
                                 "background= is for tabular data")
        elif self.background is not None:
            if self.background.ndim != 2 or self.background.shape[1] != x.shape[1]:
                raise ValueError(f"background must be (B, {x.shape[1]}) to match inputs of "
                                 f"shape {tuple(x.shape)}; got {tuple(self.background.shape)}")
        elif algorithm == "partition":
            raise ValueError("algorithm='partition' on tabular data clusters the features on a "
                             "background data set: pass background=(B, F) samples")
        if x.ndim == 2 and algorithm == "permutation" and self.nb_samples <= 2 * x.shape[1]:
            raise ValueError(f"algorithm='permutation' needs nb_samples >= 2 * features + 1 = "
                             f"{2 * x.shape[1] + 1} (one forward and one backward permutation); "
                             f"got {self.nb_samples}")
        make_baseline(self.baseline, x)

    def _explain(self, x: torch.Tensor, scorer: Scorer) -> torch.Tensor:
        algorithm = self._algorithm_for(x)
        if algorithm == "partition" and scorer.nb_targets > 1:
            # the partition search expands the coalitions where the outputs change most, so
            # the targets would steer each other's search: one search per target
            return torch.cat([self._explain(x, scorer.column(j))
                              for j in range(scorer.nb_targets)], dim=1)
        shap = import_shap()
        references = make_baseline(self.baseline, x).numpy()
        values = []
        for i in range(len(x)):
            model_function = self._model_function(x, scorer, i)
            with _seeded_numpy(None if self.seed is None else self.seed + i):
                explanation = self._shap_call(shap, algorithm, model_function, x[i].numpy(),
                                              references[i])
            values.append(torch.from_numpy(np.asarray(explanation, dtype=np.float32)))
        return torch.stack(values)

    def _model_function(self, x: torch.Tensor, scorer: Scorer, row: int):
        images = x.ndim == 4

        def scores(z: np.ndarray) -> np.ndarray:
            batch = torch.from_numpy(np.asarray(z, dtype=np.float32))
            if images:  # shap's image maskers work channels-last
                batch = batch.permute(0, 3, 1, 2)
            rows = torch.full((len(batch),), row, dtype=torch.long)
            return score_generated(scorer, len(batch), lambda s: (batch[s], rows[s]),
                                   batch_size=self.batch_size).double().numpy()

        return scores

    def _shap_call(self, shap: Any, algorithm: str, model_function: Any, sample: np.ndarray,
                   reference: np.ndarray) -> np.ndarray:
        """shap's values for one sample: ``(T, F)`` or ``(T, H, W)`` (channels summed)."""
        if sample.ndim == 3:
            image = sample.transpose(1, 2, 0)
            masker = shap.maskers.Image(reference.transpose(1, 2, 0), shape=image.shape)
            explanation = shap.explainers.Partition(model_function, masker)(
                image[None], max_evals=self.nb_samples, silent=True)
            return np.moveaxis(_with_output_axis(explanation.values[0], 3).sum(2), -1, 0)
        data = reference[None] if self.background is None else self.background.numpy()
        if algorithm == "kernel":
            values = shap.KernelExplainer(model_function, data).shap_values(
                sample[None], nsamples=self.nb_samples, l1_reg=False, silent=True)
            return _with_output_axis(np.asarray(values)[0], 1).T
        if algorithm == "partition":
            masker = shap.maskers.Partition(data, clustering="correlation")
        else:
            masker = shap.maskers.Independent(data, max_samples=len(data))
        explainer_class = {"permutation": shap.explainers.Permutation,
                           "exact": shap.explainers.Exact,
                           "partition": shap.explainers.Partition}[algorithm]
        call_args = {} if algorithm == "exact" else {"max_evals": self.nb_samples}
        # PermutationExplainer reseeds numpy's generator when it is built (from fresh entropy
        # without a seed): give it the state seeded for this call
        built_with = ({"seed": int(np.random.randint(2**31))} if algorithm == "permutation"
                      else {})
        explanation = explainer_class(model_function, masker, **built_with)(
            sample[None], silent=True, **call_args)
        return _with_output_axis(explanation.values[0], 1).T


def _with_output_axis(values: np.ndarray, feature_dims: int) -> np.ndarray:
    """shap drops the output axis when the model returns one column: put it back last."""
    return values[..., None] if values.ndim == feature_dims else values


@contextlib.contextmanager
def _seeded_numpy(seed: int | None) -> Iterator[None]:
    """numpy's global generator seeded for the block (``None``: fresh entropy) and restored
    afterwards, under a lock shared by every shap call."""
    with _GLOBAL_RNG_LOCK:
        state = np.random.get_state()
        np.random.seed(None if seed is None else seed % 2**32)
        try:
            yield
        finally:
            np.random.set_state(state)
