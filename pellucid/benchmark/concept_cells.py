"""Concept metrics as benchmark cells (Fel et al., 2023, "A Holistic Approach to Unifying
Automatic Concept Extraction and Concept Importance Estimation").

A concept extractor plays a method, a concept metric plays a metric; the runner pairs a concept
method only with concept metrics (and attribution methods only with the other metrics), so a
cell, its fingerprint, its cache files, its resume, its Ray task and its statistics are those
of any other cell.

- Method ``"Craft"`` (:class:`CraftConcepts`, :class:`~pellucid.explain.Craft`'s parameters,
  e.g. ``factorization = "pca"``): for each class ``c`` among the inputs' targets, concepts
  fitted on the explained inputs of class ``c`` and their importances for ``c``; its
  "heatmaps" are the per-input concept importances ``(N, n_concepts)``.
- Metrics, per input (each refits the method's concepts: same inputs, same seed, same fit):

  - ``"CDeletion"`` / ``"CInsertion"`` / ``"CMuFidelity"``: pellucid's Deletion / Insertion /
    MuFidelity (and their parameters) on the concept-mask model of ``Craft.concept_space``,
    masks of ones, substrate 0 (a concept removed at every position), the importances as the
    heatmap: C-Deletion = normalized area under ``f_c(m)`` as the concepts are removed by
    decreasing importance (lower is better), C-Insertion as they are put back (higher is
    better), C-muFidelity = ``corr_S(sum_{k in S} phi_k, f_c(1) - f_c(1_{S=0}))``;
  - ``"ConceptReconstruction"``: ``||A - U W - offset||_F / ||A||_F`` over an input's
    activation vectors (lower is better); ``"BottleneckFidelity"``: 1 when
    ``argmax h(U W + offset) == argmax h(A)`` for the input, else 0 (its mean is
    ``Craft.concept_metrics``'s fidelity).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._runner import ModelRunner
from .._validation import check_class_indices
from ..explain import Craft
from ..metrics import Deletion, Insertion, Metric, MetricResult, MuFidelity


class CraftConcepts(Craft):
    """CRAFT as a benchmark method: :meth:`explain` gives the per-input concept importances
    ``(N, n_concepts)`` (concepts of each target class fitted on that class's inputs)."""

    def fit_classes(self, inputs: Any, targets: Any) -> list[tuple[torch.Tensor, Craft]]:
        """``(rows, fitted Craft)`` for each class of ``targets`` (one class per input), its
        concepts fitted on ``inputs[rows]``; deterministic for a given ``seed``."""
        x = self._check_images(inputs)
        t = check_class_indices("targets", targets, len(x), self._model.predict(x[:1]).shape[1])
        t = t[:, 0]
        classes, counts = torch.unique(t, return_counts=True)
        short = [int(c) for c, n in zip(classes, counts) if n * self.crops_per_image
                 < self.n_concepts]
        if short:  # before any fit
            raise ValueError(f"classes {short} have too few inputs for n_concepts="
                             f"{self.n_concepts} with crops_per_image={self.crops_per_image}: "
                             "raise n_samples or crops_per_image")
        groups = []
        for c in classes.tolist():
            rows = torch.nonzero(t == c)[:, 0]
            groups.append((rows, self.__sklearn_clone__().fit(x[rows], targets=c)))
        return groups

    def explain(self, inputs: Any, targets: Any) -> torch.Tensor:
        """Per-input importances of the concepts of its target class, ``(N, n_concepts)``
        (``sample_importances_`` of ``estimate_importance``)."""
        x = self._check_images(inputs)
        importances = torch.zeros(len(x), self.n_concepts)
        for rows, craft in self.fit_classes(x, targets):
            craft.estimate_importance(x[rows])
            importances[rows] = craft.sample_importances_
        return importances


class ConceptMetric(Metric, ModelRunner):
    """Base of the concept metrics: ``explainer`` is the concept method (a
    :class:`CraftConcepts` class, built with ``explainer_kwargs`` as the cell's method was);
    ``heatmaps`` are its importances ``(N, n_concepts)``; subclasses score one class's inputs
    in ``_score_class(craft, x, importances, target)``."""

    requires = frozenset({"model", "explainer"})
    _model_arguments = ("model", "explainer")
    input_kinds = ("images",)

    def __init__(self, model: Any, explainer: Any, *, explainer_kwargs: dict | None = None,
                 **common: Any):
        if not (isinstance(explainer, type) and issubclass(explainer, CraftConcepts)):
            raise TypeError(f"{type(self).__name__} scores the concepts of a concept method "
                            f"(name 'Craft', CraftConcepts); got {explainer!r}")
        self.explainer = explainer
        self.explainer_kwargs = dict(explainer_kwargs or {})
        super().__init__(model, **common)
        if getattr(self, "masking", "fill") != "fill":  # before the concepts are fitted
            raise ValueError(f"{type(self).__name__} removes concepts, not pixels: masking "
                             f"must be 'fill', got {self.masking!r}")

    def __call__(self, inputs: Any, heatmaps: Any, targets: Any = None, *, masks: Any = None
                 ) -> MetricResult:
        x = self._validate(inputs)
        extractor = self.explainer(self.model, **self.explainer_kwargs)
        importances = torch.as_tensor(heatmaps, dtype=torch.float32)
        if importances.shape != (len(x), extractor.n_concepts):
            raise ValueError(f"{type(self).__name__} scores concept importances of shape "
                             f"(N, n_concepts) = {(len(x), extractor.n_concepts)}; got "
                             f"{tuple(importances.shape)} (heatmaps of an attribution method?)")
        if targets is None:
            raise ValueError(f"{type(self).__name__} needs the targets the concepts were "
                             "extracted for (one class per input)")
        groups = extractor.fit_classes(x, targets)
        parts = [(rows, self._score_class(craft, x[rows], importances[rows], craft.class_id_))
                 for rows, craft in groups]
        return merge(self.name, len(x), parts)

    evaluate = __call__

    def _score_class(self, craft: Craft, x: torch.Tensor, importances: torch.Tensor,
                     target: int) -> MetricResult:
        raise NotImplementedError


def merge(name: str, n: int, parts: list[tuple[torch.Tensor, MetricResult]]) -> MetricResult:
    """One result for ``n`` inputs from the results of groups of them (``rows`` each)."""
    first = parts[0][1]
    scores = np.full(n, np.nan)
    curves = None if first.curves is None else np.full((n, first.curves.shape[1]), np.nan)
    for rows, result in parts:
        scores[rows.numpy()] = result.scores
        if curves is not None:
            curves[rows.numpy()] = result.curves
    return MetricResult(name, scores, curves=curves, fractions=first.fractions,
                        higher_is_better=first.higher_is_better)


class _ConceptSpaceMetric(ConceptMetric):
    """A pellucid metric (the class after this one in the MRO, whose parameters it takes) on
    ``Craft.concept_space``: masks of ones, the importances as the heatmap."""

    scored_by: type

    def _check_inputs(self, x):
        """None on the images: ``scored_by`` checks its own inputs, the masks."""

    def _score_class(self, craft, x, importances, target):
        model, masks, kwargs = craft.concept_space(x)
        params = {name: getattr(self, name) for name in self.scored_by._param_names()}
        metric = self.scored_by(model, **params)
        return metric(masks, importances, target, forward_kwargs=kwargs)


class CDeletion(_ConceptSpaceMetric, Deletion):
    """C-Deletion: Deletion (its parameters) over the concepts; lower is better."""

    name, scored_by = "c_deletion", Deletion


class CInsertion(_ConceptSpaceMetric, Insertion):
    """C-Insertion: Insertion (its parameters; default substrate 0) over the concepts; higher
    is better."""

    name, scored_by = "c_insertion", Insertion


class CMuFidelity(_ConceptSpaceMetric, MuFidelity):
    """C-muFidelity: MuFidelity (its parameters; subsets of concepts) over the concepts;
    higher is better."""

    name, scored_by = "c_mu_fidelity", MuFidelity


class _ConceptScore(ConceptMetric):
    """One score of ``Craft.concept_metrics`` (``key``) computed on each input alone."""

    key: str

    def _score_class(self, craft, x, importances, target):
        scores = [craft.concept_metrics(x[i:i + 1])[self.key] for i in range(len(x))]
        return MetricResult(self.name, scores, higher_is_better=self.higher_is_better)


class ConceptReconstruction(_ConceptScore):
    """``||A - U W - offset||_F / ||A||_F`` over each input's activation vectors; lower is
    better."""

    name, key, higher_is_better = "concept_reconstruction", "reconstruction_error", False


class BottleneckFidelity(_ConceptScore):
    """1 when the class predicted through the concepts, ``argmax h(U W + offset)``, is the
    model's, ``argmax h(A)``, else 0; higher is better."""

    name, key, higher_is_better = "bottleneck_fidelity", "fidelity", True


CONCEPT_METHODS = {"Craft": CraftConcepts}
CONCEPT_METRICS = {cls.__name__: cls for cls in (CDeletion, CInsertion, CMuFidelity,
                                                  ConceptReconstruction, BottleneckFidelity)}


def is_concept_method(name: Any) -> bool:
    """Whether a method spec's ``name`` is a concept extractor (``"Craft"`` or a Craft class)."""
    if isinstance(name, str):
        return name in CONCEPT_METHODS
    return isinstance(name, type) and issubclass(name, Craft)


def is_concept_metric(name: Any) -> bool:
    """Whether a metric spec's ``name`` is a concept metric (a name of :data:`CONCEPT_METRICS`
    or a :class:`ConceptMetric` class)."""
    if isinstance(name, str):
        return name in CONCEPT_METRICS
    return isinstance(name, type) and issubclass(name, ConceptMetric)


def pairs(method: Any, metric: Any) -> bool:
    """A concept method is scored by concept metrics only, any other method by the others."""
    return is_concept_method(method.name) == is_concept_metric(metric.name)


def as_method_class(cls: type) -> type:
    """:class:`~pellucid.explain.Craft` itself runs in the benchmark as :class:`CraftConcepts`;
    another Craft class must be one (it needs ``explain``)."""
    if cls is Craft:
        return CraftConcepts
    if isinstance(cls, type) and issubclass(cls, Craft) and not issubclass(cls, CraftConcepts):
        raise TypeError(f"{cls.__name__} is a Craft but not a CraftConcepts: subclass "
                        "pellucid.benchmark.concept_cells.CraftConcepts to benchmark it")
    return cls


def check_every_spec_scored(methods: list, metrics: list, cells: list) -> None:
    """Every method and metric of the config is in at least one cell (a concept method needs
    a concept metric, an attribution method another metric): said before any cell runs."""
    in_cells = {id(c.method) for c in cells} | {id(c.metric) for c in cells}
    concept_metrics = f"a concept metric ({', '.join(CONCEPT_METRICS)})"
    for spec in methods:
        if id(spec) not in in_cells:
            needs = (concept_metrics if is_concept_method(spec.name)
                     else "a metric that is not a concept metric")
            raise ValueError(f"method {spec.label!r} is in no cell: it needs {needs} on one of "
                             "its datasets")
    for spec in metrics:
        if id(spec) not in in_cells:
            needs = ("a concept method ('Craft')" if is_concept_metric(spec.name)
                     else "a method that is not a concept method")
            raise ValueError(f"metric {spec.label!r} is in no cell: it needs {needs} on one of "
                             "its datasets")
