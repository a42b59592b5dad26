"""Inputs that must get a clear answer (issue 20): hyperparameters that are not finite, 0-d
targets, grids larger than the image, explainer instances where a factory is expected, and
model callables that return the wrong shape or NaN."""
import warnings

import numpy as np
import pytest
import torch

from conftest import small_cnn
from pellucid.explain import IntegratedGradients, Occlusion, Rise, Saliency, SmoothGrad
from pellucid.explain import SobolAttribution
from pellucid.metrics import Road
from pellucid.procedures import ModelRandomization, Roar


@pytest.mark.parametrize("make", [
    lambda value: SmoothGrad(small_cnn(), noise_level=value),
    lambda value: SobolAttribution(small_cnn(), sigma=value),
    lambda value: Road(small_cnn(), noise_level=value),
])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), -1.0])
def test_scales_must_be_finite_and_non_negative(make, value):
    with pytest.raises(ValueError, match="must be a finite number >= 0"):
        make(value)


@pytest.mark.parametrize("target", [torch.tensor(2), np.array(2), np.int64(2)])
def test_a_zero_dimensional_integer_target_is_one_class(target):
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    explainer = IntegratedGradients(small_cnn(), steps=4, progress=False)
    torch.testing.assert_close(explainer(x, target), explainer(x, 2))


def test_a_sobol_grid_larger_than_the_image_is_refused_before_any_pass():
    model, passes = small_cnn(), []
    model.register_forward_pre_hook(lambda module, args: passes.append(len(args[0])))
    with pytest.raises(ValueError, match=r"grid_size 8 exceeds the images \(4 x 6\)"):
        SobolAttribution(model, grid_size=8, progress=False)(torch.rand(2, 3, 4, 6))
    assert passes == []


def test_procedures_refuse_an_explainer_instance():
    model = small_cnn()
    for build in (lambda: ModelRandomization(model, Saliency(model)),
                  lambda: Roar(lambda x, y: None, Saliency(model))):
        with pytest.raises(TypeError, match="got an instance"):
            build()


@pytest.mark.parametrize("function, shape", [(lambda a: a.sum(), r"\(\)"),
                                             (lambda a: a[:1], r"\(1, 4\)")])
def test_a_callable_returning_the_wrong_shape_is_named(function, shape):
    with pytest.raises(ValueError, match=f"one row of scores per input.*returned shape {shape}"):
        Occlusion(function, progress=False)(torch.rand(3, 4), 0)


def test_a_callable_returning_nan_warns_once():
    def nan_scores(array):
        return np.full((len(array), 2), np.nan)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Rise(nan_scores, nb_samples=20, batch_size=5, probabilities=False,
             progress=False)(torch.rand(2, 4), 0)
    messages = [str(w.message) for w in caught if w.category is RuntimeWarning]
    assert len(messages) == 1 and "nan_scores returned NaN or inf" in messages[0]


def test_review_findings_get_clear_answers_before_any_pass():
    """nb_design=1 (a variance of one design), (N, T) targets for ModelRandomization, a callable
    behind OutputElement with probabilities=True, attribute() of a CAM: each refused early."""
    from pellucid.explain import GradCAM
    from pellucid.selectors import OutputElement
    model, passes = small_cnn(), []
    model.register_forward_pre_hook(lambda module, args: passes.append(len(args[0])))
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="at least 2"):
        SobolAttribution(model, nb_design=1)
    with pytest.raises(ValueError, match="one target per input"):
        ModelRandomization(model, Saliency)(x, np.array([[0, 1], [1, 2]]))
    with pytest.raises(NotImplementedError, match="no per-element attributions"):
        GradCAM(model, progress=False).attribute(x)
    assert passes == []
    with pytest.raises(ValueError, match="targets function"):
        Rise(model, nb_samples=4, progress=False)(x, OutputElement(0, lambda y: y[:, 1]))
    assert sum(passes) <= 1  # the first input's shape check at most


class HeadDeclaredFirst(torch.nn.Module):
    """A valid model whose head (Linear(16, 2)) is registered before its body (Linear(4, 16))."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.head = torch.nn.Linear(16, 2)
        self.body = torch.nn.Linear(4, 16)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


def test_a_model_whose_layers_are_registered_out_of_order_is_explained():
    model, x = HeadDeclaredFirst().eval(), torch.randn(3, 4)
    for explainer in (Saliency(model, progress=False), Occlusion(model, progress=False)):
        assert explainer(x, 1).shape == (3, 4)
    # Occlusion with patch 1 and baseline 0 is the drop of each feature, computed directly
    with torch.no_grad():
        drops = torch.stack([model(x)[:, 1] - model(x * (torch.arange(4) != i))[:, 1]
                             for i in range(4)], 1)
    torch.testing.assert_close(Occlusion(model, progress=False)(x, 1), drops)


def test_inputs_a_custom_model_cannot_take_are_named_after_one_sample():
    model, passes = HeadDeclaredFirst().eval(), []
    model.register_forward_pre_hook(lambda module, args: passes.append(len(args[0])))
    with pytest.raises(ValueError, match=r"cannot run on inputs of shape \(5, 7\)"):
        Occlusion(model, progress=False)(torch.randn(5, 7), 0)
    assert passes == [1]


def test_a_model_on_the_meta_device_is_refused_when_the_explainer_is_built():
    with torch.device("meta"):
        model = torch.nn.Linear(4, 2)
    with pytest.raises(ValueError, match="on the meta device.*to_empty"):
        Occlusion(model)


def test_images_given_to_a_tabular_model_are_named_after_one_sample():
    model, passes = torch.nn.Sequential(torch.nn.Linear(12, 2)).eval(), []
    model.register_forward_pre_hook(lambda module, args: passes.append(len(args[0])))
    with pytest.raises(ValueError, match=r"cannot run on inputs of shape \(3, 3, 2, 2\).*mat1"):
        Saliency(model, progress=False)(torch.rand(3, 3, 2, 2), 0)
    assert passes == [1]
