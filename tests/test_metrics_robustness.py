"""SensitivityMax / SensitivityAvg / LocalLipschitz and RandomLogit: analytic answers on linear
and quadratic models, captum's sensitivity_max as a reference, skimage's SSIM written out."""
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import nn

from conftest import linear_model, small_cnn
from pellucid.explain import GradientInput, Saliency
from pellucid.metrics import LocalLipschitz, RandomLogit, SensitivityAvg, SensitivityMax


class Quadratic(nn.Module):
    """f(x) = sum_i x_i^2 (one output): Saliency |2 x|, so e(x') - e(x) = 2 delta for x > r."""

    def forward(self, x):
        return x.square().sum(1, keepdim=True)


def positive_inputs(n=3, f=2, seed=0):
    return 1 + torch.rand(n, f, generator=torch.Generator().manual_seed(seed))


def test_sensitivity_of_saliency_on_a_linear_model_is_zero():
    model = linear_model([1.0, -2.0, 0.5, 3.0])
    x = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    heatmaps = Saliency(model, progress=False).explain(x)
    for metric in (SensitivityMax, SensitivityAvg, LocalLipschitz):
        scores = metric(model, Saliency, radius=0.5, nb_samples=5, progress=False)(
            x, heatmaps).scores
        np.testing.assert_array_equal(scores, 0.0)
    # a method that depends on the input is not: Gradient * Input moves with x
    assert SensitivityMax(model, GradientInput, radius=0.5, nb_samples=5, progress=False)(
        x, GradientInput(model, progress=False).explain(x)).scores.min() > 0


def test_local_lipschitz_of_saliency_on_a_quadratic_is_two():
    """||e(x') - e(x)|| / ||x' - x|| = ||2 delta|| / ||delta|| = 2 for every neighbour."""
    model, x = Quadratic(), positive_inputs(f=5)
    result = LocalLipschitz(model, Saliency, radius=0.3, nb_samples=7, progress=False)(
        x, 2 * x, 0)
    np.testing.assert_allclose(result.details["per_neighbour"], 2.0, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
def test_sensitivity_on_a_quadratic_matches_the_analytic_values_and_captum():
    """One feature: the relative change |2 delta| / |2 x| has supremum r / |x| over the ball
    and mean r / (2 |x|) (|delta| uniform on [0, r]); captum's sensitivity_max (the same
    uniform perturbation) approaches the same maximum."""
    from captum.attr import Saliency as CaptumSaliency
    from captum.metrics import sensitivity_max
    model, x, r = Quadratic(), positive_inputs(f=1), 0.1
    norm = x[:, 0].double().numpy()
    ours = SensitivityMax(model, Saliency, radius=r, nb_samples=400, batch_size=400,
                          progress=False)(x, 2 * x, 0).scores
    assert (ours <= r / norm * (1 + 1e-5)).all()
    np.testing.assert_allclose(ours, r / norm, rtol=0.02)
    theirs = sensitivity_max(CaptumSaliency(model).attribute, x, target=0,
                             n_perturb_samples=400, perturb_radius=r).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=0.02)
    mean = SensitivityAvg(model, Saliency, radius=r, nb_samples=4000, batch_size=4000,
                          progress=False)(x, 2 * x, 0).scores
    np.testing.assert_allclose(mean, r / 2 / norm, rtol=0.03)


def test_an_instance_a_class_and_a_callable_explainer_agree():
    model = small_cnn()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    heatmaps = Saliency(model, progress=False).explain(x)
    scores = [SensitivityMax(model, explainer, nb_samples=4, batch_size=5, progress=False)(
        x, heatmaps).scores for explainer in (
            Saliency(model, progress=False), Saliency,
            lambda m, inputs, targets: Saliency(m, progress=False).explain(inputs, targets))]
    np.testing.assert_allclose(scores[0], scores[1])
    np.testing.assert_allclose(scores[0], scores[2])
    assert scores[0].min() > 0
    with pytest.raises(TypeError, match="explainer must be"):
        SensitivityMax(model, "Saliency")
    with pytest.raises(TypeError, match="explainer_kwargs go to an explainer class"):
        SensitivityMax(model, Saliency(model), explainer_kwargs={"batch_size": 2})


def class_maps_model(shape=(1, 8, 8), classes=3):
    """A linear model whose class c reads the pixels of the square (2c, 2c)-(2c+3, 2c+3) with
    weight 1 and every other pixel with weight 0.1 * c: class maps with distinct structure."""
    weights = torch.zeros(classes, *shape)
    for c in range(classes):
        weights[c] += 0.1 * (c + 1)
        weights[c, :, 2 * c:2 * c + 3, 2 * c:2 * c + 3] = 1.0
    model = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape)), classes, bias=False))
    with torch.no_grad():
        model[1].weight[:] = weights.view(classes, -1)
    return model.eval(), weights


def test_random_logit_is_skimage_ssim_of_the_two_class_maps():
    model, weights = class_maps_model()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    heatmaps = Saliency(model, progress=False).explain(x, targets)
    result = RandomLogit(model, Saliency, seed=3, progress=False)(x, heatmaps, targets)
    random_classes = result.details["random_classes"]
    assert (random_classes != targets.numpy()).all() and len(set(random_classes)) > 1
    expected = []
    for t, r in zip(targets.numpy(), random_classes):
        a, b = weights[t, 0].abs().numpy(), weights[r, 0].abs().numpy()
        expected.append(structural_similarity(a / a.max(), b / b.max(), data_range=1.0,
                                              win_size=7))
    np.testing.assert_allclose(result.scores, expected, rtol=1e-6)
    assert result.mean < 0.9
    with pytest.raises(ValueError, match="targets must be classes"):
        RandomLogit(model, Saliency)(x, heatmaps, lambda out: out[:, 0])


def test_random_logit_of_a_class_blind_explanation_is_one_and_tabular_uses_spearman():
    model, _ = class_maps_model()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    blind = lambda m, inputs, targets: inputs[:, 0]  # noqa: E731  (ignores the class)
    np.testing.assert_allclose(RandomLogit(model, blind, progress=False)(x, x[:, 0]).scores,
                               1.0)
    tabular = nn.Linear(5, 3).eval()
    xt = torch.randn(4, 5, generator=torch.Generator().manual_seed(2))
    maps = Saliency(tabular, progress=False).explain(xt, 0)
    result = RandomLogit(tabular, Saliency, progress=False)(xt, maps, 0)
    w = tabular.weight.detach().abs().numpy()
    expected = [spearmanr(w[0], w[r]).statistic for r in result.details["random_classes"]]
    np.testing.assert_allclose(result.scores, expected, rtol=1e-6)
