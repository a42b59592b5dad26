"""Gradient family against analytic answers, autograd computed here, completeness and Captum."""
import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients as CaptumIntegratedGradients
from torch import nn

from conftest import small_cnn, small_mlp
from pellucid._imaging import gaussian_blur
from pellucid.explain import (GradientInput, IntegratedGradients, Saliency, SmoothGrad,
                              SquareGrad, VarGrad)
from pellucid.explain.gradients.integrated_gradients import integration_rule

METHODS = ["riemann_trapezoid", "riemann_left", "riemann_middle", "riemann_right",
           "gausslegendre"]


def autograd_gradient(model, x, targets):
    """d model(x)[i, targets[i]] / d x[i], written out independently of pellucid."""
    leaf = x.clone().requires_grad_(True)
    out = model(leaf)
    (grad,) = torch.autograd.grad(out[torch.arange(len(x)), targets].sum(), leaf)
    return grad


def target_score(model, x, targets):
    with torch.no_grad():
        return model(x)[torch.arange(len(x)), targets]


@pytest.fixture
def big_images():
    """Inputs in [0, 20]: f(x) - f(0) is of the order of the logits themselves (~0.3), not ~0.01
    as for [0, 1] inputs on this small CNN, so a relative completeness error means something."""
    return 20 * torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_saliency_is_abs_autograd_gradient_max_over_channels(cnn, images):
    targets = torch.tensor([0, 1, 2, 3])
    expected = autograd_gradient(cnn, images, targets).abs().amax(dim=1)
    heatmaps = Saliency(cnn, progress=False).explain(images, targets)
    assert heatmaps.shape == (4, 16, 16) and heatmaps.dtype == torch.float32
    torch.testing.assert_close(heatmaps, expected, rtol=1e-6, atol=0)


def test_saliency_tabular_is_abs_gradient(mlp, tabular):
    targets = torch.tensor([0, 1, 2, 0, 1])
    expected = autograd_gradient(mlp, tabular, targets).abs()
    torch.testing.assert_close(Saliency(mlp).explain(tabular, targets), expected, rtol=1e-6, atol=0)


def test_gradient_input_is_input_times_autograd_gradient_summed_over_channels(cnn, images):
    targets = torch.tensor([4, 3, 2, 1])
    expected = (images * autograd_gradient(cnn, images, targets)).sum(dim=1)
    heatmaps = GradientInput(cnn, progress=False).explain(images, targets)
    torch.testing.assert_close(heatmaps, expected, rtol=1e-5, atol=1e-9)


def test_gradient_input_on_linear_model_is_exactly_w_times_x():
    torch.manual_seed(0)
    linear = nn.Linear(7, 3)
    x = torch.randn(6, 7)
    heatmaps = GradientInput(linear).explain(x, 2)
    assert torch.equal(heatmaps, linear.weight[2].detach() * x)


def test_integration_rules_have_unit_weight_and_their_exactness():
    cubic = lambda a: 4 * a**3  # noqa: E731  integral over [0, 1] = 1
    for method in METHODS:
        alphas, weights = integration_rule(method, 8)
        assert len(alphas) == 8 and np.all((alphas >= 0) & (alphas <= 1))
        assert weights.sum() == pytest.approx(1.0, abs=1e-12)
        assert (weights * 2 * alphas).sum() == pytest.approx(1.0, abs=1 / 8 + 1e-12)  # <= 1/n
    alphas, weights = integration_rule("gausslegendre", 2)  # exact up to degree 3
    assert (weights * cubic(alphas)).sum() == pytest.approx(1.0, abs=1e-12)
    for method in ("riemann_trapezoid", "riemann_middle"):  # exact for linear integrands
        alphas, weights = integration_rule(method, 5)
        assert (weights * 2 * alphas).sum() == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="steps >= 2"):
        IntegratedGradients(nn.Linear(2, 2), steps=1)


@pytest.mark.parametrize("method", ["riemann_trapezoid", "gausslegendre"])
@pytest.mark.parametrize("baseline", ["zero", "blur", "tensor"])
def test_integrated_gradients_completeness_on_cnn(big_images, method, baseline):
    model = small_cnn()
    references = {"zero": torch.zeros_like(big_images), "blur": gaussian_blur(big_images),
                  "tensor": torch.full((1, 3, 1, 1), 5.0).expand_as(big_images)}
    reference = references[baseline]
    with torch.no_grad():
        gap = model(big_images) - model(reference)
    targets = gap.abs().argmax(dim=1)  # the class whose score moves most along the path
    expected = gap[torch.arange(4), targets]
    assert expected.abs().min() > 0.05
    given = {"zero": 0.0, "blur": "blur", "tensor": torch.full((1, 3, 1, 1), 5.0)}[baseline]
    explainer = IntegratedGradients(model, steps=64, method=method, baseline=given,
                                    progress=False)
    heatmaps = explainer.explain(big_images, targets)
    relative_error = (heatmaps.sum(dim=(1, 2)) - expected).abs() / expected.abs()
    assert relative_error.max() < 0.01


def test_integrated_gradients_completeness_tabular(tabular):
    model = small_mlp()
    targets = torch.tensor([0, 1, 2, 0, 1])
    baseline = torch.linspace(-1, 1, 6)
    heatmaps = IntegratedGradients(model, steps=256, baseline=baseline).explain(tabular, targets)
    expected = target_score(model, tabular, targets) - target_score(
        model, baseline.expand_as(tabular), targets)
    torch.testing.assert_close(heatmaps.sum(dim=1), expected, rtol=0.01, atol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_integrated_gradients_agrees_with_captum(big_images, method):
    model = small_cnn()
    targets = torch.tensor([0, 1, 2, 3])
    ours = IntegratedGradients(model, steps=64, method=method, progress=False)
    heatmaps = ours.explain(big_images, targets)
    raw = ours.attribute(big_images, targets)
    captum = CaptumIntegratedGradients(model).attribute(big_images, target=targets, n_steps=64,
                                                        method=method)
    if method == "riemann_trapezoid":
        # Captum's trapezoid weights are 1/n (ends halved), summing to (n-1)/n; ours sum to 1
        captum = captum * 64 / 63
    summed = torch.stack([heatmaps.flatten(), captum.sum(dim=1).flatten()])
    assert torch.corrcoef(summed)[0, 1] > 0.999
    assert torch.corrcoef(torch.stack([raw.flatten(), captum.flatten()]))[0, 1] > 0.999
    torch.testing.assert_close(raw, captum, rtol=1e-3, atol=1e-5 * captum.abs().max().item())


def test_smoothgrad_with_zero_noise_equals_saliency(cnn, images):
    targets = torch.tensor([0, 1, 2, 3])
    saliency = Saliency(cnn, progress=False).explain(images, targets)
    smooth = SmoothGrad(cnn, noise_level=0.0, nb_samples=3, progress=False).explain(images, targets)
    torch.testing.assert_close(smooth, saliency, rtol=1e-6, atol=0)


def test_noise_methods_on_linear_model_are_analytic():
    """The gradient of a linear model is w everywhere: SmoothGrad = |w|, VarGrad = 0,
    SquareGrad = w^2, whatever the noise."""
    torch.manual_seed(0)
    linear = nn.Linear(5, 2)
    x = torch.randn(3, 5)
    w = linear.weight[1].detach().expand_as(x)
    kwargs = dict(nb_samples=16, noise_level=0.5)
    torch.testing.assert_close(SmoothGrad(linear, **kwargs).explain(x, 1), w.abs())
    torch.testing.assert_close(SquareGrad(linear, **kwargs).explain(x, 1), w**2)
    assert VarGrad(linear, **kwargs).explain(x, 1).abs().max() < 1e-10


class HalfSquares(nn.Module):
    """f_0(x) = sum_j a_j x_j^2 / 2, so the gradient is a * x: with x + N(0, s^2) noise,
    E[g] = a x, E[g^2] = a^2 (x^2 + s^2), Var[g] = a^2 s^2."""

    def __init__(self, a):
        super().__init__()
        self.a = a

    def forward(self, x):
        return (self.a * x**2 / 2).sum(dim=1, keepdim=True)


def test_noise_methods_match_their_expectations_and_the_noise_scale():
    a = torch.tensor([1.0, -2.0, 0.5, 3.0])
    x = torch.tensor([[0.0, 1.0, 2.0, 4.0], [1.0, -1.0, 0.5, 0.0]])
    noise_level = 0.1
    sigma = noise_level * (x.amax(dim=1) - x.amin(dim=1))[:, None]  # per input: 0.4 and 0.2
    kwargs = dict(nb_samples=4000, noise_level=noise_level, batch_size=1000, seed=3)
    model = HalfSquares(a)
    var = VarGrad(model, **kwargs).explain(x, 0)
    torch.testing.assert_close(var, a**2 * sigma**2 * torch.ones_like(x), rtol=0.1, atol=0)
    square = SquareGrad(model, **kwargs).explain(x, 0)
    torch.testing.assert_close(square, a**2 * (x**2 + sigma**2), rtol=0.1, atol=0.01)
    smooth = SmoothGrad(model, **kwargs).explain(x, 0)
    torch.testing.assert_close(smooth, (a * x).abs(), rtol=0, atol=0.03)


def test_noise_methods_on_cnn_are_non_negative_and_ordered(cnn, images):
    targets = torch.tensor([0, 1, 2, 3])
    kwargs = dict(nb_samples=8, noise_level=0.2, progress=False)
    var = VarGrad(cnn, **kwargs).explain(images, targets)
    square = SquareGrad(cnn, **kwargs).explain(images, targets)
    assert (var >= 0).all() and (square >= 0).all() and var.max() > 0
    # same noise draws: the biased variance E[g^2] - E[g]^2 is at most E[g^2]
    assert (var * 7 / 8 <= square * (1 + 1e-5)).all()


def test_copies_never_exceed_batch_size():
    sizes = []
    model = small_mlp()
    model.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    x = torch.randn(3, 6)
    SmoothGrad(model, nb_samples=50, batch_size=16).explain(x, 0)
    IntegratedGradients(model, steps=64, batch_size=16).explain(x, 0)
    assert max(sizes) == 16
    assert sum(sizes) == 3 * 50 + 3 * 64 + 2  # + the pass that reads the number of classes


def test_vargrad_is_the_unbiased_variance_of_the_same_draws_and_images_take_the_channel_mean(
        cnn, images):
    """Same seed, same K noisy copies: VarGrad = K / (K - 1) * (SquareGrad - SmoothGrad^2)
    element by element (SmoothGrad's attribution is |E[g]|), at K = 3 where the unbiased
    factor is 1.5; on images SquareGrad and VarGrad reduce channels by their mean."""
    targets = torch.tensor([0, 1, 2, 3])
    kwargs = dict(nb_samples=3, noise_level=0.2, seed=5, progress=False)
    square = SquareGrad(cnn, **kwargs).attribute(images, targets).double()
    mean_gradient = SmoothGrad(cnn, **kwargs).attribute(images, targets).double()
    var = VarGrad(cnn, **kwargs).attribute(images, targets).double()
    expected = (3 / 2 * (square - mean_gradient**2)).clamp(min=0)
    torch.testing.assert_close(var, expected, rtol=1e-4, atol=1e-6 * expected.max().item())
    assert var.max() > 0 and (square - mean_gradient**2).max() > 0.1 * square.max()
    for cls, attributions in ((SquareGrad, square), (VarGrad, var)):
        heatmaps = cls(cnn, **kwargs).explain(images, targets)
        torch.testing.assert_close(heatmaps.double(), attributions.mean(1), rtol=1e-5, atol=0)
