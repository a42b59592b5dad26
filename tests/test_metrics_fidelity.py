"""Deletion, Insertion and MuFidelity against the RISE reference protocol and analytic answers."""
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from pellucid.metrics import Deletion, Insertion, MetricResult, MuFidelity
from pellucid._imaging import gaussian_blur, gaussian_kernel1d

from conftest import Recorder, small_cnn


# --- the RISE reference protocol, written out independently (eclique/RISE evaluation.py) ------
def rise_gkern(klen, nsig, channels):
    """RISE's ``gkern``: a dirac smoothed by scipy's gaussian_filter, one kernel per channel."""
    dirac = np.zeros((klen, klen))
    dirac[klen // 2, klen // 2] = 1
    k = gaussian_filter(dirac, nsig)
    kern = np.zeros((channels, channels, klen, klen))
    for c in range(channels):
        kern[c, c] = k
    return torch.from_numpy(kern.astype("float32"))


def rise_auc(arr):
    return (arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1)


def rise_single_run(model, img_tensor, explanation, mode, step, substrate_fn):
    """CausalMetric.single_run without the plotting: one image, one forward pass per step."""
    _, channels, height, width = img_tensor.shape
    hw = height * width
    pred = model(img_tensor)
    c = int(torch.max(pred, 1)[1][0])
    n_steps = (hw + step - 1) // step
    if mode == "del":
        start, finish = img_tensor.clone(), substrate_fn(img_tensor)
    else:
        start, finish = substrate_fn(img_tensor), img_tensor.clone()
    scores = np.empty(n_steps + 1)
    salient_order = np.flip(np.argsort(explanation.reshape(-1, hw), axis=1), axis=-1)
    for i in range(n_steps + 1):
        pred = model(start)
        scores[i] = pred[0, c]
        if i < n_steps:
            coords = salient_order[:, step * i:step * (i + 1)]
            start.numpy().reshape(1, channels, hw)[0, :, coords] = \
                finish.numpy().reshape(1, channels, hw)[0, :, coords]
    return scores


@pytest.mark.parametrize("step", [None, 7])
def test_deletion_and_insertion_equal_the_rise_reference(step):
    torch.manual_seed(0)
    cnn = small_cnn(n_classes=5)
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    heatmaps = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(4))
    rise_step = step or int(np.ceil(16 * 16 / 100))
    softmax_model = nn.Sequential(cnn, nn.Softmax(dim=1)).eval()
    kern = rise_gkern(11, 5, 3)
    substrates = {"del": torch.zeros_like,
                  "ins": lambda x: nn.functional.conv2d(x, kern, padding=11 // 2)}
    with torch.no_grad():
        reference = {mode: np.stack([rise_single_run(softmax_model, images[i:i + 1],
                                                     heatmaps[i].numpy(), mode, rise_step, fn)
                                     for i in range(3)])
                     for mode, fn in substrates.items()}
    for metric, mode in ((Deletion(cnn, step=step, progress=False), "del"),
                         (Insertion(cnn, step=step, progress=False), "ins")):
        result = metric(images, heatmaps)
        assert isinstance(result, MetricResult)
        n_points = (256 + rise_step - 1) // rise_step + 1
        assert result.curves.shape == reference[mode].shape == (3, n_points)
        np.testing.assert_allclose(result.curves, reference[mode], atol=1e-6)
        expected_auc = [rise_auc(curve) for curve in reference[mode]]
        np.testing.assert_allclose(result.scores, expected_auc, atol=1e-6)
        assert result.fractions[0] == 0 and result.fractions[-1] == 1
    assert not Deletion(cnn).higher_is_better and Insertion(cnn).higher_is_better


def test_rise_blur_is_the_reference_gaussian_filter_kernel():
    k1 = gaussian_kernel1d(11, 5.0).double()
    dirac = np.zeros((11, 11))
    dirac[5, 5] = 1
    np.testing.assert_allclose(np.outer(k1, k1), gaussian_filter(dirac, 5), atol=1e-7)
    x = torch.rand(2, 3, 12, 9, generator=torch.Generator().manual_seed(0))
    reference = nn.functional.conv2d(x, rise_gkern(11, 5, 3), padding=5)
    torch.testing.assert_close(gaussian_blur(x), reference, atol=1e-6, rtol=0)


def test_results_do_not_depend_on_batch_size(cnn, images):
    heatmaps = torch.randn(4, 16, 16, generator=torch.Generator().manual_seed(0))
    small = Deletion(cnn, batch_size=1, progress=False)(images, heatmaps, 2)
    large = Deletion(cnn, batch_size=1000, progress=False)(images, heatmaps, 2)
    np.testing.assert_allclose(small.curves, large.curves, atol=1e-6)


def linear_binary_model(weights):
    """Logits (0, w.x): the softmax probability of class 1 is sigmoid(w.x)."""
    model = nn.Linear(len(weights), 2, bias=False)
    with torch.no_grad():
        model.weight.zero_()
        model.weight[1] = weights
    return model.eval()


def test_tabular_deletion_curve_is_the_analytic_sigmoid():
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(6, generator=g), torch.randn(4, 6, generator=g)
    heatmaps = torch.randn(4, 6, generator=g)
    result = Deletion(linear_binary_model(w), progress=False)(x, heatmaps, targets=1)
    order = torch.argsort(heatmaps, dim=1, descending=True)
    expected = np.empty((4, 7))
    for n in range(4):
        contributions = (w * x[n])[order[n]]
        for i in range(7):  # first i features (in heatmap order) deleted to 0
            expected[n, i] = torch.sigmoid(contributions[i:].sum())
    np.testing.assert_allclose(result.curves, expected, atol=1e-6)
    np.testing.assert_allclose(result.fractions, np.arange(7) / 6)


def test_regression_models_use_the_raw_output():
    g = torch.Generator().manual_seed(5)
    w, x = torch.randn(5, generator=g), torch.randn(3, 5, generator=g)
    regression = lambda array: array @ w.numpy()  # noqa: E731 (a numpy callable, one output)
    with pytest.raises(ValueError, match=r"output has shape \(1, 1\).*probabilities=False"):
        Deletion(regression)(x, w * x)
    recorder = Recorder(regression)
    with pytest.raises(ValueError, match="probabilities=True"):
        Deletion(recorder, batch_size=2)(x, w * x)  # before predicting every input
    assert [len(batch) for batch in recorder.batches] == [1]
    result = Insertion(regression, probabilities=False, progress=False)(x, w * x)
    order = torch.argsort(w * x, dim=1, descending=True)
    contributions = torch.gather(w * x, 1, order)
    expected = torch.cat([torch.zeros(3, 1), contributions.cumsum(1)], 1)  # inserted from 0
    np.testing.assert_allclose(result.curves, expected.numpy(), atol=1e-5)


def test_linear_tabular_w_times_x_beats_a_random_heatmap():
    g = torch.Generator().manual_seed(1)
    n_features = 12
    w, x = torch.randn(n_features, generator=g), torch.randn(300, n_features, generator=g)
    model = linear_binary_model(w)
    true_heatmaps, random_heatmaps = w * x, torch.rand(300, n_features, generator=g)
    deletion, insertion = Deletion(model, progress=False), Insertion(model, progress=False)
    d_true, d_random = deletion(x, true_heatmaps, 1).mean, deletion(x, random_heatmaps, 1).mean
    i_true, i_random = insertion(x, true_heatmaps, 1).mean, insertion(x, random_heatmaps, 1).mean
    print(f"deletion AUC w*x {d_true:.3f} vs random {d_random:.3f}; "
          f"insertion AUC w*x {i_true:.3f} vs random {i_random:.3f}")
    assert d_true < d_random - 0.1
    assert i_true > i_random + 0.1


def test_mu_fidelity_is_one_for_exact_attributions_of_linear_models():
    g = torch.Generator().manual_seed(2)
    w, x = torch.randn(10, generator=g), torch.randn(5, 10, generator=g)
    model = linear_binary_model(w)
    result = MuFidelity(model, nb_samples=64, progress=False)(x, w * x, targets=1)
    np.testing.assert_allclose(result.scores, 1.0, atol=1e-6)
    assert result.details["subset_size"] == 2
    random = MuFidelity(model, nb_samples=64, progress=False)(
        x, torch.rand(5, 10, generator=g), targets=1)
    assert random.mean < 0.9

    images = torch.randn(3, 2, 12, 12, generator=g)
    image_model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 12 * 12, 3)).eval()
    gradient_times_input = (image_model[1].weight[2].view(2, 12, 12) * images).detach()
    exact = MuFidelity(image_model, grid_size=4, nb_samples=32, progress=False)(
        images, gradient_times_input, targets=2)  # (N, C, H, W) heatmaps are summed
    np.testing.assert_allclose(exact.scores, 1.0, atol=1e-6)


def test_mu_fidelity_is_seeded(cnn, images):
    heatmaps = torch.rand(4, 16, 16, generator=torch.Generator().manual_seed(5))
    first = MuFidelity(cnn, grid_size=4, nb_samples=16, seed=3, progress=False)(images, heatmaps)
    again = MuFidelity(cnn, grid_size=4, nb_samples=16, seed=3, progress=False)(images, heatmaps)
    other = MuFidelity(cnn, grid_size=4, nb_samples=16, seed=4, progress=False)(images, heatmaps)
    np.testing.assert_array_equal(first.scores, again.scores)
    assert not np.allclose(first.scores, other.scores)
    assert first.details["output_drops"].shape == (4, 16)


@pytest.mark.parametrize("metric", [Deletion, Insertion, MuFidelity])
def test_bad_heatmaps_raise_clear_errors(metric, cnn, images):
    expected = r"heatmaps must have shape \(4, 16, 16\).*got \(4, 15, 16\)"
    with pytest.raises(ValueError, match=expected):
        metric(cnn)(images, torch.rand(4, 15, 16))
    nan_heatmaps = torch.rand(4, 16, 16)
    nan_heatmaps[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="heatmaps must be finite"):
        metric(cnn)(images, nan_heatmaps)
    with pytest.raises(ValueError, match="targets"):
        metric(cnn)(images, torch.rand(4, 16, 16), targets=[0, 1])


def test_bad_hyperparameters_raise(cnn, mlp, tabular):
    with pytest.raises(ValueError, match="step"):
        Deletion(cnn, step=0)
    with pytest.raises(ValueError, match="baseline"):
        Insertion(cnn, baseline="noise")
    with pytest.raises(ValueError, match="blur"):
        Deletion(mlp, baseline="blur")(tabular, torch.rand(5, 6))
    with pytest.raises(ValueError, match="subset_fraction"):
        MuFidelity(cnn, subset_fraction=1.5)
    with pytest.raises(ValueError, match="grid_size"):
        MuFidelity(cnn, grid_size=20)(torch.rand(2, 3, 16, 16), torch.rand(2, 16, 16))


def test_nothing_the_user_passed_is_changed(cnn, images):
    heatmaps = torch.rand(4, 16, 16)
    before = ({k: v.clone() for k, v in cnn.state_dict().items()}, images.clone(), heatmaps.clone())
    for metric in (Deletion(cnn, progress=False), Insertion(cnn, baseline="mean", progress=False),
                   MuFidelity(cnn, grid_size=4, nb_samples=8, progress=False)):
        metric(images, heatmaps)
    assert all(torch.equal(v, before[0][k]) for k, v in cnn.state_dict().items())
    assert torch.equal(images, before[1]) and torch.equal(heatmaps, before[2])
    assert not cnn.training


def test_works_with_a_scikit_learn_classifier():
    from sklearn.linear_model import LogisticRegression
    g = np.random.default_rng(0)
    x = g.normal(size=(80, 5)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    clf = LogisticRegression().fit(x, y)
    heatmaps = clf.coef_[0] * x
    result = Deletion(clf, progress=False)(x, heatmaps, targets=1)
    # the same model in torch: logits (0, w.x + b), whose softmax is predict_proba
    linear = nn.Linear(5, 2).eval()
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(np.stack([np.zeros(5), clf.coef_[0]])))
        linear.bias.copy_(torch.tensor([0.0, clf.intercept_[0]]))
    reference = Deletion(linear, progress=False)(x, heatmaps, targets=1)
    assert result.curves.shape == (80, 6)
    np.testing.assert_allclose(result.curves, reference.curves, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.scores, reference.scores, rtol=1e-5, atol=1e-6)


def test_ties_are_broken_in_row_major_order():
    w, x = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.ones(1, 4)
    regression = lambda array: array @ w.numpy()  # noqa: E731
    constant = Deletion(regression, probabilities=False, progress=False)(x, torch.zeros(1, 4))
    np.testing.assert_allclose(constant.curves[0], [10, 9, 7, 4, 0])  # features 0, 1, 2, 3
