"""Ground-truth agreement: each metric against scipy or OpenXAI's formula written out, and the
suppressor task, where gradients put weight on the suppressor and the true attribution (and
Haufe's activation pattern) does not."""
import numpy as np
import pytest
import torch
from scipy.stats import kendalltau, spearmanr
from sklearn.linear_model import LogisticRegression

from conftest import linear_model
from pellucid.datasets import load_additive, load_suppressor
from pellucid.explain import GradientInput, Saliency
from pellucid.metrics import (FeatureAgreement, RankAgreement, RankCorrelation, SignAgreement,
                              SuppressorMass)


def pair(n=6, f=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, f, generator=g), torch.randn(n, f, generator=g), torch.randn(
        n, f, generator=g)


def top_k(values, k):
    """OpenXAI: features sorted by decreasing |value| (distinct values here)."""
    return np.argsort(-np.abs(values))[:k]


def test_rank_correlation_is_scipy_s_spearman_and_kendall():
    x, h, truth = pair()
    for absolute in (True, False):
        a, b = (h.abs(), truth.abs()) if absolute else (h, truth)
        spearman = [spearmanr(p, q).statistic for p, q in zip(a.numpy(), b.numpy())]
        kendall = [kendalltau(p, q).statistic for p, q in zip(a.numpy(), b.numpy())]
        np.testing.assert_allclose(RankCorrelation(absolute=absolute)(x, h, masks=truth).scores,
                                   spearman, rtol=1e-6)
        np.testing.assert_allclose(RankCorrelation(method="kendall", absolute=absolute)(
            x, h, masks=truth).scores, kendall, rtol=1e-6)


def test_feature_rank_and_sign_agreement_follow_openxai():
    x, h, truth = pair()
    for k in (1, 3, 0.5):
        kk = k if isinstance(k, int) else round(k * 10)
        fa, ra, sa = [], [], []
        for p, q in zip(h.numpy(), truth.numpy()):
            tp, tq = top_k(p, kk), top_k(q, kk)
            common = set(tp) & set(tq)
            fa.append(len(common) / kk)
            ra.append(np.mean(tp == tq))
            sa.append(len([i for i in common if np.sign(p[i]) == np.sign(q[i])]) / kk)
        np.testing.assert_allclose(FeatureAgreement(k=k)(x, h, masks=truth).scores, fa)
        np.testing.assert_allclose(RankAgreement(k=k)(x, h, masks=truth).scores, ra)
        np.testing.assert_allclose(SignAgreement(k=k)(x, h, masks=truth).scores, sa)
    assert FeatureAgreement(k=4)(x, truth, masks=truth).mean == 1.0
    assert SignAgreement(k=4)(x, -truth, masks=truth).mean == 0.0
    with pytest.raises(ValueError, match="k must be"):
        FeatureAgreement(k=0)


def test_suppressor_mass_by_hand():
    h = torch.tensor([[1.0, -3.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    truth = torch.tensor([[1.0, 0.0, 0.0, 2.0], [1.0, 0.0, 0.0, 0.0]])
    x = torch.zeros(2, 4)
    np.testing.assert_allclose(SuppressorMass()(x, h, masks=truth).scores, [0.6, np.nan])
    np.testing.assert_allclose(SuppressorMass(features=[1])(x, h, masks=truth).scores,
                               [0.6, np.nan])
    np.testing.assert_allclose(SuppressorMass(features=[3])(x, h, masks=truth).scores,
                               [0.2, np.nan])
    with pytest.raises(ValueError, match="out of range"):
        SuppressorMass(features=[4])(x, h, masks=truth)
    with pytest.raises(ValueError, match="needs ground-truth masks"):
        SuppressorMass()(x, h)


def test_boolean_region_masks_are_the_truth_one_inside():
    x, h, _ = pair()
    region = torch.zeros(6, 10, dtype=torch.bool)
    region[:, :3] = True
    np.testing.assert_allclose(RankCorrelation()(x, h, masks=region).scores,
                               RankCorrelation()(x, h, masks=region.double().numpy()).scores)


def suppressor_scores():
    """A logistic regression on the suppressor task; every method's scores on its test set."""
    data = load_suppressor(n_train=2000, n_test=200, n_irrelevant=2, seed=0)
    fit = LogisticRegression(C=100.0).fit(data.x_train.numpy(), data.y_train.numpy())
    w = fit.coef_[0]
    model = linear_model(w, float(fit.intercept_[0]))
    x, truth = data.x_test, data.true_attributions_test
    # Haufe et al. (2014): the activation pattern cov(x) w, the same for every input
    pattern = torch.from_numpy(np.cov(data.x_train.numpy().T) @ w).float().expand_as(x)
    heatmaps = {
        "Saliency": Saliency(model, progress=False).explain(x, 0),
        "GradientInput": GradientInput(model, progress=False).explain(x, 0),
        "pattern": pattern,
        "truth": truth,
    }
    metrics = {"suppressor_mass": SuppressorMass(features=[1]), "rank": RankCorrelation(),
               "feature_agreement": FeatureAgreement(k=1)}
    return w, {name: {m: metric(x, h, masks=truth).mean for m, metric in metrics.items()}
               for name, h in heatmaps.items()}


def test_ground_truth_agreement_separates_methods_on_the_suppressor_task():
    """The optimal rule is about x1 - x2: gradients weigh the suppressor x2 as much as x1
    (mass ~0.5), the activation pattern and the truth put nothing on it."""
    w, scores = suppressor_scores()
    assert w[1] < -0.8 * w[0] < 0  # the model uses the suppressor
    assert scores["Saliency"]["suppressor_mass"] > 0.4
    assert scores["GradientInput"]["suppressor_mass"] > 0.3
    assert scores["pattern"]["suppressor_mass"] < 0.05
    assert scores["truth"]["suppressor_mass"] == 0.0
    assert scores["truth"]["feature_agreement"] == 1.0
    assert scores["pattern"]["feature_agreement"] == 1.0
    # with one relevant feature, rank metrics only see whether x1 comes first: Saliency's
    # |w1| > |w2| by a hair, so only the suppressor mass tells it from the pattern
    assert scores["Saliency"]["rank"] == pytest.approx(scores["pattern"]["rank"])


def test_rank_correlation_of_the_true_additive_attributions_is_one():
    data = load_additive(n_train=10, n_test=20, n_features=8, seed=0)
    x, truth = data.x_test, data.true_attributions_test
    np.testing.assert_allclose(RankCorrelation(absolute=False)(x, truth, masks=truth).scores, 1.0)
    noisy = truth + 0.5 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))
    assert 0.3 < RankCorrelation(absolute=False)(x, noisy, masks=truth).mean < 1.0
