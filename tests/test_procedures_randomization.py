"""Model-parameter randomization (Adebayo et al., 2018) and SSIM (Wang et al., 2004)."""
import numpy as np
import pytest
import torch

from pellucid.explain.base import Explainer
from pellucid.procedures import ModelRandomization
from pellucid.procedures.randomization import gaussian_window, ssim

from conftest import small_cnn, small_mlp


def gradient_times_input(model, inputs, targets):
    """Gradient x input, summed over channels, computed directly with autograd."""
    x = inputs.clone().requires_grad_(True)
    score = model(x).gather(1, targets[:, None]).sum()
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


def ssim_reference(a, b, data_range=1.0, size=11, sigma=1.5):
    """Wang et al. (2004) written out window by window with numpy."""
    w = gaussian_window(size, sigma).numpy()
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
    c1 = 0.01 ** 2
    np.testing.assert_allclose(ssim(a, b).numpy(), (2 * 0.2 * 0.7 + c1) / (0.2**2 + 0.7**2 + c1))
    y = (x + 0.3 * torch.rand(3, 20, 17, generator=g)).clamp(0, 1)
    expected = [ssim_reference(x[i].double().numpy(), y[i].double().numpy()) for i in range(3)]
    np.testing.assert_allclose(ssim(x, y).numpy(), expected, atol=1e-10)
    assert ssim(x, y).max() < 0.99


def test_ssim_matches_scikit_image_when_installed():
    metrics = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 24, 24, generator=g, dtype=torch.float64).unbind()
    expected = metrics.structural_similarity(x.numpy(), y.numpy(), data_range=1.0,
                                             gaussian_weights=True, sigma=1.5,
                                             use_sample_covariance=False)
    assert ssim(x[None], y[None]).item() == pytest.approx(expected, abs=1e-10)


def test_cascading_randomization_destroys_gradient_explanations():
    model = small_cnn(n_classes=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    metric = ModelRandomization(model, gradient_times_input, seed=0)
    result = metric(images)
    assert result.details["layers"] == ["6", "2", "0"]  # top (Linear) first
    assert result.curves.shape == (6, 3) and result.details["ssim"].shape == (6, 3)
    np.testing.assert_allclose(result.fractions, [1 / 3, 2 / 3, 1])
    spearman = result.details["spearman_abs"].mean(0)
    print(f"gradient x input, Spearman |.| along the cascade {np.round(spearman, 3)}, "
          f"SSIM {np.round(result.details['ssim'].mean(0), 3)}")
    assert spearman[-1] < 0.6 and not result.higher_is_better
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not model.training
    again = ModelRandomization(model, gradient_times_input, seed=0)(images)
    np.testing.assert_array_equal(again.curves, result.curves)


def test_seed_none_randomizes_afresh_and_an_int_seed_repeats():
    model = small_mlp(n_features=6, n_classes=3)
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(5))
    run = lambda seed: ModelRandomization(model, gradient_times_input,  # noqa: E731
                                          seed=seed)(x).details["spearman"]
    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(None), run(None))


def test_an_explanation_that_ignores_the_model_fails_the_check():
    model = small_cnn()
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    result = ModelRandomization(model, lambda m, x, t: x.abs().sum(1), similarity="ssim")(images)
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
    with pytest.raises(ValueError, match="similarity"):
        ModelRandomization(model, gradient_times_input, similarity="hog")
    with pytest.raises(ValueError, match="ssim"):
        ModelRandomization(small_mlp(), gradient_times_input, similarity="ssim")(torch.rand(2, 6))
    wrong = ModelRandomization(model, lambda m, x, t: torch.rand(len(x), 8, 8))
    with pytest.raises(ValueError, match="heatmaps must have shape"):
        wrong(torch.rand(2, 3, 16, 16))
