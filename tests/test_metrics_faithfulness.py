"""Infidelity, AverageDrop / AverageIncrease and Monotonicity: analytic answers on linear
models, pytorch-grad-cam's formula written out, captum's infidelity as a reference."""
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from conftest import linear_model, small_cnn, small_mlp
from pellucid.metrics import AverageDrop, AverageIncrease, Infidelity, Monotonicity


def linear_images(seed=0, classes=3, shape=(2, 6, 6)):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape)), classes)).eval()
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(seed + 1))
    return model, x, model[1].weight.detach().view(classes, *shape)


# -- Infidelity -----------------------------------------------------------------------------
def test_infidelity_of_the_exact_attribution_of_a_linear_model_is_zero():
    model, x, w = linear_images()
    gradient = w[1].sum(0).expand(3, -1, -1)  # per pixel: the gradient summed over channels
    gradient_input = (x * w[1]).sum(1)
    for normalize in (True, False):
        gaussian = Infidelity(model, nb_samples=32, normalize=normalize, progress=False)
        square = Infidelity(model, perturbation="square", patch_size=2, nb_samples=32,
                            normalize=normalize, progress=False)
        assert gaussian(x, gradient, 1).scores.max() < 1e-10
        assert square(x, gradient_input, 1).scores.max() < 1e-10
        assert gaussian(x, gradient_input, 1).scores.min() > 1e-4  # the wrong one is not 0
    # the optimal scale makes infidelity blind to the heatmap's scale; beta = 1 does not
    metric = Infidelity(model, nb_samples=32, progress=False)
    result = metric(x, 3 * gradient, 1)
    assert result.scores.max() < 1e-10
    np.testing.assert_allclose(result.details["beta"], 1 / 3, rtol=1e-4)
    assert Infidelity(model, nb_samples=32, normalize=False, progress=False)(
        x, 3 * gradient, 1).scores.min() > 1e-3


def test_infidelity_converges_to_its_expectation_for_a_linear_model():
    """f = w.x, I ~ N(0, s^2) per feature, normalized: E = s^2 (|w|^2 - (h.w)^2 / |h|^2)."""
    w = torch.tensor([1.0, -2.0, 0.5, 3.0])
    model = linear_model(w)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    h = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, -2.0, 0.0, 3.0], [3.0, 0.5, 0.0, 0.0]])
    scores = Infidelity(model, noise_level=0.5, nb_samples=4000, batch_size=4096,
                        progress=False)(x, h).scores
    w, h = w.double(), h.double()
    expected = 0.25 * (w.square().sum() - (h @ w).square() / h.square().sum(1))
    np.testing.assert_allclose(scores, expected.numpy(), rtol=0.08)


class Recording(Infidelity):
    """Infidelity that keeps the perturbations it draws, to hand them to captum."""

    def _perturbations(self, draws, shape):
        out = super()._perturbations(draws, shape)
        self.drawn.append(out)
        return out


@pytest.mark.parametrize("kind", ["tabular", "images"])
def test_infidelity_equals_captum_s_on_the_same_perturbations(kind):
    """captum.metrics.infidelity(normalize=True) given our perturbations: per-pixel
    perturbations reach every channel, so captum gets them broadcast over channels and the
    heatmap divided by the channel count (the same I^T h)."""
    from captum.metrics import infidelity
    if kind == "tabular":
        model, x = small_mlp(), torch.randn(3, 6, generator=torch.Generator().manual_seed(3))
        metric = Recording(model, noise_level=0.3, nb_samples=40, batch_size=32, progress=False)
        h = torch.randn(3, 6, generator=torch.Generator().manual_seed(4))
        attributions = h
    else:
        model, x = small_cnn(), torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
        metric = Recording(model, perturbation="square", baseline=0.2, nb_samples=20,
                           batch_size=16, progress=False)
        h = torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(4))
        attributions = (h / 3)[:, None].expand_as(x)
    metric.drawn = []
    ours = metric(x, h, 1).scores
    drawn = torch.cat(metric.drawn).float()
    perturbations = drawn.view(len(drawn), *([1] if kind == "images" else []), *h.shape[1:])
    perturbations = perturbations.expand(len(drawn), *x.shape[1:])

    def perturb(inputs):
        if kind == "tabular":
            return perturbations, inputs - perturbations
        return perturbations, torch.where(perturbations > 0, torch.tensor(0.2), inputs)

    theirs = infidelity(model, perturb, x, attributions, target=1,
                        n_perturb_samples=metric.nb_samples, normalize=True).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=2e-3, atol=1e-7)


def test_infidelity_square_needs_images():
    with pytest.raises(ValueError, match="needs images"):
        Infidelity(small_mlp(), perturbation="square")(torch.rand(2, 6), torch.rand(2, 6))
    with pytest.raises(ValueError, match="perturbation must be one of"):
        Infidelity(small_mlp(), perturbation="uniform")


# -- AverageDrop / AverageIncrease ----------------------------------------------------------
def test_average_drop_and_increase_follow_pytorch_grad_cam():
    """pytorch-grad-cam: cam = scale_cam_image(h) (min-max, 1e-7 in the denominator),
    perturbed = input * cam, DropInConfidence = max(-(after - before), 0) on the softmax
    target; the paper (and TorchCAM) divide by before; IncreaseInConfidence = after > before."""
    model = small_cnn()
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    h = torch.randn(6, 16, 16, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 1, 2, 3, 4, 0])
    cam = h - h.amin((1, 2), keepdim=True)
    cam = cam / (1e-7 + cam.amax((1, 2), keepdim=True))
    with torch.no_grad():
        before = model(x).softmax(1)[torch.arange(6), targets]
        after = model(x * cam[:, None]).softmax(1)[torch.arange(6), targets]
    drop = np.maximum(-(after - before).numpy(), 0)
    np.testing.assert_allclose(AverageDrop(model, relative=False, progress=False)(
        x, h, targets).scores, drop, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(AverageDrop(model, progress=False)(x, h, targets).scores,
                               drop / before.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(AverageIncrease(model, progress=False)(x, h, targets).scores,
                                  (after > before).numpy().astype(float))


def test_average_drop_of_a_map_that_keeps_the_evidence_is_zero():
    """A linear model that reads the first feature only: a map that is 1 there keeps the whole
    input's evidence (no drop); a map that is 1 elsewhere removes it."""
    model = nn.Sequential(nn.Linear(3, 2)).eval()
    with torch.no_grad():
        model[0].weight[:] = torch.tensor([[4.0, 0.0, 0.0], [-4.0, 0.0, 0.0]])
        model[0].bias[:] = 0
    x = torch.tensor([[1.0, 2.0, 3.0]])
    keep, lose = torch.tensor([[1.0, 0.0, 0.5]]), torch.tensor([[0.0, 1.0, 0.5]])
    metric = AverageDrop(model, progress=False)
    assert metric(x, keep, 0).scores[0] == 0.0
    p = 1 / (1 + np.exp(-8.0))  # softmax of (4, -4) for class 0
    np.testing.assert_allclose(metric(x, lose, 0).scores, [(p - 0.5) / p], rtol=1e-5)


# -- Monotonicity ---------------------------------------------------------------------------
def test_monotonicity_on_a_linear_model_with_a_constant_replacement():
    """value_range (c, c): feature i's effect is exactly (w_i (x_i - c))^2."""
    w = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.1])
    model = linear_model(w)
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    metric = Monotonicity(model, value_range=(0.5, 0.5), nb_samples=2, progress=False)
    exact = (w * (x - 0.5)).abs()
    np.testing.assert_allclose(metric(x, exact).scores, 1.0, rtol=1e-12)
    np.testing.assert_allclose(metric(x, -exact).scores, 1.0, rtol=1e-12)  # |h|
    h = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    result = metric(x, h)
    np.testing.assert_allclose(result.details["effects"], exact.double().square().numpy(),
                               rtol=1e-4)  # float32 forward passes
    expected = [spearmanr(a, b).statistic for a, b in zip(h.abs().numpy(),
                                                          exact.square().numpy())]
    np.testing.assert_allclose(result.scores, expected, rtol=1e-10)


def test_monotonicity_on_images_sums_cells_and_channels():
    model, x, w = linear_images()
    metric = Monotonicity(model, grid_size=3, value_range=(0.0, 0.0), nb_samples=1,
                          progress=False)
    h = torch.randn(3, 6, 6, generator=torch.Generator().manual_seed(2))
    result = metric(x, h, 2)
    contribution = (x * w[2]).sum(1)  # (3, 6, 6): the drop when a pixel becomes 0
    cells = contribution.view(3, 3, 2, 3, 2).sum((2, 4)).reshape(3, 9)
    np.testing.assert_allclose(result.details["effects"], cells.double().square().numpy(),
                               rtol=1e-4, atol=1e-9)
    attributions = h.abs().view(3, 3, 2, 3, 2).sum((2, 4)).reshape(3, 9)
    np.testing.assert_allclose(result.details["attributions"], attributions.numpy(), rtol=1e-6)
