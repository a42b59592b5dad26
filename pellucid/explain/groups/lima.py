"""LiMA: attribution as submodular subset selection over regions, with a bidirectional greedy
search (Chen et al., "Less is More: Efficient Black-box Attribution via Minimal Interpretable
Subset Selection", 2025; the score of their "Less is More: Fewer Interpretable Region via
Submodular Subset Selection", ICLR 2024)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from ..._scorer import Scorer
from ..._validation import check_choice, check_non_negative, check_positive_int
from ...features import resolve_feature_mask
from .base import GroupExplainer, GroupExplanation


class Lima(GroupExplainer):
    """LiMA: ranks the regions (``feature_mask``) by greedy maximisation of a submodular score,
    and gives each region its place in that ranking (parameters of
    :class:`~pellucid.explain.groups.base.GroupExplainer`, ``probabilities=True`` by default as
    in the paper).

    The score of a set ``S`` of regions (``x_S``: the input with only ``S`` kept, the rest at the
    baseline; ``V`` all regions; ``p = softmax`` of the selected output; ``s_t`` the target score)::

        F(S) = consistency   * s_t(x_S)
             + collaboration * (1 - s_t(x_{V \\ S}))
             + confidence    * (1 - H(p(x_S)) / log K)
             + effectiveness * sum_{i in S} min_{j in S, j != i} arccos(cos(phi_i, phi_j)) / pi

    ``phi_i = feature_extractor(outputs of x_{i})``, the features of the region alone (a
    singleton's minimum is 1, the largest distance). The paper's features come from the encoder
    the attribution explains; a black box shows only its outputs, so the default ``phi`` is the
    softmax output ``p`` (pass ``feature_extractor(outputs) -> (n, D)``, e.g. reading an
    embedding element of a tuple output). Default weights follow the authors' black-box
    classifier code (consistency 20, collaboration 5, confidence 0.01); effectiveness is 0 by
    default (that code has none; with weight 1 on the digits CNN Deletion got slightly worse and
    Insertion moved within its noise, ``benchmarks/bench_lima.py``).

    Search (``search``): ``"greedy"`` adds, at each step, the region with the largest
    ``F(S + {a})``; ``"bidirectional"`` (LiMA) also fills the ranking from its end: after the
    forward pick, the ``backward_pool`` candidates the forward step scored lowest are scored as
    ``F(D + {a})`` for the set ``D`` of regions ranked last, and the lowest joins ``D``. Each
    step costs ``2 |C|`` passes (``|C|`` candidates; the input and its complement) plus
    ``2 * backward_pool``, every candidate of every input of a step in one stream of
    ``batch_size`` passes; the bidirectional search places two regions per step (about 1.6x
    fewer passes for 64 regions). For a modular score both searches sort the regions by their
    value; for a monotone submodular score the greedy prefixes reach ``1 - 1/e`` of the best set
    of their size.

    Output: region ``r`` ranked ``k``-th (0 first) of ``M`` gets ``(M - k) / M``; ``ranking``
    returns the regions in order. Targets are searched one after the other (the sets depend on
    the target). Deterministic (``seed`` unused).
    """

    def __init__(self, model: Any, *, feature_mask: Any = None, baseline: Any = 0.0,
                 probabilities: bool = True, consistency: float = 20.0,
                 collaboration: float = 5.0, confidence: float = 0.01,
                 effectiveness: float = 0.0,
                 feature_extractor: Callable[[Any], torch.Tensor] | None = None,
                 search: str = "bidirectional", backward_pool: int = 8, **common: Any):
        super().__init__(model, feature_mask=feature_mask, baseline=baseline,
                         probabilities=probabilities, **common)
        self.consistency = check_non_negative("consistency", consistency)
        self.collaboration = check_non_negative("collaboration", collaboration)
        self.confidence = check_non_negative("confidence", confidence)
        self.effectiveness = check_non_negative("effectiveness", effectiveness)
        if feature_extractor is not None and not callable(feature_extractor):
            raise TypeError(f"feature_extractor must be a callable outputs -> (n, D) features "
                            f"or None, got {type(feature_extractor).__name__}")
        self.feature_extractor = feature_extractor
        self.search = check_choice("search", search, ("bidirectional", "greedy"))
        self.backward_pool = check_positive_int("backward_pool", backward_pool)

    def ranking(self, inputs: Any, targets: Any = None, *, forward_kwargs: Any = None
                ) -> torch.Tensor:
        """The regions in the order selected (labels ``0 .. M_i - 1`` of
        ``explain_groups(...).feature_mask``), ``(N, [T,] M)`` long, ``-1`` past an input's own
        number of regions."""
        values = self.explain_groups(inputs, targets, forward_kwargs=forward_kwargs).values
        order = values.nan_to_num(-1.0).argsort(dim=-1, descending=True, stable=True)
        return torch.where(values.isnan().sort(dim=-1, stable=True).values, -1, order)

    def _explain_groups(self, x: torch.Tensor, scorer: Scorer) -> GroupExplanation:
        masks = resolve_feature_mask(self.feature_mask, x)
        counts = (masks.flatten(1).amax(1) + 1).tolist()
        reference = self._reference(x)
        self._check_terms(x, scorer)
        values = torch.full((len(x), scorer.nb_targets, max(counts)), float("nan"))
        for j in range(scorer.nb_targets):
            terms = _Terms(scorer.column(j), self.confidence > 0 or self.effectiveness > 0,
                           self.feature_extractor)
            for i, order in enumerate(self._search(x, reference, masks, counts, terms)):
                values[i, j, order] = (counts[i] - torch.arange(counts[i])) / counts[i]
        heatmaps = torch.stack([values[i][:, masks[i]] for i in range(len(x))])
        return GroupExplanation(heatmaps, values, masks.clone())

    def _check_terms(self, x: torch.Tensor, scorer: Scorer) -> None:
        """Confidence and the default features need class scores; a feature extractor must give
        one row per input. One pass of the first input, before the search."""
        if self.confidence == 0 and self.effectiveness == 0:
            return
        outputs = scorer.forward(x[:1], torch.zeros(1, dtype=torch.long))
        tensor = scorer.selector.tensor(outputs)
        if (self.confidence > 0 or self.feature_extractor is None) and (
                tensor.ndim != 2 or tensor.shape[1] < 2):
            raise ValueError(f"confidence (and effectiveness with the default features) need "
                             f"class scores (n, K >= 2); the model's output has shape "
                             f"{tuple(tensor.shape)}: pass confidence=0 and effectiveness=0, or "
                             "a feature_extractor")
        if self.effectiveness > 0 and self.feature_extractor is not None:
            features = torch.as_tensor(self.feature_extractor(outputs))
            if features.ndim < 1 or len(features) != 1:
                raise ValueError(f"feature_extractor must return one row of features per "
                                 f"input; on one input it returned shape {tuple(features.shape)}")

    def _search(self, x: torch.Tensor, reference: torch.Tensor, masks: torch.Tensor,
                counts: list[int], terms: "_Terms") -> list[torch.Tensor]:
        """The order of the regions of every input for one target."""
        states = [_State(m, d) for m, d in zip(counts, self._distances(
            x, reference, masks, counts, terms))]

        def run(sets: list[torch.Tensor]) -> list[torch.Tensor]:
            return self._score_coalitions(terms, x, reference, masks, sets)

        bar = tqdm(total=sum(counts), desc=type(self).__name__, leave=False,
                   disable=not self.progress)
        while any(state.remaining.any() for state in states):
            candidates = [state.remaining.nonzero()[:, 0] for state in states]
            inserted = [state.with_each(state.forward, c) for state, c in zip(states, candidates)]
            scores = run([torch.cat([z, ~z]) for z in inserted])
            objectives = [self._objective(s, state.effectiveness(state.forward, c))
                          for s, state, c in zip(scores, states, candidates)]
            pools = []
            for state, c, objective in zip(states, candidates, objectives):
                if len(c) == 0:
                    pools.append(c)
                    continue
                best = int(objective.argmax())
                state.add(state.forward, int(c[best]))
                rest = torch.cat([torch.arange(best), torch.arange(best + 1, len(c))])
                backward = self.search == "bidirectional" and len(c) > self.backward_pool
                worst = objective[rest].argsort(stable=True)[:self.backward_pool]
                pools.append(c[rest[worst]] if backward else c[:0])
            bar.update(sum(len(c) > 0 for c in candidates))
            if all(len(pool) == 0 for pool in pools):
                continue
            inserted = [state.with_each(state.backward, p) for state, p in zip(states, pools)]
            scores = run([torch.cat([z, ~z]) for z in inserted])
            for state, pool, s in zip(states, pools, scores):
                if len(pool):
                    objective = self._objective(s, state.effectiveness(state.backward, pool))
                    state.add(state.backward, int(pool[objective.argmin()]))
            bar.update(sum(len(p) > 0 for p in pools))
        bar.close()
        return [torch.tensor(state.forward + state.backward[::-1]) for state in states]

    def _objective(self, scores: torch.Tensor, effectiveness: torch.Tensor) -> torch.Tensor:
        """``F`` of each candidate set from the scores of the sets ``(C, ...)`` followed by those
        of their complements."""
        scores = scores.double()
        kept, complement = scores[:len(scores) // 2], scores[len(scores) // 2:]
        objective = (self.consistency * kept[:, 0] + self.collaboration * (1 - complement[:, 0])
                     + self.effectiveness * effectiveness)
        if self.confidence > 0:
            objective = objective + self.confidence * kept[:, 1]
        return objective

    def _distances(self, x: torch.Tensor, reference: torch.Tensor, masks: torch.Tensor,
                   counts: list[int], terms: "_Terms") -> list[torch.Tensor | None]:
        """``arccos(cos(phi_i, phi_j)) / pi`` between the features of the regions alone,
        ``(M_i, M_i)`` per input (``None`` when effectiveness is off)."""
        if self.effectiveness == 0:
            return [None] * len(x)
        singles = [torch.eye(m, dtype=torch.bool) for m in counts]
        scores = self._score_coalitions(terms, x, reference, masks, singles)
        distances = []
        for s in scores:
            phi = torch.nn.functional.normalize(s[:, 2:].double(), dim=1)
            distances.append(torch.arccos((phi @ phi.T).clamp(-1, 1)) / math.pi)
        return distances


class _State:
    """One input's search: the regions ranked first (``forward``), last (``backward``, in the
    order found: the last one found is ranked just after ``forward``), and still free."""

    def __init__(self, m: int, distances: torch.Tensor | None):
        self.remaining = torch.ones(m, dtype=torch.bool)
        self.forward: list[int] = []
        self.backward: list[int] = []
        self.distances = distances

    def with_each(self, chosen: list[int], candidates: torch.Tensor) -> torch.Tensor:
        """Coalitions ``(C, M)``: ``chosen`` plus each candidate."""
        z = torch.zeros(len(candidates), len(self.remaining), dtype=torch.bool)
        z[:, chosen] = True
        z[torch.arange(len(candidates)), candidates] = True
        return z

    def add(self, chosen: list[int], region: int) -> None:
        chosen.append(region)
        self.remaining[region] = False

    def effectiveness(self, chosen: list[int], candidates: torch.Tensor) -> torch.Tensor:
        """``sum_{i in S} min_{j in S, j != i} d_ij`` of ``S = chosen + {a}`` for each candidate
        ``a`` (a region alone: 1)."""
        if self.distances is None:
            return torch.zeros(len(candidates), dtype=torch.float64)
        d = self.distances
        if not chosen:
            return torch.ones(len(candidates), dtype=torch.float64)
        inside = d[chosen][:, chosen] + torch.eye(len(chosen), dtype=torch.float64)
        nearest = inside.amin(1).clamp(max=1.0)                 # (|S|,) before the candidate
        to_candidates = d[chosen][:, candidates]                # (|S|, C)
        return (torch.minimum(nearest[:, None], to_candidates).sum(0)
                + to_candidates.amin(0).clamp(max=1.0))


@dataclass(frozen=True)
class _Terms:
    """A scorer for :func:`score_coalitions` whose rows are ``[s_t, confidence, phi...]`` (only
    ``s_t`` when neither confidence nor effectiveness is used) for one target column."""

    scorer: Scorer
    full: bool
    feature_extractor: Callable[[Any], torch.Tensor] | None

    @property
    def model(self) -> Any:
        return self.scorer.model

    def __call__(self, batch: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        outputs = self.scorer.forward(batch, rows)
        target = self.scorer.select(outputs, rows)[:, :1].double()
        if not self.full:
            return target.cpu()
        tensor = self.scorer.selector.tensor(outputs)
        p = self.model.to_probabilities(tensor.double()) if tensor.ndim == 2 and \
            tensor.shape[1] > 1 else None
        confidence = (1 + torch.special.xlogy(p, p).sum(1, keepdim=True) / math.log(p.shape[1])
                      if p is not None else torch.zeros_like(target))
        features = p if self.feature_extractor is None else torch.as_tensor(
            self.feature_extractor(outputs)).double().reshape(len(batch), -1)
        return torch.cat([target, confidence.to(target.device), features.to(target.device)],
                         1).cpu()
