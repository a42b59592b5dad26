"""Model-parameter randomization (Adebayo et al., 2018): cascading and independent, plain and
smooth (Hedström et al., 2024), step by step against hand-randomized copies; a trained model's
Saliency loses its similarity; SSIM (scikit-image) against the window formula written out."""
import copy
import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from pellucid.explain import Saliency
from pellucid.explain.base import Explainer
from pellucid.procedures import ModelRandomization
from pellucid.procedures.randomization import ssim
from pellucid.zoo import fit_from_scratch

from conftest import small_cnn, small_mlp


def gradient_times_input(model, inputs, targets):
    """Gradient x input, summed over channels, computed directly with autograd."""
    x = inputs.clone().requires_grad_(True)
    score = model(x).gather(1, torch.as_tensor(targets).expand(len(x))[:, None]).sum()
    (grad,) = torch.autograd.grad(score, x)
    return (grad * inputs).sum(1) if inputs.ndim == 4 else grad * inputs


class GradientTimesInput(Explainer):
    def __init__(self, model, *, scale=1.0, **common):
        super().__init__(model, **common)
        self.scale = scale

    def _explain(self, x, scorer):
        # a method reads the model through the call's scorer (targets, forward arguments)
        leaf = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(scorer.with_grad(leaf, torch.arange(len(x))).sum(), leaf)
        product = grad * x
        return self.scale * (product.sum(1) if x.ndim == 4 else product)


# -- SSIM: scikit-image against the formula ----------------------------------------------------
def gaussian_window(size, sigma):
    offsets = np.arange(size) - (size - 1) / 2
    window = np.exp(-offsets**2 / (2 * sigma**2))
    window = np.outer(window, window)
    return window / window.sum()


def ssim_reference(a, b, size=11, sigma=1.5, data_range=1.0):
    """Wang et al. (2004) written out window by window with numpy (population moments)."""
    w = gaussian_window(size, sigma)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for i in range(a.shape[0] - size + 1):
        for j in range(a.shape[1] - size + 1):
            pa, pb = a[i:i + size, j:j + size], b[i:i + size, j:j + size]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            values.append((2 * ma * mb + c1) * (2 * cov + c2)
                          / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return np.mean(values)


def test_ssim_identity_constants_and_the_window_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 20, 17, generator=g)
    np.testing.assert_allclose(ssim(x, x).numpy(), 1.0, atol=1e-12)
    a, b = torch.full((1, 16, 16), 0.2), torch.full((1, 16, 16), 0.7)
    c1 = 0.01 ** 2  # constant maps: only the luminance term is left
    np.testing.assert_allclose(ssim(a, b).numpy(), (2 * 0.2 * 0.7 + c1) / (0.2**2 + 0.7**2 + c1))
    y = (x + 0.3 * torch.rand(3, 20, 17, generator=g)).clamp(0, 1)
    expected = [ssim_reference(x[i].double().numpy(), y[i].double().numpy()) for i in range(3)]
    np.testing.assert_allclose(ssim(x, y).numpy(), expected, atol=1e-10)
    assert ssim(x, y).max() < 0.99
    # maps under 11 pixels: the largest window that fits, radius 3 = 3.5 sigma
    small_x, small_y = x[:, :8, :9], y[:, :8, :9]
    expected = [ssim_reference(small_x[i].double().numpy(), small_y[i].double().numpy(),
                               size=7, sigma=3 / 3.5) for i in range(3)]
    np.testing.assert_allclose(ssim(small_x, small_y).numpy(), expected, atol=1e-10)
    with pytest.raises(ValueError, match=r"at least 3 x 3 pixels; got \(2, 5\)"):
        ssim(x[:, :2, :5], y[:, :2, :5])


# -- the randomized models, step by step ---------------------------------------------------------
def hand_randomized(model, layers, seed, mode):
    """The models of each step, randomized here as the docstring says: for every layer, top
    first, each parameter drawn uniform in +-1/sqrt(fan_in) (fan_in of the layer's weight) from
    one torch generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    draws = {}
    for name in layers:
        fan_in = modules[name].weight[0].numel()
        draws[name] = {key: (2 * torch.rand(p.shape, generator=generator, dtype=torch.float64)
                             - 1) / math.sqrt(fan_in)
                       for key, p in modules[name].named_parameters(recurse=False)}
    steps, current = [], copy.deepcopy(model)
    for name in layers:
        if mode == "independent":
            current = copy.deepcopy(model)
        with torch.no_grad():
            for key, p in dict(current.named_modules())[name].named_parameters(recurse=False):
                p.copy_(draws[name][key])
        steps.append(copy.deepcopy(current))
    return steps


@pytest.mark.parametrize("mode", ["cascading", "independent"])
def test_each_step_is_the_hand_randomized_model(mode):
    """The explainer sees, at step i, exactly the hand-randomized model of step i: cascading
    keeps the layers randomized before (the top i + 1 are random), independent randomizes
    layer i alone; the similarities are scipy's Spearman of the maps of those models."""
    model = small_cnn(n_classes=4)
    images = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    seen = []

    def spy(m, inputs, targets):
        seen.append({k: v.clone() for k, v in m.state_dict().items()})
        return gradient_times_input(m, inputs, targets)

    result = ModelRandomization(model, spy, mode=mode, seed=3)(images)
    layers = result.details["layers"]
    assert layers == ["6", "2", "0"] and result.details["mode"] == mode  # top (Linear) first
    assert len(seen) == 4
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in seen[0].items())
    targets = model(images).argmax(1)
    original = gradient_times_input(model, images, targets)
    for step, expected in enumerate(hand_randomized(model, layers, 3, mode)):
        for key, value in expected.state_dict().items():
            torch.testing.assert_close(seen[step + 1][key], value, rtol=0, atol=1e-7)
        heatmaps = gradient_times_input(expected, images, targets).detach()
        for i in range(5):
            rho = spearmanr(original[i].detach().flatten(), heatmaps[i].flatten())[0]
            assert result.details["spearman"][i, step] == pytest.approx(rho, abs=1e-6)
            rho_abs = spearmanr(original[i].detach().abs().flatten(), heatmaps[i].abs().flatten())
            assert result.details["spearman_abs"][i, step] == pytest.approx(rho_abs[0], abs=1e-6)
    np.testing.assert_allclose(result.curves, result.details["spearman_abs"])
    np.testing.assert_allclose(result.fractions, [1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(result.scores, result.curves.mean(1))


@pytest.fixture(scope="module")
def trained_digits_mlp():
    """An MLP trained here on scikit-learn's 8x8 digits (60 full-batch Adam steps, about 93%
    test accuracy) and 16 test images: a model that has learned something."""
    from sklearn.datasets import load_digits
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16
    y = torch.as_tensor(bunch.target)
    model = fit_from_scratch(lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(),
                                                   nn.Linear(32, 32), nn.ReLU(),
                                                   nn.Linear(32, 10)),
                             x[:1000], y[:1000], epochs=60, lr=2e-2)
    with torch.no_grad():
        assert (model(x[1000:]).argmax(1) == y[1000:]).float().mean() > 0.85
    return model, x[1000:1016]


@pytest.mark.parametrize("mode", ["cascading", "independent"])
@pytest.mark.parametrize("nb_samples", [1, 4])
def test_randomizing_a_trained_model_destroys_saliency(trained_digits_mlp, mode, nb_samples):
    """Every variant of the test (cascading or independent, plain or smooth) turns the Spearman
    similarity of a trained model's Saliency below 0.3: after full randomization (cascading)
    and for every single layer (independent). Gradient x input keeps the input's structure
    (|g x| ranks follow |x|), the known failure the test is for."""
    model, x = trained_digits_mlp
    kwargs = dict(explainer_kwargs={"progress": False}, mode=mode, nb_samples=nb_samples,
                  seed=0)
    result = ModelRandomization(model, Saliency, **kwargs)(x)
    similarity = np.nanmean(result.details["spearman_abs"], 0)
    gradient_input = ModelRandomization(model, gradient_times_input, mode=mode,
                                        nb_samples=nb_samples, seed=0)(x)
    input_dominated = np.nanmean(gradient_input.details["spearman_abs"], 0)
    print(f"{mode}, nb_samples={nb_samples}: Saliency Spearman |.| per layer "
          f"{np.round(similarity, 3)}, gradient x input {np.round(input_dominated, 3)}")
    assert similarity[-1] < 0.3
    if mode == "independent":
        assert similarity.max() < 0.3
    assert input_dominated.min() > 0.6


def test_smooth_mprt_averages_the_same_noisy_copies_for_every_model():
    """nb_samples > 1: each model explains the same nb_samples copies x + sigma * noise
    (sigma = noise_level * (max x - min x) per input), and the maps compared are their means;
    nb_samples = 1 explains the inputs themselves."""
    model = small_mlp(n_features=6, n_classes=3)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(6))
    x[0] *= 10  # a wider range, a wider noise
    calls = []

    def spy(m, inputs, targets):
        heatmaps = gradient_times_input(m, inputs, targets)
        calls.append((inputs.clone(), heatmaps))
        return heatmaps

    result = ModelRandomization(model, spy, nb_samples=3, noise_level=0.2, seed=1)(x)
    assert len(calls) == 3 * 3  # the original and 2 randomized models, 3 copies each
    copies = torch.stack([inputs for inputs, _ in calls]).view(3, 3, 4, 6)
    assert all(torch.equal(copies[0], copies[m]) for m in (1, 2))  # same noise per model
    sigma = 0.2 * (x.amax(1) - x.amin(1))
    noise = (copies[0] - x) / sigma[None, :, None]
    assert not torch.equal(noise[0], noise[1])  # a new draw for each copy
    assert 0.6 < noise.std() < 1.4 and noise.abs().mean() > 0.3
    means = torch.stack([h for _, h in calls]).view(3, 3, 4, 6).mean(1)
    for step in range(2):
        for i in range(4):
            rho = spearmanr(means[0, i].detach(), means[step + 1, i].detach())[0]
            assert result.details["spearman"][i, step] == pytest.approx(rho, abs=1e-6)
    calls.clear()
    ModelRandomization(model, spy, noise_level=0.2)(x)
    assert len(calls) == 3 and all(torch.equal(inputs, x) for inputs, _ in calls)


def test_seed_none_randomizes_afresh_and_an_int_seed_repeats():
    model = small_mlp(n_features=6, n_classes=3)
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(5))
    run = lambda seed, **kw: ModelRandomization(  # noqa: E731
        model, gradient_times_input, seed=seed, **kw)(x).details["spearman"]
    np.testing.assert_array_equal(run(3), run(3))
    np.testing.assert_array_equal(run(3, nb_samples=2), run(3, nb_samples=2))
    assert not np.array_equal(run(None), run(None))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run(None, mode="independent")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not model.training


def test_an_explanation_that_ignores_the_model_fails_the_check():
    model = small_cnn()
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    for mode in ("cascading", "independent"):
        result = ModelRandomization(model, lambda m, x, t: x.abs().sum(1), similarity="ssim",
                                    mode=mode)(images)
        np.testing.assert_allclose(result.curves, 1.0, atol=1e-12)
        np.testing.assert_allclose(result.details["spearman"], 1.0, atol=1e-12)


def test_explainer_class_with_kwargs_targets_and_tabular_inputs():
    model = small_mlp(n_features=6, n_classes=3)
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(4))
    result = ModelRandomization(model, GradientTimesInput, explainer_kwargs={"scale": 2.0},
                                layers=["2"], similarity="spearman")(x, targets=1)
    assert result.details["layers"] == ["2"] and result.curves.shape == (5, 1)
    np.testing.assert_array_equal(result.details["targets"], 1)
    assert "ssim" not in result.details


def test_bad_arguments_raise():
    model = small_cnn()
    with pytest.raises(TypeError, match="torch.nn.Module"):
        ModelRandomization(lambda x: x, gradient_times_input)
    with pytest.raises(TypeError, match="explainer must be"):
        ModelRandomization(model, "saliency")
    with pytest.raises(ValueError, match="not modules of the model"):
        ModelRandomization(model, gradient_times_input, layers=["fc"])
    with pytest.raises(ValueError, match="similarity must be one of"):
        ModelRandomization(model, gradient_times_input, similarity="hog")
    with pytest.raises(ValueError, match=r"mode must be one of \('cascading', 'independent'\)"):
        ModelRandomization(model, gradient_times_input, mode="bottom_up")
    with pytest.raises(ValueError, match="nb_samples must be an integer >= 1, got 0"):
        ModelRandomization(model, gradient_times_input, nb_samples=0)
    with pytest.raises(ValueError, match="noise_level must be a finite number >= 0"):
        ModelRandomization(model, gradient_times_input, noise_level=-0.1)
    with pytest.raises(ValueError, match="'ssim' needs images"):
        ModelRandomization(small_mlp(), gradient_times_input, similarity="ssim")(torch.rand(2, 6))
    wrong = ModelRandomization(model, lambda m, x, t: torch.rand(len(x), 8, 8))
    with pytest.raises(ValueError, match="heatmaps must have shape"):
        wrong(torch.rand(2, 3, 16, 16))
