"""The Explainer contract (design.md) for every method that takes images and tabular inputs
(gradient family, Occlusion, RISE, Sobol, DeepLIFT; the CAM family has its own in
test_cam.py since it takes images only): output format,
errors before any work, no mutation of model or inputs (also after an exception), seeds,
target forms, batch-size invariance, the same code path for torch and scikit-learn."""
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


# -- output ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", EXPLAINERS)
def test_heatmaps_are_float32_cpu_of_the_documented_shape(name, kind):
    model, x = data(kind)
    heatmaps = make(name, model).explain(x)
    expected = (len(x), *x.shape[2:]) if kind == "images" else tuple(x.shape)
    assert heatmaps.shape == expected
    assert heatmaps.dtype == torch.float32 and heatmaps.device.type == "cpu"
    assert torch.isfinite(heatmaps).all() and heatmaps.abs().max() > 0
    assert not heatmaps.requires_grad
    torch.testing.assert_close(make(name, model)(x.numpy()), heatmaps)  # numpy, __call__


@pytest.mark.parametrize("name", EXPLAINERS)
def test_repr_shows_the_hyperparameters(name):
    explainer = make(name, small_cnn(), batch_size=7, seed=3)
    text = repr(explainer)
    assert text.startswith(f"{name}(")
    for key, value in {**EXPLAINERS[name][1], "batch_size": 7, "seed": 3}.items():
        assert f"{key}={value!r}" in text
        assert getattr(explainer, key) == value


# -- errors, raised before any forward pass ------------------------------------------------
BAD_INPUTS = {
    "rank 3": (torch.rand(3, 16, 16), "rank"),
    "rank 5": (torch.rand(1, 1, 3, 16, 16), "rank"),
    "rank 1": (torch.rand(6), "rank"),
    "no sample": (torch.rand(0, 3, 16, 16), "no sample"),
    "channel mismatch": (torch.rand(2, 1, 16, 16), "channels"),
    "NaN": (torch.rand(2, 3, 16, 16).index_put_((torch.tensor([1]),), torch.tensor(np.nan)),
            "finite"),
    "inf": (torch.full((2, 3, 16, 16), float("inf")), "finite"),
}


@pytest.mark.parametrize("bad", BAD_INPUTS)
@pytest.mark.parametrize("name", EXPLAINERS)
def test_bad_inputs_raise_before_any_pass(name, bad):
    model = small_cnn()
    passes = count_passes(model)
    inputs, message = BAD_INPUTS[bad]
    with pytest.raises(ValueError, match=message):
        make(name, model).explain(inputs)
    assert passes == []


@pytest.mark.parametrize("name", EXPLAINERS)
def test_feature_count_mismatch_and_wrong_types(name):
    model = small_mlp()
    passes = count_passes(model)
    with pytest.raises(ValueError, match="expects 6 features"):
        make(name, model).explain(torch.randn(3, 5))
    with pytest.raises(TypeError, match="torch.Tensor or numpy array"):
        make(name, model).explain("not an array")
    assert passes == []


@pytest.mark.parametrize("name", EXPLAINERS)
def test_bad_targets_raise_before_the_explanation(name):
    model, x = data("images")
    passes = count_passes(model)
    explainer = make(name, model)
    for targets, error, message in [(5, ValueError, r"\[0, 5\)"), (-1, ValueError, r"\[0, 5\)"),
                                    ([0, 1, 7, 2], ValueError, r"\[0, 5\)"),
                                    ([0, 1], ValueError, "expected 4, got 2"),
                                    (torch.zeros(5, dtype=torch.long), ValueError, "expected 4"),
                                    ([0.5] * 4, TypeError, "integers"),
                                    (True, TypeError, "bool")]:
        with pytest.raises(error, match=message):
            explainer.explain(x, targets)
    assert sum(passes) <= 7  # at most one sample per call, to read the number of classes


@pytest.mark.parametrize("batch_size", [0, -2, 2.5, True, None])
@pytest.mark.parametrize("name", EXPLAINERS)
def test_batch_size_must_be_a_positive_int(name, batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        make(name, small_cnn(), batch_size=batch_size)


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
    with pytest.raises(ValueError):
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


# -- nothing the user passed in is changed --------------------------------------------------
def model_state(model):
    return {
        "parameters": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "hooks": [(dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks),
                   dict(m._backward_pre_hooks)) for m in model.modules()],
        "grad_mode": torch.is_grad_enabled(),
    }


def assert_same_state(before, after):
    assert before.keys() == after.keys()
    for key in before["parameters"]:
        assert torch.equal(before["parameters"][key], after["parameters"][key]), key
    for key in ("training", "requires_grad", "grads", "hooks", "grad_mode"):
        assert before[key] == after[key], key


def user_model(kind):
    """A model as a user may hand it over: a frozen layer, a hook of their own, and (for the
    CNN, which has no dropout or batch norm) train mode."""
    model, x = data(kind)
    next(model.parameters()).requires_grad_(False)
    model.register_forward_hook(lambda module, args, out: None)
    if kind == "images":
        model.train()
    return model, x


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", EXPLAINERS)
def test_model_and_inputs_unchanged_after_explain(name, kind):
    model, x = user_model(kind)
    x.requires_grad_(True)
    x_before, state = x.detach().clone(), model_state(model)
    array = x.detach().numpy().copy()
    make(name, model).explain(x)
    make(name, model).explain(array)
    assert_same_state(state, model_state(model))
    assert torch.equal(x.detach(), x_before) and x.grad is None
    assert np.array_equal(array, x_before.numpy())


class FailsOnCall(nn.Module):
    """Wraps a model and raises on its ``fail_at``-th forward call (only that one)."""

    def __init__(self, inner, fail_at):
        super().__init__()
        self.inner, self.fail_at, self.calls = inner, fail_at, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("forward failed on purpose")
        return self.inner(x)


@pytest.mark.parametrize("fail_at", [2, 3])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", EXPLAINERS)
def test_model_unchanged_after_an_explain_that_raised(name, kind, fail_at):
    inner, x = user_model(kind)
    # call 1 reads the number of classes; 2 and 3 are the first explanation batches
    model = FailsOnCall(inner, fail_at=fail_at)
    state, x_before = model_state(model), x.clone()
    explainer = make(name, model, batch_size=3)
    with pytest.raises(RuntimeError, match="on purpose"):
        explainer.explain(x, 1)
    assert model.calls == fail_at
    assert_same_state(state, model_state(model))
    assert torch.equal(x, x_before)
    # nothing is left half-done: the next call gives the answer of the unwrapped model
    torch.testing.assert_close(explainer.explain(x, 1),
                               make(name, inner, batch_size=3).explain(x, 1))


# -- seeds, targets, batch size -------------------------------------------------------------
@pytest.mark.parametrize("name", NOISY)
def test_same_seed_same_map_other_seed_other_map(name):
    model, x = data("images")
    first = make(name, model, seed=0).explain(x, 1)
    assert torch.equal(first, make(name, model, seed=0).explain(x, 1))
    assert not torch.allclose(first, make(name, model, seed=1).explain(x, 1))
    unseeded = make(name, model, seed=None)
    assert not torch.allclose(unseeded.explain(x, 1), unseeded.explain(x, 1))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", EXPLAINERS)
def test_every_form_of_targets_gives_the_same_map(name, kind):
    model, x = data(kind)
    explainer = make(name, model)
    with torch.no_grad():
        predicted = model(x).argmax(dim=1)
    expected = explainer.explain(x, predicted)
    for targets in (None, predicted.tolist(), tuple(predicted.tolist()), predicted.numpy(),
                    predicted.int()):
        torch.testing.assert_close(explainer.explain(x, targets), expected)
    one_class = explainer.explain(x, 2)
    torch.testing.assert_close(explainer.explain(x, [2] * len(x)), one_class)
    torch.testing.assert_close(explainer.explain(x[1:2], 2), one_class[1:2])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", EXPLAINERS)
def test_batch_size_does_not_change_the_result(name, kind):
    model, x = data(kind)
    one = make(name, model, batch_size=1).explain(x, 1)
    many = make(name, model, batch_size=64).explain(x, 1)
    with torch.no_grad():
        scale = max(model(x).abs().max().item(), many.abs().max().item())
    # only float rounding may differ: logits computed in batches of another size. Sobol
    # indices are ratios of variances, which magnify that rounding (measured: 1e-5 relative).
    relative = 1e-4 if name == "SobolAttribution" else 1e-6
    torch.testing.assert_close(one, many, rtol=1e-5, atol=relative * scale)


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
