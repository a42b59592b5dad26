"""TCAV: Testing with Concept Activation Vectors (Kim et al., 2018, ICML).

At ``target_layer`` (activations ``a(x)``, flattened to ``D`` values):

- a **CAV** ``v_C`` is the unit normal of a linear classifier (scikit-learn) separating the
  activations of concept examples (label 1) from random counter-examples (label 0), pointing
  toward the concept;
- the directional derivative of the target score ``f`` along it is
  ``S_C(x) = grad_a f(a(x)) . v_C``, and the **TCAV score** of a set of inputs (typically the
  inputs of one class) is ``|{x : S_C(x) > 0}| / N``;
- **significance**: ``n_runs`` CAVs are trained against different random counter-example sets
  drawn from ``random_examples``; so are ``n_runs`` random CAVs (a fresh random set of the
  concept's size against the same counter-examples). A two-sided Student t-test
  (``scipy.stats.ttest_ind``) compares the concept's TCAV score (its mean over the runs) with
  the ``n_runs`` random scores; p-values are Bonferroni-corrected over the concepts of the call
  and a concept is significant when the corrected p-value is below ``alpha``.

  Kim et al. put the ``n_runs`` concept scores themselves in the t-test. With one fixed concept
  set these share that set's sampling error, which more runs never average away, so a random
  concept set (examples drawn like the random ones) comes out significant far more often than
  ``alpha``: 8 and 10 seeds in 20 on the planted models of ``tests/test_concepts_tcav.py``. The
  concept's mean score is one observation exchangeable with the random scores under that null
  (a prediction-interval test, conservative since the mean varies less): 0 seeds in 20, while a
  planted concept still gets p ~ 0.005 with 20 runs.

Cost: one forward pass of the concept and random examples (no gradients), and one forward and
one backward pass per batch of inputs; the directional derivatives of every CAV come from that
one backward (a matrix product of the gradients with all CAVs). CAVs are cached in memory
(key: concept name and data, random examples, layer, classifier, seed, run; random CAVs
are shared by the concepts of one size) and, with
``cache_dir``, on disk (written atomically; a damaged file is ignored with a warning and
computed again).
"""
from __future__ import annotations

import hashlib
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from scipy.stats import ttest_ind
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, SGDClassifier

from ..._batching import iter_slices
from ..._files import atomic_write
from ..._runner import ModelRunner, keeps_model_state
from ..._validation import check_inputs, check_positive_int, check_probability, check_white_box
from .split import LayerSplit

CLASSIFIERS = {
    # Kim et al.'s reference implementation: SGD on the hinge loss, alpha 0.01
    "sgd": lambda seed: SGDClassifier(alpha=0.01, max_iter=1000, tol=1e-3, random_state=seed),
    "logistic": lambda seed: LogisticRegression(max_iter=1000),
}


@dataclass
class TcavResult:
    """TCAV of each concept for one set of inputs and targets.

    Attributes: ``concepts`` (names), ``scores`` ``(n_concepts,)`` mean TCAV score over the
    runs, ``run_scores`` and ``random_scores`` ``(n_concepts, n_runs)``, ``p_values``
    ``(n_concepts,)`` Bonferroni-corrected, ``significant`` ``(n_concepts,)`` bool, ``cavs``
    ``(n_concepts, n_runs, D)``, ``alpha``.
    """

    concepts: list[str]
    scores: np.ndarray
    run_scores: np.ndarray
    random_scores: np.ndarray
    p_values: np.ndarray
    significant: np.ndarray
    cavs: np.ndarray
    alpha: float


class Tcav(ModelRunner):
    """TCAV (Kim et al., 2018); see the module docstring.

    Parameters:
        model: a ``torch.nn.Module`` that ``torch.fx`` can trace (see ``split``).
        target_layer: a submodule or its dotted name, called once in ``forward``.
        n_runs: CAVs per concept, each against its own random counter-examples, and as many
            random CAVs for the t-test (>= 2; Kim et al. use 10 or more).
        classifier: ``"sgd"`` (Kim et al.), ``"logistic"``, or an unfitted scikit-learn linear
            classifier (cloned for every CAV).
        alpha: significance level, after the Bonferroni correction.
        cache_dir: a folder for CAVs on disk (``None``: memory only).
        batch_size, seed, device, progress: as for every runner.

    Call: ``tcav(inputs, targets, concepts={"name": examples, ...}, random_examples=pool)``
    -> :class:`TcavResult`. The pool needs at least twice as many examples as the largest
    concept set (a counter-example set and a random concept per run).
    """

    def __init__(self, model: Any, *, target_layer: Any = None, n_runs: int = 20,
                 classifier: Any = "sgd", alpha: float = 0.05, cache_dir: Any = None,
                 **common: Any):
        module = check_white_box(model, "Tcav")
        super().__init__(model, **common)
        self.target_layer = target_layer
        self._split = LayerSplit(module, target_layer)
        self.n_runs = check_positive_int("n_runs", n_runs)
        if self.n_runs < 2:
            raise ValueError(f"n_runs must be >= 2 for the t-test (Kim et al. use >= 10); "
                             f"got {n_runs}")
        if not (classifier in CLASSIFIERS or hasattr(classifier, "fit")):
            raise ValueError(f"classifier must be one of {tuple(CLASSIFIERS)} or a scikit-learn "
                             f"linear classifier; got {classifier!r}")
        self.classifier = classifier
        self.alpha = check_probability("alpha", alpha)
        self.cache_dir = cache_dir
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def __call__(self, inputs: Any, targets: Any = None, *, concepts: Mapping[str, Any],
                 random_examples: Any, forward_kwargs: Any = None) -> TcavResult:
        x = self._validate(inputs)
        concept_sets, pool = self._check_examples(x, concepts, random_examples)
        with self._call(x, targets, forward_kwargs) as scorer:
            if scorer.multiple:
                raise ValueError("TCAV scores one target per input; got (N, T) targets. Call "
                                 "once per class (the CAVs are cached).")
            memo: dict[Any, np.ndarray] = {}
            pool_digest = _digest(pool)
            cavs = np.stack([self._cavs(name, examples, pool, pool_digest, memo)
                             for name, examples in concept_sets.items()])   # (K, 2, runs, D)
            derivatives = self._directional_derivatives(x, scorer, cavs.reshape(-1, cavs.shape[-1]))
        positive = (derivatives > 0).mean(0).reshape(cavs.shape[:3])        # (K, 2, runs)
        run_scores, random_scores = positive[:, 0], positive[:, 1]
        p_values = np.array([_two_sided_p(c, r) for c, r in zip(run_scores, random_scores)])
        p_values = np.minimum(p_values * len(p_values), 1.0)                 # Bonferroni
        return TcavResult(list(concept_sets), run_scores.mean(1), run_scores, random_scores,
                          p_values, p_values < self.alpha, cavs[:, 0], self.alpha)

    @keeps_model_state
    def activations(self, examples: Any) -> torch.Tensor:
        """Flattened activations at ``target_layer``, ``(N, D)`` float32 (batched)."""
        x = check_inputs(examples)
        parts = []
        for s in iter_slices(len(x), self.batch_size, self.progress, "TCAV activations"):
            with torch.inference_mode():
                parts.append(self._split.g(self._to_model(x[s])).flatten(1).float().cpu())
        return torch.cat(parts)

    # -- internals -------------------------------------------------------------------------
    def _check_examples(self, x, concepts, random_examples):
        if not isinstance(concepts, Mapping) or not concepts:
            raise ValueError("concepts must be a non-empty dict {name: examples (n, ...)}")
        pool = check_inputs(random_examples)
        sets = {}
        for name, examples in concepts.items():
            e = check_inputs(examples)
            if e.shape[1:] != x.shape[1:] or pool.shape[1:] != x.shape[1:]:
                raise ValueError(f"concept {name!r} examples {tuple(e.shape)} and random "
                                 f"examples {tuple(pool.shape)} must have the inputs' shape "
                                 f"(n, {', '.join(map(str, x.shape[1:]))})")
            if len(e) < 2 or len(pool) < 2 * len(e):
                raise ValueError(f"concept {name!r} has {len(e)} examples: need >= 2 and a "
                                 f"random pool of >= {2 * len(e)} (twice as many; got "
                                 f"{len(pool)})")
            sets[str(name)] = e
        return sets, pool

    def _to_model(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self._model.device, self._model.dtype)

    def _cavs(self, name, examples, pool, pool_digest: str, memo: dict) -> np.ndarray:
        """``(2, n_runs, D)``: the concept's CAVs and the random CAVs, run by run; the
        activations are computed only for CAVs not in the cache (``memo``: this call's;
        ``pool_digest``: :func:`_digest` of ``pool``)."""
        m = len(examples)
        base = self.seed if self.seed is not None else int(np.random.SeedSequence().entropy % 2**31)
        data = {"concept": _digest(name, examples, pool_digest),
                "random": _digest("", pool_digest, m)}
        keys = [self._key(data[kind], base, run)
                for kind in ("concept", "random") for run in range(self.n_runs)]
        cavs = [self._cached(key) for key in keys]
        missing = [index for index, cav in enumerate(cavs) if cav is None]
        if missing:
            basis, concept, counter = self._coordinates(name, examples, pool, memo)
            directions = []
            for index in missing:
                kind, run = divmod(index, self.n_runs)
                order = np.random.default_rng((base, run, m)).permutation(len(pool))
                positive = concept if kind == 0 else counter[order[m:2 * m]]
                directions.append(self._fit_cav(positive, counter[order[:m]], base + run))
            directions = np.stack(directions)
            if basis is not None:                 # back from the coordinates: Q = X^T S
                activations, scale = basis
                directions = (directions @ scale.T) @ activations
            norms = np.linalg.norm(directions, axis=1, keepdims=True)
            directions = (directions / np.where(norms > 0, norms, 1)).astype(np.float32)
            for index, cav in zip(missing, directions):
                self._store(keys[index], cav)
                cavs[index] = cav
        return np.stack(cavs).reshape(2, self.n_runs, -1)

    def _coordinates(self, name, examples, pool, memo):
        """``(Q, concept, pool)``: the activations' coordinates ``Z`` in a basis ``Q (D, r)`` of
        the span of the concept's and the pool's activations ``X`` (``r <= m + len(pool)``),
        or ``Q = None`` and the activations themselves for a user's classifier.

        An L2-regularized linear classifier's weights lie in that span (representer theorem)
        and its objective reads the data only through inner products, which ``Z`` keeps
        (``Z Z^T = X X^T``): fitting on ``Z`` and mapping back with ``Q`` gives the same CAV
        at a cost in ``r`` instead of ``D`` per example. ``Q`` and ``Z`` come from the
        eigendecomposition ``X X^T = V L V^T``: ``Z = V L^(1/2)``, ``Q = X^T V L^(-1/2)``
        (orthonormal); a QR of ``X^T`` gives the same but was 20x slower at ``D = 8192``.
        ``Q`` is kept as ``(X, S = V L^(-1/2))``: the CAVs ``W Q^T = (W S^T) X`` cost
        ``runs x r x D`` instead of the ``D x r x r`` of forming ``Q``."""
        if ("concept", name) not in memo:
            if "pool" not in memo:
                memo["pool"] = self.activations(pool).numpy()
            concept, counter = self.activations(examples).numpy(), memo["pool"]
            basis = None
            if isinstance(self.classifier, str):   # the named classifiers are L2-regularized
                x = np.concatenate([concept, counter]).astype(np.float64)
                values, vectors = np.linalg.eigh(x @ x.T)
                keep = values > 1e-10 * max(values[-1], 1e-300)
                values, vectors = values[keep], vectors[:, keep]
                basis = x, vectors / np.sqrt(values)
                z = vectors * np.sqrt(values)
                concept, counter = z[:len(concept)], z[len(concept):]
            memo["concept", name] = basis, concept, counter
        return memo["concept", name]

    def _fit_cav(self, positive: np.ndarray, negative: np.ndarray, seed: int) -> np.ndarray:
        """The classifier's normal toward the concept (not normalized)."""
        classifier = (CLASSIFIERS[self.classifier](seed) if isinstance(self.classifier, str)
                      else clone(self.classifier))
        features = np.concatenate([positive, negative])
        labels = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # convergence warnings at max_iter
            classifier.fit(features, labels)
        direction = np.asarray(classifier.coef_, dtype=np.float64).reshape(-1)
        return -direction if classifier.classes_[1] != 1 else direction  # toward classes_[1]

    def _directional_derivatives(self, x, scorer, cavs: np.ndarray) -> np.ndarray:
        """``grad_a f . v`` for every input and CAV, ``(N, n_cavs)``: one forward and one
        backward pass per batch."""
        v = torch.from_numpy(cavs).T
        out = []
        for s in iter_slices(len(x), self.batch_size, self.progress, "TCAV gradients"):
            rows = torch.arange(s.start, s.stop)
            outputs, activations = self._split.with_activations(
                self._to_model(x[s]), **scorer.kwargs_for(rows))
            scores = scorer.select(outputs, rows)[:, 0]
            (grad,) = torch.autograd.grad(scores.sum(), activations)
            out.append(grad.flatten(1).float().cpu() @ v.to(torch.float32))
        return torch.cat(out).numpy()

    def _key(self, data: str, base: int, run: int) -> str:
        parts = (data, self._split.name, repr(self.classifier), base, run)
        return hashlib.sha1(repr(parts).encode()).hexdigest()

    def _cached(self, key: str) -> np.ndarray | None:
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        if self.cache_dir is None:
            return None
        path = Path(self.cache_dir) / f"cav-{key}.npy"
        if not path.exists():
            return None
        try:
            cav = np.load(path)
        except (OSError, ValueError) as error:
            warnings.warn(f"ignoring the damaged CAV cache file {path} ({error}); computing "
                          f"it again")
            return None
        with self._lock:
            self._cache[key] = cav
        return cav

    def _store(self, key: str, cav: np.ndarray) -> None:
        with self._lock:
            self._cache[key] = cav
        if self.cache_dir is not None:
            atomic_write(Path(self.cache_dir) / f"cav-{key}.npy",
                         lambda tmp: np.save(tmp, cav))


def _digest(*parts: Any) -> str:
    """A hash of names, sizes, digests and tensors (their shape and bytes); random CAVs hash the
    pool's digest and the concept's size only, so the concepts of one size share them."""
    digest = hashlib.sha1()
    for part in parts:
        if isinstance(part, torch.Tensor):
            digest.update(repr(tuple(part.shape)).encode())
            digest.update(part.contiguous().numpy().tobytes())
        else:
            digest.update(repr(part).encode())
    return digest.hexdigest()


def _two_sided_p(concept_scores: np.ndarray, random_scores: np.ndarray) -> float:
    """Two-sided Student t-test of the concept's mean score (one observation) against the random
    scores; when the random scores are all equal: 1.0 if the mean equals them, else 0.0."""
    score = concept_scores.mean()
    if np.ptp(random_scores) == 0:
        return 1.0 if score == random_scores[0] else 0.0
    return float(ttest_ind([score], random_scores).pvalue)
