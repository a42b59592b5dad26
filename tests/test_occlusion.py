"""Occlusion against the analytic answer of linear models, a brute-force loop written here,
Captum, and across model kinds (torch, scikit-learn, numpy callable)."""
import numpy as np
import pytest
import torch
from captum.attr import Occlusion as CaptumOcclusion
from sklearn.linear_model import LogisticRegression
from torch import nn

from conftest import small_cnn
from pellucid.explain import Occlusion


def linear_pair(n_features=6, n_classes=3, seed=0):
    """A torch Linear and the numpy function computing the same logits."""
    torch.manual_seed(seed)
    linear = nn.Linear(n_features, n_classes)
    w, b = linear.weight.detach().numpy(), linear.bias.detach().numpy()
    return linear, (lambda a: a @ w.T + b)


def test_linear_tabular_with_zero_baseline_is_w_times_x(tabular):
    linear, _ = linear_pair()
    heatmaps = Occlusion(linear, baseline=0.0).explain(tabular, 2)
    assert heatmaps.shape == (5, 6) and heatmaps.dtype == torch.float32
    torch.testing.assert_close(heatmaps, linear.weight[2].detach() * tabular, rtol=0, atol=1e-6)


def test_linear_tabular_with_baseline_is_w_times_x_minus_b(tabular):
    linear, _ = linear_pair()
    baseline = torch.linspace(-1, 1, 6)
    heatmaps = Occlusion(linear, baseline=baseline).explain(tabular, 1)
    expected = linear.weight[1].detach() * (tabular - baseline)
    torch.testing.assert_close(heatmaps, expected, rtol=0, atol=1e-6)


def test_tabular_patches_average_the_drops_of_the_windows_covering_a_feature(tabular):
    linear, _ = linear_pair()
    contributions = linear.weight[0].detach() * tabular  # drop of hiding a set = its sum
    # patch 4 on 6 features, stride 4: windows [0, 4) and the flush last window [2, 6)
    first, last = contributions[:, :4].sum(1), contributions[:, 2:].sum(1)
    expected = torch.stack([first, first, (first + last) / 2, (first + last) / 2, last, last], 1)
    heatmaps = Occlusion(linear, patch_size=4).explain(tabular, 0)
    torch.testing.assert_close(heatmaps, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("patch_size, stride", [(4, 2), ((4, 6), (2, 5)), (16, 1), (1, 1)])
@pytest.mark.parametrize("baseline", [0.0, 0.5, "mean"])
def test_images_agree_with_captum(images, patch_size, stride, baseline):
    """Captum occludes the window on all channels and gives each channel element the average
    drop; our pixel map is that value (Captum's sum over channels is C times ours)."""
    model = small_cnn()
    targets = torch.tensor([0, 1, 2, 3])
    heatmaps = Occlusion(model, patch_size=patch_size, stride=stride, baseline=baseline,
                         batch_size=50, progress=False).explain(images, targets)
    window = patch_size if isinstance(patch_size, tuple) else (patch_size, patch_size)
    strides = stride if isinstance(stride, tuple) else (stride, stride)
    reference = images.mean(dim=(2, 3), keepdim=True) if baseline == "mean" else baseline
    captum = CaptumOcclusion(model).attribute(images, sliding_window_shapes=(3, *window),
                                              strides=(3, *strides), baselines=reference,
                                              target=targets)
    torch.testing.assert_close(captum.sum(dim=1), 3 * heatmaps, rtol=1e-4, atol=1e-7)
    assert torch.corrcoef(torch.stack([heatmaps.flatten(), captum.sum(1).flatten()]))[0, 1] > 0.999


def brute_force_occlusion(model, x, target, patch, stride, baseline):
    """Zeiler & Fergus written out: one window at a time, last window flush with the border,
    each pixel the mean drop of the windows covering it."""
    height, width = x.shape[2:]
    rows = sorted(set(list(range(0, height - patch + 1, stride)) + [height - patch]))
    cols = sorted(set(list(range(0, width - patch + 1, stride)) + [width - patch]))
    total, count = torch.zeros(len(x), height, width), torch.zeros(height, width)
    with torch.no_grad():
        full = model(x)[:, target]
        for r in rows:
            for c in cols:
                hidden = x.clone()
                hidden[:, :, r:r + patch, c:c + patch] = baseline
                total[:, r:r + patch, c:c + patch] += (full - model(hidden)[:, target])[:, None,
                                                                                        None]
                count[r:r + patch, c:c + patch] += 1
    assert (count > 0).all()
    return total / count


def test_images_when_stride_does_not_reach_the_border(cnn):
    x = torch.rand(2, 3, 15, 13, generator=torch.Generator().manual_seed(4))
    heatmaps = Occlusion(cnn, patch_size=4, stride=3, baseline=0.25).explain(x, 1)
    expected = brute_force_occlusion(cnn, x, 1, 4, 3, 0.25)
    torch.testing.assert_close(heatmaps, expected, rtol=1e-4, atol=1e-7)


def test_probabilities_flag_explains_the_softmax_drop(tabular):
    linear, _ = linear_pair()
    heatmaps = Occlusion(linear, probabilities=True).explain(tabular, 0)
    with torch.no_grad():
        full = torch.softmax(linear(tabular), 1)[:, 0]
        expected = torch.stack([full - torch.softmax(linear(tabular * (torch.arange(6) != j)),
                                                     1)[:, 0] for j in range(6)], 1)
    torch.testing.assert_close(heatmaps, expected, rtol=0, atol=1e-6)


def test_numpy_callable_gives_the_torch_answer(tabular):
    linear, function = linear_pair()
    from_torch = Occlusion(linear).explain(tabular, 2)
    from_numpy = Occlusion(function).explain(tabular.numpy(), 2)
    torch.testing.assert_close(from_numpy, from_torch, rtol=0, atol=1e-6)


def test_sklearn_logistic_regression_gives_the_torch_answer_on_probabilities():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 5)).astype(np.float32)
    labels = np.arange(60) % 3
    classifier = LogisticRegression(max_iter=500).fit(features, labels)
    linear = nn.Linear(5, 3)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(classifier.coef_))
        linear.bias.copy_(torch.from_numpy(classifier.intercept_))
    x = features[:4]
    from_sklearn = Occlusion(classifier, patch_size=2, stride=1).explain(x)
    from_torch = Occlusion(linear, patch_size=2, stride=1, probabilities=True).explain(x)
    assert from_sklearn.abs().max() > 1e-3
    torch.testing.assert_close(from_sklearn, from_torch, rtol=0, atol=1e-5)


def test_sklearn_on_images_matches_the_torch_pipeline():
    """Images reach a scikit-learn estimator flattened; the same Occlusion code path as a torch
    model (Flatten + Linear) with the same weights."""
    rng = np.random.default_rng(1)
    images = rng.random((40, 1, 8, 8)).astype(np.float32)
    labels = (images[:, 0, :4].mean((1, 2)) > images[:, 0, 4:].mean((1, 2))).astype(int)
    classifier = LogisticRegression(max_iter=1000).fit(images.reshape(40, -1), labels)
    coef = torch.from_numpy(classifier.coef_[0]).float()
    # binary: predict_proba = softmax of (0, d) with d the decision function
    linear = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with torch.no_grad():
        linear[1].weight.copy_(torch.stack([torch.zeros(64), coef]))
        linear[1].bias.copy_(torch.tensor([0.0, float(classifier.intercept_[0])]))
    x = torch.from_numpy(images[:3])
    from_sklearn = Occlusion(classifier, patch_size=4, stride=2).explain(x, 1)
    from_torch = Occlusion(linear, patch_size=4, stride=2, probabilities=True).explain(x, 1)
    assert from_sklearn.shape == (3, 8, 8)
    torch.testing.assert_close(from_sklearn, from_torch, rtol=0, atol=1e-5)


def test_occluded_copies_are_batched_and_counted(cnn, images):
    sizes = []
    cnn.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    Occlusion(cnn, patch_size=4, stride=4, batch_size=24, progress=False).explain(images, 0)
    windows = 4 * 4
    assert max(sizes) == 24
    assert sum(sizes) == 1 + len(images) * (windows + 1)  # +1: the pass reading the classes


def test_patch_larger_than_inputs_raises_before_any_pass(cnn, images, mlp, tabular):
    calls = []
    cnn.register_forward_pre_hook(lambda module, args: calls.append(1))
    with pytest.raises(ValueError, match="patch_size"):
        Occlusion(cnn, patch_size=(4, 17)).explain(images)
    with pytest.raises(ValueError, match="patch_size"):
        Occlusion(mlp, patch_size=7).explain(tabular)
    with pytest.raises(ValueError, match="int number of features"):
        Occlusion(mlp, patch_size=(2, 2)).explain(tabular)
    with pytest.raises(ValueError, match="blur"):
        Occlusion(mlp, baseline="blur").explain(tabular)
    assert calls == []
