"""Checks of the explainers beyond the generated contract (test_contract.py): feature-count
mismatches, each method's own bad hyperparameters and baselines, white-box methods that name
the black-box alternatives, and one code path for torch, scikit-learn and numpy callables."""
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from conftest import small_cnn, small_mlp
from pellucid.explain import (DeepLift, GradientInput, IntegratedGradients, Occlusion, Rise,
                              Saliency, SmoothGrad, SobolAttribution, SquareGrad, VarGrad)

EXPLAINERS = {
    "Saliency": (Saliency, {}),
    "GradientInput": (GradientInput, {}),
    "IntegratedGradients": (IntegratedGradients,
                            {"steps": 8, "method": "gausslegendre", "baseline": 0.1}),
    "SmoothGrad": (SmoothGrad, {"nb_samples": 5, "noise_level": 0.1}),
    "VarGrad": (VarGrad, {"nb_samples": 5, "noise_level": 0.1}),
    "SquareGrad": (SquareGrad, {"nb_samples": 5, "noise_level": 0.3}),
    "Occlusion": (Occlusion, {"patch_size": 4, "stride": 2, "baseline": 0.0}),
    "Rise": (Rise, {"nb_samples": 16, "grid_size": 4}),
    "SobolAttribution": (SobolAttribution, {"nb_design": 4, "grid_size": 4}),
    "DeepLift": (DeepLift, {"rule": "reveal_cancel", "baseline": 0.1}),
}
BLACK_BOX = ["Occlusion", "Rise", "SobolAttribution"]
WHITE_BOX = [name for name in EXPLAINERS if name not in BLACK_BOX]
NOISY = ["SmoothGrad", "VarGrad", "SquareGrad", "Rise", "SobolAttribution"]
KINDS = ["images", "tabular"]


def make(name, model, **overrides):
    cls, kwargs = EXPLAINERS[name]
    return cls(model, **{**kwargs, "progress": False, **overrides})


def data(kind):
    """A model and inputs of each kind (images 4 x 3 x 16 x 16, 5 classes; tabular 5 x 6,
    3 classes)."""
    if kind == "images":
        return small_cnn(), torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    return small_mlp(), torch.randn(5, 6, generator=torch.Generator().manual_seed(2))


def count_passes(model):
    """List that receives the size of every batch the model sees."""
    sizes = []
    model.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    return sizes


# -- errors, raised before any forward pass ------------------------------------------------
@pytest.mark.parametrize("name", EXPLAINERS)
def test_feature_count_mismatch_and_wrong_types(name):
    model = small_mlp()
    passes = count_passes(model)
    with pytest.raises(ValueError, match="expects 6 features"):
        make(name, model).explain(torch.randn(3, 5))
    with pytest.raises(TypeError, match="torch.Tensor or numpy array"):
        make(name, model).explain("not an array")
    assert passes == []


BAD_HYPERPARAMETERS = {
    "IntegratedGradients": [{"steps": 0}, {"steps": 2.0}, {"method": "simpson"},
                            {"baseline": "zeros"}, {"method": "riemann_trapezoid", "steps": 1}],
    "SmoothGrad": [{"nb_samples": 0}, {"noise_level": -0.1}, {"noise_level": "high"}],
    "VarGrad": [{"nb_samples": 1}, {"noise_level": float("nan")}],
    "SquareGrad": [{"nb_samples": 1.5}],
    "Occlusion": [{"patch_size": 0}, {"patch_size": (2, 0)}, {"patch_size": "big"},
                  {"stride": 0}, {"stride": (1, 2, 3)}, {"baseline": "zeros"}],
}


@pytest.mark.parametrize("name, overrides", [(name, bad) for name, bads in
                                             BAD_HYPERPARAMETERS.items() for bad in bads])
def test_bad_hyperparameters_raise_in_init(name, overrides):
    bad = list(overrides)[-1]  # the message names the hyperparameter and what it must be
    with pytest.raises(ValueError, match=rf"\b{bad}( must be| >=)"):
        make(name, small_cnn(), **overrides)


BASELINE_METHODS = ["IntegratedGradients", "Occlusion", "Rise", "SobolAttribution"]


@pytest.mark.parametrize("name", [*BASELINE_METHODS, "DeepLift"])
@pytest.mark.parametrize("baseline", [float("nan"), float("inf"),
                                      torch.tensor([0.0, float("nan")]),
                                      np.full((3, 1, 1), -np.inf)])
def test_a_baseline_that_is_not_finite_raises_in_init(name, baseline):
    with pytest.raises(ValueError, match="baseline must be finite"):
        make(name, small_cnn(), baseline=baseline)


@pytest.mark.parametrize("name", BASELINE_METHODS)
@pytest.mark.parametrize("baseline", [None, [0.0, 1.0], "black"])
def test_baseline_of_the_wrong_kind_raises_in_init(name, baseline):
    with pytest.raises((TypeError, ValueError), match="baseline must be a number, a tensor"):
        make(name, small_cnn(), baseline=baseline)


@pytest.mark.parametrize("name", BASELINE_METHODS)
def test_baseline_that_does_not_fit_the_inputs_raises_before_any_pass(name):
    model, x = data("images")
    passes = count_passes(model)
    with pytest.raises(ValueError, match="does not broadcast"):
        make(name, model, baseline=torch.zeros(2, 2)).explain(x)
    tabular_model, features = data("tabular")
    with pytest.raises(ValueError, match="blur"):
        make(name, tabular_model, baseline="blur").explain(features)
    assert passes == []


@pytest.mark.parametrize("name", WHITE_BOX)
def test_white_box_methods_name_the_black_box_alternatives(name):
    features = np.random.default_rng(0).normal(size=(20, 6))
    classifier = LogisticRegression().fit(features, np.arange(20) % 2)
    for model in (classifier, lambda a: a.sum(axis=1, keepdims=True)):
        with pytest.raises(TypeError, match="torch.nn.Module.*Occlusion"):
            make(name, model)


# -- one code path for torch, scikit-learn and numpy callables (black-box) ------------------
def black_box_models():
    """The same 3-class linear scores as a torch Module, a numpy callable and scikit-learn."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 6)).astype(np.float32)
    classifier = LogisticRegression(max_iter=500).fit(features, np.arange(60) % 3)
    w = classifier.coef_.astype(np.float32)
    b = classifier.intercept_.astype(np.float32)
    linear = nn.Linear(6, 3)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(w))
        linear.bias.copy_(torch.from_numpy(b))
    softmax = lambda a: torch.softmax(torch.from_numpy(a @ w.T + b), 1).numpy()  # noqa: E731
    return {"torch": linear, "callable": softmax, "sklearn": classifier}, features[:5]


@pytest.mark.parametrize("kind", ["torch", "callable", "sklearn"])
def test_occlusion_contract_for_every_kind_of_model(kind):
    models, x = black_box_models()
    model = models[kind]
    probabilities = kind == "torch"  # the other two already return probabilities
    explainer = Occlusion(model, patch_size=2, stride=1, probabilities=probabilities)
    x_before = x.copy()
    heatmaps = explainer.explain(x)
    assert heatmaps.shape == (5, 6) and heatmaps.dtype == torch.float32
    assert np.array_equal(x, x_before)
    reference = Occlusion(models["torch"], patch_size=2, stride=1, probabilities=True)
    torch.testing.assert_close(heatmaps, reference.explain(x), rtol=0, atol=1e-5)
    torch.testing.assert_close(explainer.explain(x, [0] * 5),
                               Occlusion(model, patch_size=2, stride=1, batch_size=1,
                                         probabilities=probabilities).explain(x, 0),
                               rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        explainer.explain(x, 3)
    with pytest.raises(ValueError, match="finite"):
        explainer.explain(np.full((2, 6), np.nan))
