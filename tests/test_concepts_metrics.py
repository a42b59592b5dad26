"""Concept importance through any pellucid explainer, and the concept metrics C-Deletion,
C-Insertion, C-muFidelity (Fel et al., 2023, "A Holistic Approach ...") as pellucid's own
Deletion / Insertion / MuFidelity on the concept-mask model.

The planted model of ``test_concepts_importance`` is exactly linear in its concept
coefficients: with masks ``m`` (1 keeps concept k everywhere, 0 removes it)
``f(m) = b + sum_k m_k c_k`` with ``c_k = mean_p u_k(p) (w_k . v)`` (written out in
``contributions``). Hence IG from 0, occlusion and the gradient give ``c_k``; total Sobol
indices ``c_k^2 / sum c_j^2``; RISE with keep probability ``p`` gives
``b + c_k + p sum_{j != k} c_j``; and the deletion curve after removing the concepts in an
order is ``b + sum of the c_k not yet removed``."""
import itertools

import numpy as np
import pytest
import torch

from pellucid.explain import (IntegratedGradients, Occlusion, Rise, SmoothGrad,
                              SobolAttribution)
from pellucid.metrics import Deletion, Insertion, MuFidelity
from test_concepts_importance import contributions, fitted_craft, planted  # noqa: F401


@pytest.fixture(scope="module")
def fitted(planted):  # noqa: F811
    a, _, _, h = planted
    craft = fitted_craft(planted, importance="occlusion")
    x = a[:6]
    c = contributions(craft.spatial_coefficients(x), craft.concepts_, h)     # (6, R)
    return craft, x, c


def test_importance_through_pellucid_explainers_matches_the_linear_formulas(fitted):
    craft, x, c = fitted
    exact = {
        "ig": lambda m: IntegratedGradients(m, steps=8, baseline=0.0, progress=False),
        "occlusion": lambda m: Occlusion(m, baseline=0.0, progress=False),
        "smoothgrad": lambda m: SmoothGrad(m, nb_samples=8, progress=False),
    }
    for name, explainer in exact.items():
        found = craft.estimate_importance(x, explainer=explainer)
        expected = c.abs() if name == "smoothgrad" else c                # |mean gradient|
        torch.testing.assert_close(craft.sample_importances_.double(), expected, atol=1e-4,
                                   rtol=1e-4, msg=name)
        torch.testing.assert_close(found, craft.sample_importances_.mean(0))
    sobol = craft.estimate_importance(
        x, explainer=lambda m: SobolAttribution(m, nb_design=256, batch_size=4096, progress=False))
    share = (c**2 / (c**2).sum(1, keepdims=True))
    torch.testing.assert_close(craft.sample_importances_.double(), share, atol=0.05, rtol=0)
    assert sobol.shape == (c.shape[1],)
    craft.estimate_importance(x, explainer=lambda m: Rise(
        m, nb_samples=4000, probabilities=False, batch_size=4096, progress=False))
    rise = craft.sample_importances_.double()
    # differences between concepts remove b and the shared sum: (1 - p)(c_k - c_j), p = 0.5
    torch.testing.assert_close(rise - rise[:, :1], 0.5 * (c - c[:, :1]),
                               atol=0.1 * float(c.abs().max()), rtol=0)


def normalized_area(curve):
    return (curve.sum() - curve[0] / 2 - curve[-1] / 2) / (len(curve) - 1)


def test_c_deletion_is_lowest_for_the_order_of_the_coefficients(fitted):
    craft, x, c = fitted
    model, masks, kwargs = craft.concept_space(x)
    deletion = Deletion(model, baseline=0.0, probabilities=False, progress=False)
    insertion = Insertion(model, baseline=0.0, probabilities=False, progress=False)
    n_concepts = c.shape[1]
    scores, inserted = {}, {}
    for order in itertools.permutations(range(n_concepts)):
        ranks = torch.zeros(n_concepts)
        ranks[list(order)] = torch.arange(n_concepts, 0, -1, dtype=torch.float32)
        heat = ranks.expand(len(x), -1).clone()                       # concept order[0] first
        scores[order] = deletion(masks, heat, 0, forward_kwargs=kwargs).scores
        inserted[order] = insertion(masks, heat, 0, forward_kwargs=kwargs).scores
    for i in range(len(x)):
        best = min(scores, key=lambda order: scores[order][i])
        assert list(best) == np.argsort(-c[i].numpy(), kind="stable").tolist()
        most = max(inserted, key=lambda order: inserted[order][i])
        assert list(most) == list(best)
    # the curve written out: b + sum of the contributions not yet removed
    order = tuple(range(n_concepts))
    with torch.no_grad():
        b = model(torch.zeros(1, n_concepts), kwargs["coefficients"][:1])[0, 0].double()
    for i in range(len(x)):
        with torch.no_grad():
            bi = model(torch.zeros(1, n_concepts), kwargs["coefficients"][i:i + 1])[0, 0]
        curve = torch.stack([bi.double() + c[i, list(order[k:])].sum()
                             for k in range(n_concepts + 1)])
        assert scores[order][i] == pytest.approx(float(normalized_area(curve)), rel=1e-5)
    assert torch.isfinite(b)


def test_c_mu_fidelity_is_one_for_the_true_contributions(fitted):
    """f(1) - f(1 with m_S = 0) = sum_{k in S} c_k exactly: correlation 1."""
    craft, x, c = fitted
    model, masks, kwargs = craft.concept_space(x)
    mu = MuFidelity(model, subset_fraction=0.5, nb_samples=32, baseline=0.0, progress=False)
    result = mu(masks, c.float(), 0, forward_kwargs=kwargs)
    np.testing.assert_allclose(result.scores, 1.0, atol=1e-4)
    shuffled = mu(masks, c.float().flip(1), 0, forward_kwargs=kwargs)
    assert shuffled.mean < 0.9
