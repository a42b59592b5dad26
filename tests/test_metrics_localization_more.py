"""LocalizationAUC, TopKIntersection and Focus against hand-written formulas."""
import numpy as np
import pytest
import torch

from pellucid.metrics import Focus, LocalizationAUC, TopKIntersection
from pellucid.metrics.localization import quadrant_masks


def data(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 6, 8, generator=g)
    h = torch.randn(n, 6, 8, generator=g)
    masks = torch.rand(n, 6, 8, generator=g) < 0.3
    return x, h, masks


def test_localization_auc_is_the_probability_that_inside_outranks_outside():
    """Mann-Whitney by brute force over all (inside, outside) pairs, ties one half."""
    x, h, masks = data()
    h = (h * 2).round() / 2  # ties
    expected = []
    for p, m in zip(h.reshape(4, -1).numpy(), masks.reshape(4, -1).numpy()):
        inside, outside = p[m], p[~m]
        diff = inside[:, None] - outside[None, :]
        expected.append(((diff > 0) + 0.5 * (diff == 0)).mean())
    np.testing.assert_allclose(LocalizationAUC()(x, h, masks=masks).scores, expected, rtol=1e-12)
    full = torch.ones_like(masks)
    assert np.isnan(LocalizationAUC()(x, h, masks=full).scores).all()


def test_top_k_intersection_by_hand():
    x, h, masks = data()
    for k in (1, 5, 0.25):
        kk = k if isinstance(k, int) else round(k * 48)
        expected = [m[np.argsort(-p, kind="stable")[:kk]].mean()
                    for p, m in zip(h.reshape(4, -1).numpy(), masks.reshape(4, -1).numpy())]
        np.testing.assert_allclose(TopKIntersection(k=k)(x, h, masks=masks).scores, expected)
    with pytest.raises(ValueError, match="k must be"):
        TopKIntersection(k=1.5)


def test_focus_is_the_positive_relevance_share_in_the_target_quadrants():
    x, h, _ = data()
    quadrants = torch.tensor([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1], [1, 1, 1, 0]]).bool()
    masks = quadrant_masks(quadrants, 6, 8)
    assert masks[1, :3, 4:].all() and masks[1, 3:, :4].all() and not masks[1, :3, :4].any()
    positive = h.clamp(min=0)
    blocks = [positive[:, :3, :4], positive[:, :3, 4:], positive[:, 3:, :4], positive[:, 3:, 4:]]
    sums = torch.stack([b.sum((1, 2)) for b in blocks], 1).double()
    expected = (sums * quadrants).sum(1) / sums.sum(1)
    np.testing.assert_allclose(Focus()(x, h, masks=masks).scores, expected.numpy(), rtol=1e-6)
    # a mask that only touches a quadrant (the object's region) selects the whole quadrant
    touching = torch.zeros_like(masks)
    touching[0, 0, 0] = True
    touching[1, 2, 5], touching[1, 4, 1] = True, True
    touching[2, 5, 7] = True
    touching[3, 0, 0], touching[3, 0, 7], touching[3, 5, 0] = True, True, True
    np.testing.assert_allclose(Focus()(x, h, masks=touching).scores, expected.numpy(),
                               rtol=1e-6)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        quadrant_masks(torch.ones(2, 3), 6, 8)


def test_focus_of_a_map_inside_the_target_quadrant_is_one():
    h = torch.zeros(1, 6, 8)
    h[0, 4, 5] = 2.0
    h[0, 1, 1] = -3.0  # negative relevance elsewhere does not count
    masks = quadrant_masks([[0, 0, 0, 1]], 6, 8)
    assert Focus()(torch.rand(1, 3, 6, 8), h, masks=masks).scores[0] == 1.0
