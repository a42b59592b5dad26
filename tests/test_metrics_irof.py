"""IROF (Rieger & Hansen, 2020) against the formula written out by hand."""
import numpy as np
import pytest
import torch
from torch import nn

from pellucid.features import grid
from pellucid.metrics import Irof


def linear(weights):
    layer = nn.Linear(len(weights), 1, bias=False)
    with torch.no_grad():
        layer.weight[:] = torch.as_tensor(weights, dtype=torch.float32)
    return layer.eval()


def test_tabular_case_by_hand():
    # score = x0 + x1 + x2 + x3 = 10; the heatmap is the exact contribution w * x = x: groups
    # {x0, x1} (mean heat 1.5) and {x2, x3} (mean heat 3.5), so {x2, x3} goes first
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    heat = x.clone()
    metric = Irof(linear([1, 1, 1, 1]), feature_mask=torch.tensor([0, 0, 1, 1]), baseline=0.0,
                  probabilities=False, progress=False)
    result = metric(x, heat, 0)
    curve = [10 / 10, (1 + 2) / 10, 0 / 10]  # remove {x2, x3}, then {x0, x1}
    expected = 1 - (0.5 * (curve[0] + curve[1]) / 2 + 0.5 * (curve[1] + curve[2]) / 2)
    np.testing.assert_allclose(result.curves, [curve], rtol=1e-6)
    np.testing.assert_allclose(result.fractions, [0, 0.5, 1])
    np.testing.assert_allclose(result.scores, [expected], rtol=1e-6)  # 0.6
    # the reverse ranking removes the less important group first: less area over the curve
    worse = metric(x, -heat, 0)
    np.testing.assert_allclose(worse.curves, [[1.0, 0.7, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(worse.scores, [1 - (0.25 * 1.7 + 0.25 * 0.7)], rtol=1e-6)


def reference_irof(model, image, heat, segments, target, fill):
    """One image, written out: rank segments by mean heat, remove one by one, softmax score
    normalized by the first, 1 - trapezoid area over k / M."""
    labels = np.unique(segments)
    means = np.array([heat[segments == s].mean() for s in labels])
    order = labels[np.argsort(-means, kind="stable")]
    current = image.clone()
    curve = []
    for k in range(len(order) + 1):
        with torch.no_grad():
            curve.append(torch.softmax(model(current[None]), 1)[0, target].item())
        if k < len(order):
            current[:, torch.as_tensor(segments == order[k])] = fill[:, None]
    curve = np.array(curve) / curve[0]
    steps = np.linspace(0, 1, len(curve))
    return 1 - np.sum((curve[1:] + curve[:-1]) / 2 * np.diff(steps)), curve


def test_images_match_a_loop_over_segments_with_per_image_masks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Linear(16, 3)).eval()
    x = torch.rand(3, 3, 8, 8)
    x_copy = x.clone()
    heat = torch.randn(3, 8, 8)
    masks = torch.stack([grid((8, 8), 2), grid((8, 8), 3) * 7, grid((8, 8), 2).T])  # M: 4, 9, 4
    targets = torch.tensor([0, 2, 1])
    result = Irof(model, feature_mask=masks, batch_size=5, progress=False)(x, heat, targets)
    assert result.curves is None  # different numbers of groups
    for i in range(3):
        expected, curve = reference_irof(model, x[i], heat[i].numpy(), masks[i].numpy(),
                                         targets[i], x[i].mean(dim=(1, 2)))
        np.testing.assert_allclose(result.details["curves"][i], curve, rtol=1e-5)
        np.testing.assert_allclose(result.scores[i], expected, rtol=1e-5)
    assert torch.equal(x, x_copy)


def test_default_groups_are_slic_superpixels():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2)).eval()
    x = torch.rand(2, 3, 16, 16)
    result = Irof(model, progress=False)(x, torch.rand(2, 16, 16), 0)
    from pellucid.features import slic
    expected = slic(x, n_segments=50).flatten(1).max(1).values + 1
    np.testing.assert_array_equal(result.details["n_groups"], expected.numpy())


def test_non_positive_first_score_gives_nan_and_a_wrong_mask_raises():
    x = torch.tensor([[1.0, -2.0]])
    result = Irof(linear([1, 1]), baseline=0.0, probabilities=False, progress=False)(
        x, torch.ones(1, 2), 0)
    assert np.isnan(result.scores[0])
    with pytest.raises(ValueError, match="feature_mask must have shape"):
        Irof(linear([1, 1]), feature_mask=torch.tensor([0, 1, 2]), probabilities=False,
             progress=False)(
            x, torch.ones(1, 2), 0)
