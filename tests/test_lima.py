"""Lima (LiMA, Chen et al. 2025): the greedy guarantee on a known submodular score (weighted
coverage, optimum enumerated), both searches sort a modular score by value, the ranking equals
the paper's score and search written out here with direct model calls, the pass counts of
both searches, and clear errors."""
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import linear_model, small_cnn
from pellucid import features
from pellucid.explain import Lima
from pellucid.selectors import RegressionOutput


class Coverage(nn.Module):
    """A weighted coverage function of the 3 x 3 cells of a 6 x 6 image: cell ``i`` is present
    when its pixels are on; ``f = sum_u w_u max_i A[u, i] present_i`` (monotone submodular)."""

    def __init__(self, cover: torch.Tensor, weights: torch.Tensor):
        super().__init__()
        self.register_buffer("cover", cover.float())
        self.register_buffer("weights", weights.float())

    def forward(self, x):
        present = nn.functional.avg_pool2d(x[:, :1], 2).flatten(1)      # (n, 9) in [0, 1]
        covered = (self.cover[None] * present[:, None, :]).amax(2)       # (n, U)
        return covered @ self.weights                                     # (n,)


def coverage_value(cover, weights, subset):
    return float(weights[cover[:, list(subset)].any(1)].sum()) if subset else 0.0


def forward_length(m, pool, search):
    """How many regions the forward side of the search ranks."""
    count, remaining = 0, m
    while remaining:
        count, remaining = count + 1, remaining - 1
        if search == "bidirectional" and remaining + 1 > pool:
            remaining -= 1
    return count


@pytest.mark.parametrize("search", ["greedy", "bidirectional"])
@pytest.mark.parametrize("seed", range(4))
def test_greedy_prefixes_reach_1_minus_1_over_e_of_the_enumerated_optimum(search, seed):
    generator = torch.Generator().manual_seed(seed)
    cover = torch.rand(12, 9, generator=generator) < 0.3
    weights = torch.rand(12, generator=generator) ** 3          # a few heavy elements
    model = Coverage(cover, weights)
    x = torch.ones(1, 1, 6, 6)
    explainer = Lima(model, feature_mask=features.grid((6, 6), 3), probabilities=False,
                     consistency=1.0, collaboration=0.0, confidence=0.0, search=search,
                     backward_pool=2, progress=False)
    order = explainer.ranking(x, RegressionOutput())[0].tolist()
    assert sorted(order) == list(range(9))
    for k in range(1, forward_length(9, 2, search) + 1):
        best = max(coverage_value(cover, weights, s) for s in itertools.combinations(range(9), k))
        reached = coverage_value(cover, weights, order[:k])
        assert reached >= (1 - 1 / math.e) * best - 1e-6, (k, reached, best)


@pytest.mark.parametrize("search", ["greedy", "bidirectional"])
def test_a_modular_score_is_sorted_by_value_by_both_searches(search):
    """Consistency + collaboration of a linear model is ``2 sum_{i in S} w_i x_i`` + const:
    both searches must rank the features by ``w_i x_i`` (each input its own order)."""
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(12, generator=generator)
    x = torch.randn(3, 12, generator=generator)
    explainer = Lima(linear_model(w), probabilities=False, consistency=1.0, collaboration=1.0,
                     confidence=0.0, search=search, backward_pool=3, progress=False)
    expected = (w * x).argsort(dim=1, descending=True)
    torch.testing.assert_close(explainer.ranking(x, RegressionOutput()), expected)
    heatmaps = explainer.explain(x, RegressionOutput())
    torch.testing.assert_close(heatmaps.argsort(dim=1, descending=True), expected)
    assert heatmaps.max() == 1.0 and torch.isclose(heatmaps.min(), torch.tensor(1 / 12))


def written_out_order(model, x, mask, target, weights, search, pool, extractor):
    """LiMA's score and search with one direct model call per set (float64)."""
    m = int(mask.max()) + 1
    consistency, collaboration, confidence, effectiveness = weights

    def outputs(subset):
        keep = torch.zeros(m, dtype=torch.bool)
        keep[list(subset)] = True
        with torch.no_grad():
            return model.double()(x.double() * keep[mask])

    def probabilities(subset):
        return torch.softmax(outputs(subset), 1)[0]

    phi = [nn.functional.normalize((extractor or (lambda o: torch.softmax(o, 1)))(
        outputs({i})).double().reshape(-1), dim=0) for i in range(m)]
    distance = [[math.acos(max(-1.0, min(1.0, float(a @ b)))) / math.pi for b in phi]
                for a in phi]

    def score(subset):
        p, q = probabilities(subset), probabilities(set(range(m)) - subset)
        entropy = -float((p * torch.log(p)).sum())
        spread = sum(min([distance[i][j] for j in subset if j != i], default=1.0)
                     for i in subset)
        return (consistency * float(p[target]) + collaboration * (1 - float(q[target]))
                + confidence * (1 - entropy / math.log(len(p))) + effectiveness * spread)

    forward, backward, remaining = [], [], set(range(m))
    while remaining:
        candidates = sorted(remaining)
        scores = [score(set(forward) | {a}) for a in candidates]
        best = candidates[int(np.argmax(scores))]
        forward.append(best)
        remaining.remove(best)
        if search == "bidirectional" and len(candidates) > pool:
            rest = sorted([(s, a) for s, a in zip(scores, candidates) if a != best],
                          key=lambda pair: pair[0])[:pool]
            worst = min(rest, key=lambda pair: score(set(backward) | {pair[1]}))[1]
            backward.append(worst)
            remaining.remove(worst)
    return forward + backward[::-1]


@pytest.mark.parametrize("search, extractor", [("greedy", None), ("bidirectional", None),
                                               ("bidirectional", lambda outputs: outputs)])
def test_the_ranking_is_the_paper_s_score_and_search_written_out(search, extractor):
    model = small_cnn()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    mask = features.grid((16, 16), 3)
    weights = (1.0, 1.0, 0.5, 0.3)
    explainer = Lima(model, feature_mask=mask, consistency=weights[0],
                     collaboration=weights[1], confidence=weights[2], effectiveness=weights[3],
                     feature_extractor=extractor, search=search, backward_pool=3,
                     batch_size=7, progress=False)
    targets = [1, 4]
    ranking = explainer.ranking(x, targets)
    for i, target in enumerate(targets):
        expected = written_out_order(small_cnn(), x[i:i + 1], mask, target, weights, search, 3,
                                     extractor)
        assert ranking[i].tolist() == expected


def test_the_bidirectional_search_needs_fewer_passes():
    """Rows seen by the model: 2 |C| per forward step, 2 * pool per backward step (plus one
    input binding the targets); 64 regions: 4160 + 1 against 2592 + 1, a ratio of 1.6."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, 3)).eval()  # the count is the model's
    torch.nn.init.normal_(model[1].weight, generator=torch.Generator().manual_seed(0))
    x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    rows = {}
    for search in ("greedy", "bidirectional"):
        sizes = []
        handle = model.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
        try:
            order = Lima(model, search=search, confidence=0.0, progress=False,
                         batch_size=500).ranking(x, 0)
        finally:
            handle.remove()
        assert sorted(order[0].tolist()) == list(range(64))
        rows[search] = sum(sizes)
    assert rows["greedy"] == 1 + sum(2 * c for c in range(1, 65))
    steps = [c for c in range(64, 0, -2) if c > 8]
    tail = 64 - 2 * len(steps)
    assert rows["bidirectional"] == 1 + sum(2 * c + 16 for c in steps) + sum(
        2 * c for c in range(1, tail + 1))


def test_regions_per_input_may_differ_and_the_ranking_is_padded():
    model = small_cnn()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    mask = torch.stack([features.grid((16, 16), 2), features.grid((16, 16), 3)])
    explainer = Lima(model, feature_mask=mask, progress=False)
    result = explainer.explain_groups(x, 0)
    ranking = explainer.ranking(x, 0)
    assert ranking.shape == (2, 9)
    assert sorted(ranking[0, :4].tolist()) == [0, 1, 2, 3] and (ranking[0, 4:] == -1).all()
    assert sorted(ranking[1].tolist()) == list(range(9))
    assert torch.isnan(result.values[0, 4:]).all()
    torch.testing.assert_close(result.heatmaps[0], result.values[0][mask[0]])


def test_bad_settings_and_outputs_raise_clearly():
    model = small_cnn()
    with pytest.raises(ValueError, match="search"):
        Lima(model, search="random")
    with pytest.raises(ValueError, match="confidence"):
        Lima(model, confidence=-1.0)
    with pytest.raises(ValueError, match="backward_pool"):
        Lima(model, backward_pool=0)
    with pytest.raises(TypeError, match="feature_extractor"):
        Lima(model, feature_extractor="penultimate")
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="one row of features per input"):
        Lima(model, effectiveness=1.0, feature_extractor=lambda outputs: outputs[0],
             progress=False).explain(x)
    regression = linear_model([1.0, 2.0, 3.0])
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="class scores"):
        Lima(regression, probabilities=False, progress=False).explain(x, RegressionOutput())
    ranking = Lima(regression, probabilities=False, confidence=0.0, progress=False).ranking(
        torch.ones(1, 3), RegressionOutput())
    assert ranking.tolist() == [[2, 1, 0]]
