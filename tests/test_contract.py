"""The contract of docs/design.md, generated from the exports (as scikit-learn's
check_estimator): every class in ``pellucid.explain.__all__`` and ``pellucid.metrics.__all__``
gets these checks by being exported. ``FAST`` only makes hyperparameters small for speed (and
gives required ones, such as DeepLiftShap's background); a new class needs no entry unless it
has required arguments.

Checks: output format; bad inputs and bad targets raise before any pass; no mutation of the
model or the inputs and no hook left, also after an exception; same seed, same result; batch
size changes nothing but rounding; repr, get_params, set_params and sklearn.base.clone; every
target form (None, ints, arrays, (N, T), selectors, callables, and the probabilities policy);
forward_kwargs batched with their inputs."""
import numpy as np
import pytest
import torch
from sklearn.base import clone
from torch import nn

import pellucid.explain as explain_package
import pellucid.metrics as metrics_package
from pellucid.explain.attention.base import AttentionExplainer
from conftest import small_cnn, small_mlp
from test_attention import vit as small_vit
from pellucid.explain import Craft, Explainer, Saliency
from pellucid.metrics import Metric
from pellucid.selectors import ClassScore

BASES = {"Explainer", "WhiteBoxExplainer", "Metric", "ModelMetric", "MetricResult"}
EXPLAINERS = [name for name in explain_package.__all__ if name not in BASES
              and issubclass(getattr(explain_package, name), Explainer)]
VIT_ONLY = [name for name in EXPLAINERS
            if issubclass(getattr(explain_package, name), AttentionExplainer)]
IMAGES = ("images", "vit")
CONCEPT_EXTRACTORS = [name for name in explain_package.__all__
                      if issubclass(getattr(explain_package, name), Craft)]
METRICS = [name for name in metrics_package.__all__ if name not in BASES
           and issubclass(getattr(metrics_package, name), Metric)]

FAST = {
    "IntegratedGradients": {"steps": 8, "method": "gausslegendre", "baseline": 0.1},
    "SmoothGrad": {"nb_samples": 5, "noise_level": 0.1},
    "VarGrad": {"nb_samples": 5, "noise_level": 0.1},
    "SquareGrad": {"nb_samples": 5, "noise_level": 0.3},
    "Occlusion": {"patch_size": 4, "stride": 2},
    "Rise": {"nb_samples": 16, "grid_size": 4},
    "SobolAttribution": {"nb_design": 4, "grid_size": 4},
    "DeepLift": {"rule": "reveal_cancel", "baseline": 0.1},
    "DeepLiftShap": lambda x: {"background": torch.rand(2, *x.shape[1:],
                                                        generator=torch.Generator().manual_seed(5))},
    "Deletion": {"step": 40},
    "Insertion": {"step": 40},
    "MuFidelity": {"nb_samples": 6, "grid_size": 4},
    "Road": {"fractions": (0.2, 0.6), "noise_level": 0.0},
    "Infidelity": {"nb_samples": 6},
    "Monotonicity": {"nb_samples": 2, "grid_size": 2},
    **dict.fromkeys(["SensitivityMax", "SensitivityAvg", "LocalLipschitz"],
                    {"explainer": Saliency, "nb_samples": 3, "radius": 0.1}),
    "RandomLogit": {"explainer": Saliency},
    "Craft": {"target_layer": 3, "n_concepts": 2, "crops_per_image": 2, "nb_design": 4},
    "KernelShap": {"nb_samples": 32},
    "Lime": {"nb_samples": 32},
    "ShapleyValueSampling": {"nb_samples": 2},
    "ShapExplainer": {"nb_samples": 40},
    "Lima": {"feature_mask": lambda x: three_by_three(x)},
    "Eva": {"feature_mask": lambda x: three_by_three(x), "bounds": "ibp"},
}


def three_by_three(x):
    """3 x 3 regions of any image size; one region per column of tabular inputs."""
    if x.ndim != 4:
        return torch.arange(x.shape[1])
    rows = torch.arange(x.shape[2]) * 3 // x.shape[2]
    return rows[:, None] * 3 + torch.arange(x.shape[3]) * 3 // x.shape[3]
STOCHASTIC = ["Infidelity", "Monotonicity", "SensitivityMax", "SensitivityAvg",
              "LocalLipschitz", "RandomLogit",  # metrics that draw perturbations or classes
              "SmoothGrad", "VarGrad", "SquareGrad", "Rise", "SobolAttribution", "MuFidelity",
              "KernelShap", "Lime", "ShapleyValueSampling"]


def cls_of(name):
    return getattr(explain_package if hasattr(explain_package, name) else metrics_package, name)


def kinds_of(name):
    """The data a class is checked on; the ViT attention explainers need attention layers, so
    they get images and a tiny ViT (kind "vit") instead of the CNN."""
    return ["vit"] if name in VIT_ONLY else list(cls_of(name).input_kinds)


def data(kind, n=4):
    """A model and inputs of each kind (images n x 3 x 16 x 16, 5 classes; tabular n x 6,
    3 classes)."""
    if kind in ("images", "vit"):
        model = small_cnn() if kind == "images" else small_vit()
        return model, torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    return small_mlp(), torch.randn(n, 6, generator=torch.Generator().manual_seed(2))


def make(name, model, x=None, **overrides):
    """The class ``name`` with its FAST settings (a metric that needs no model takes none)."""
    cls = cls_of(name)
    settings = FAST.get(name, {})
    settings = settings(x if x is not None else data("images")[1]) if callable(
        settings) else settings
    params = {**settings, "progress": False, **overrides}
    if issubclass(cls, Metric) and "model" not in cls.requires:
        return cls(**{k: v for k, v in params.items() if k in cls._param_names()})
    return cls(model, **params)


def heatmaps_for(x):
    """Heatmaps that depend on each input alone (the channel sum), so that slicing the inputs
    slices them."""
    x = torch.as_tensor(np.asarray(x.detach() if torch.is_tensor(x) else x))
    return x.sum(1) if x.ndim == 4 else x.clone()


def masks_for(x):
    masks = torch.zeros(heatmaps_for(x).shape, dtype=torch.bool)
    masks.view(len(x), -1)[:, :5] = True
    return masks


def run(name, obj, x, targets=None, **kwargs):
    """One call of the contract: ``explain`` for explainers, the metric call for metrics."""
    if isinstance(obj, Explainer):
        return obj.explain(x, targets, **kwargs)
    result = obj(x, heatmaps_for(x), targets, masks=masks_for(x), **kwargs)
    return torch.from_numpy(result.scores)


def count_passes(model):
    """List that receives the size of every batch the model sees."""
    sizes = []
    model.register_forward_pre_hook(lambda module, args, kwargs: sizes.append(len(args[0])),
                                    with_kwargs=True)
    return sizes


def uses_model(name):
    return not (issubclass(cls_of(name), Metric) and "model" not in cls_of(name).requires)


CASES = [(name, kind) for name in EXPLAINERS + METRICS for kind in kinds_of(name)]
MODEL_CASES = [(name, kind) for name, kind in CASES if uses_model(name)]


def test_nothing_exported_is_left_out():
    """Every public class of pellucid.explain and pellucid.metrics is an explainer, a concept
    extractor or a metric, so the checks below cover it."""
    exported = {*explain_package.__all__, *metrics_package.__all__} - BASES
    assert exported == {*EXPLAINERS, *CONCEPT_EXTRACTORS, *METRICS}
    assert {"Rise", "GradCAM", "DeepLiftShap", "CFCAM"} <= set(EXPLAINERS)
    assert {"Deletion", "Road", "PointingGame"} <= set(METRICS)
    assert not set(FAST) - {*EXPLAINERS, *METRICS, *CONCEPT_EXTRACTORS}  # no stale entry


# -- output ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name, kind", CASES)
def test_output_format(name, kind):
    model, x = data(kind)
    obj = make(name, model, x)
    if isinstance(obj, Explainer):
        heatmaps = obj.explain(x)
        expected = (len(x), *x.shape[2:]) if kind != "tabular" else tuple(x.shape)
        assert heatmaps.shape == expected
        assert heatmaps.dtype == torch.float32 and heatmaps.device.type == "cpu"
        assert torch.isfinite(heatmaps).all() and not heatmaps.requires_grad
        torch.testing.assert_close(obj(x.numpy()), heatmaps)  # numpy inputs, __call__
    else:
        result = obj(x, heatmaps_for(x), masks=masks_for(x))
        assert result.scores.shape == (len(x),) and result.scores.dtype == np.float64
        assert isinstance(result.mean, float) and result.higher_is_better in (True, False)
        again = obj(x.numpy(), heatmaps_for(x).numpy(), masks=masks_for(x).numpy())
        np.testing.assert_allclose(again.scores, result.scores, rtol=1e-6)


# -- errors before any pass -----------------------------------------------------------------
BAD_INPUTS = {
    "rank 3": (torch.rand(3, 16, 16), "rank"),
    "rank 1": (torch.rand(6), "rank"),
    "no sample": (torch.rand(0, 3, 16, 16), "no sample"),
    "channel mismatch": (torch.rand(2, 1, 16, 16), "channels"),
    "NaN": (torch.rand(2, 3, 16, 16).index_put_((torch.tensor([1]),), torch.tensor(np.nan)),
            "finite"),
    "inf": (torch.full((2, 3, 16, 16), float("inf")), "finite"),
    "a string": ("not an array", "torch.Tensor or numpy array"),
}


@pytest.mark.parametrize("name, bad", [
    (name, bad) for name in EXPLAINERS + METRICS for bad in BAD_INPUTS
    if uses_model(name) or bad != "channel mismatch"])  # no model, no channel count
def test_bad_inputs_raise_before_any_pass(name, bad):
    model = small_cnn()
    passes = count_passes(model)
    inputs, message = BAD_INPUTS[bad]
    obj = make(name, model)
    with pytest.raises((ValueError, TypeError), match=message):
        if isinstance(obj, Explainer):
            obj.explain(inputs)
        else:
            obj(inputs, torch.rand(2, 16, 16), masks=torch.ones(2, 16, 16))
    assert passes == []


@pytest.mark.parametrize("name, kind", [(name, kind) for name, kind in CASES if name in METRICS])
def test_bad_heatmaps_and_masks_raise_before_any_pass(name, kind):
    model, x = data(kind)
    passes = count_passes(model)
    metric = make(name, model, x)
    with pytest.raises(ValueError, match="heatmaps must have shape"):
        metric(x, heatmaps_for(x)[:, :-1], masks=masks_for(x))
    nan = heatmaps_for(x)
    nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        metric(x, nan, masks=masks_for(x))
    if "masks" in metric.requires:
        with pytest.raises(ValueError, match="needs ground-truth masks"):
            metric(x, heatmaps_for(x))
        with pytest.raises(ValueError, match="masks must have the heatmaps' shape"):
            metric(x, heatmaps_for(x), masks=masks_for(x)[:-1])
    assert passes == []


@pytest.mark.parametrize("name", [name for name, kind in MODEL_CASES if kind in IMAGES])
def test_bad_targets_raise_before_the_work(name):
    model, x = data(kinds_of(name)[0])
    passes = count_passes(model)
    obj = make(name, model, x)
    for targets, error, message in [(5, ValueError, r"\[0, 5\)"), (-1, ValueError, r"\[0, 5\)"),
                                    ([0, 1, 7, 2], ValueError, r"\[0, 5\)"),
                                    ([0, 1], ValueError, "expected 4, got 2"),
                                    ([0.5] * 4, TypeError, "integers"),
                                    (True, TypeError, "bool"),
                                    (np.zeros((3, 2), int), ValueError,
                                     r"\(4, T\)|one target per input"),
                                    ("cat", TypeError, "targets must be")]:
        with pytest.raises(error, match=message):
            run(name, obj, x, targets)
    assert sum(passes) <= 8  # at most one sample per call, to read the outputs' shape


@pytest.mark.parametrize("batch_size", [0, -2, 2.5, True, None])
@pytest.mark.parametrize("name", [name for name in EXPLAINERS + METRICS if uses_model(name)])
def test_batch_size_must_be_a_positive_int(name, batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        make(name, small_cnn(), batch_size=batch_size)


@pytest.mark.parametrize("name", [name for name in EXPLAINERS + METRICS + CONCEPT_EXTRACTORS
                                  if "tabular" not in cls_of(name).input_kinds])
def test_images_only_classes_refuse_tabular_inputs_before_any_pass(name):
    model = small_cnn()
    passes = count_passes(model)
    obj = make(name, model)
    with pytest.raises(ValueError, match=f"{name} needs images"):
        if isinstance(obj, Craft):
            obj.fit(torch.rand(4, 6))
        else:
            run(name, obj, torch.rand(4, 6))
    assert passes == []


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
    if kind in IMAGES:
        model.train()
    return model, x


@pytest.mark.parametrize("name, kind", MODEL_CASES)
def test_model_and_inputs_unchanged(name, kind):
    model, x = user_model(kind)
    x.requires_grad_(True)
    x_before, state = x.detach().clone(), model_state(model)
    array = x.detach().numpy().copy()
    heatmaps = heatmaps_for(x).numpy()
    heatmaps_before = heatmaps.copy()
    obj = make(name, model, x.detach())
    for inputs in (x, array):
        if isinstance(obj, Explainer):
            obj.explain(inputs)
        else:
            obj(inputs, heatmaps, masks=masks_for(x))
    assert_same_state(state, model_state(model))
    assert torch.equal(x.detach(), x_before) and x.grad is None
    assert np.array_equal(array, x_before.numpy()) and np.array_equal(heatmaps, heatmaps_before)


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
@pytest.mark.parametrize("name, kind", MODEL_CASES)
def test_model_unchanged_after_a_call_that_raised(name, kind, fail_at):
    inner, x = user_model(kind)
    model = FailsOnCall(inner, fail_at=fail_at)  # call 1 reads the outputs' shape
    state, x_before = model_state(model), x.clone()
    obj = make(name, model, x, batch_size=3)
    with pytest.raises(RuntimeError, match="on purpose"):
        run(name, obj, x, 1)
    assert model.calls == fail_at
    assert_same_state(state, model_state(model))
    assert torch.equal(x, x_before)
    # nothing is left half-done: the next call gives the answer of the unwrapped model
    torch.testing.assert_close(run(name, obj, x, 1),
                               run(name, make(name, inner, x, batch_size=3), x, 1))


# -- seeds, batch size, hyperparameters -----------------------------------------------------
@pytest.mark.parametrize("name, kind", MODEL_CASES)
def test_same_seed_same_result(name, kind):
    model, x = data(kind)
    first = run(name, make(name, model, x, seed=0), x, 1)
    torch.testing.assert_close(run(name, make(name, model, x, seed=0), x, 1), first,
                               rtol=0, atol=0)
    if name in STOCHASTIC:
        # another seed, another result (SensitivityMax's ratios to the fixture's unrelated
        # heatmaps all lie within 1e-4 of 1: compared exactly)
        assert not torch.equal(run(name, make(name, model, x, seed=1), x, 1), first)


@pytest.mark.parametrize("name, kind", MODEL_CASES)
def test_batch_size_does_not_change_the_result(name, kind):
    model, x = data(kind)
    one = run(name, make(name, model, x, batch_size=1), x, 1)
    many = run(name, make(name, model, x, batch_size=64), x, 1)
    with torch.no_grad():
        scale = max(model(x).abs().max().item(), many.abs().max().item())
    # only float rounding may differ: logits computed in batches of another size. Sobol
    # indices are ratios of variances, which magnify that rounding (measured: 1e-5 relative).
    relative = 1e-4 if name == "SobolAttribution" else 1e-6
    torch.testing.assert_close(one, many, rtol=1e-5, atol=relative * scale)


@pytest.mark.parametrize("name", EXPLAINERS + METRICS + CONCEPT_EXTRACTORS)
def test_repr_get_params_set_params_and_clone(name):
    model, x = data("images")
    overrides = {"batch_size": 7, "seed": 3} if uses_model(name) else {}
    obj = make(name, model, x, **overrides)
    params = obj.get_params()
    assert repr(obj).startswith(f"{name}(")
    for key, value in params.items():
        assert getattr(obj, key) is value
        if not torch.is_tensor(value):
            assert f"{key}={value!r}" in repr(obj)
    twin = clone(obj)
    assert type(twin) is type(obj) and twin is not obj
    assert twin.get_params().keys() == params.keys()
    for key, value in params.items():
        same = twin.get_params()[key]
        assert same is value if torch.is_tensor(value) or callable(value) else same == value
    if uses_model(name):
        assert twin.model is obj.model  # a clone explains the same model
        assert obj.set_params(batch_size=5) is obj and obj.batch_size == 5
        with pytest.raises(ValueError, match="batch_size"):
            obj.set_params(batch_size=0)
        assert obj.batch_size == 5
    with pytest.raises(ValueError, match="no hyperparameter"):
        obj.set_params(not_a_parameter=1)


# -- targets --------------------------------------------------------------------------------
@pytest.mark.parametrize("name, kind", MODEL_CASES)
def test_every_form_of_targets(name, kind):
    model, x = data(kind)
    obj = make(name, model, x)
    with torch.no_grad():
        predicted = model(x).argmax(dim=1)
    expected = run(name, obj, x, predicted)
    for targets in (None, predicted.tolist(), tuple(predicted.tolist()), predicted.numpy(),
                    predicted.int(), ClassScore(predicted), ClassScore()):
        torch.testing.assert_close(run(name, obj, x, targets), expected)
    one_class = run(name, obj, x, 2)
    torch.testing.assert_close(run(name, obj, x, [2] * len(x)), one_class)
    if name in ("RandomLogit", "Eva"):  # compare the target with other classes: classes only
        with pytest.raises(ValueError, match="targets must be classes"):
            run(name, obj, x, lambda outputs: outputs[:, 2])
        return
    # a callable reads the raw outputs: refused with probabilities=True, the same otherwise
    function = lambda outputs: outputs[:, 2]  # noqa: E731
    if getattr(obj, "probabilities", False):
        with pytest.raises(ValueError, match="targets function"):
            run(name, obj, x, function)
        obj.set_params(probabilities=False)
        one_class = run(name, obj, x, 2)
    torch.testing.assert_close(run(name, obj, x, function), one_class, equal_nan=True)


@pytest.mark.parametrize("name, kind", MODEL_CASES)
def test_several_targets_per_input(name, kind):
    """(N, T) targets: explainers return (N, T, ...) equal to T single-target calls; metrics
    score one target per input and say so before any work."""
    model, x = data(kind)
    obj = make(name, model, x)
    targets = np.array([[0, 2, 1]] * len(x))
    if not isinstance(obj, Explainer):
        passes = count_passes(model)
        with pytest.raises(ValueError, match="one target per input"):
            run(name, obj, x, targets)
        assert passes == []
        return
    heatmaps = obj.explain(x, targets)
    assert heatmaps.shape == (len(x), 3, *run(name, obj, x, 0).shape[1:])
    for j in range(3):
        torch.testing.assert_close(heatmaps[:, j], obj.explain(x, targets[:, j]))
    torch.testing.assert_close(obj.explain(x, targets[:, :1])[:, 0], obj.explain(x, 0))


# -- forward arguments ----------------------------------------------------------------------
class Scaled(nn.Module):
    """A model with an extra forward argument: ``inner(x) * scale[:, None]``."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x, scale):
        return self.inner(x) * scale[:, None]


class Baked(nn.Module):
    """The same model with one scale baked in."""

    def __init__(self, inner, scale):
        super().__init__()
        self.inner, self.scale = inner, scale

    def forward(self, x):
        return self.inner(x) * self.scale


@pytest.mark.parametrize("name", [name for name, kind in MODEL_CASES if kind in IMAGES])
def test_forward_kwargs_go_with_their_inputs(name):
    inner, x = data(kinds_of(name)[0], n=3)
    scale = torch.tensor([0.5, 1.0, 2.0])
    obj = make(name, Scaled(inner), x)
    together = run(name, obj, x, 1, forward_kwargs={"scale": scale})
    for i in range(len(x)):
        alone = run(name, make(name, Baked(inner, scale[i].item()), x[i:i + 1]), x[i:i + 1], 1)
        if isinstance(obj, Explainer) or name not in STOCHASTIC:  # MuFidelity draws per batch
            torch.testing.assert_close(together[i:i + 1], alone, rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="forward_kwargs must be a dict"):
        run(name, obj, x, 1, forward_kwargs=[scale])


# -- procedures: the same hyperparameter habits ---------------------------------------------
@pytest.mark.parametrize("name", ["Roar", "Kar", "ModelRandomization"])
def test_procedures_have_params_repr_and_clone(name):
    import pellucid.procedures as procedures
    from pellucid.explain import Saliency
    cls = getattr(procedures, name)
    first = small_cnn() if name == "ModelRandomization" else (lambda x, y: None)
    procedure = cls(first, Saliency, explainer_kwargs={"progress": False}, seed=4)
    assert repr(procedure).startswith(f"{name}(") and "seed=4" in repr(procedure)
    twin = clone(procedure)
    assert twin.get_params() == procedure.get_params() and twin.explainer is Saliency
    assert procedure.set_params(seed=5).seed == 5
    with pytest.raises(ValueError, match="no hyperparameter"):
        procedure.set_params(fraction=0.1)


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("name", [name for name, kind in MODEL_CASES if kind in IMAGES])
def test_the_caller_s_grad_mode_changes_nothing(name, context):
    """Gradient methods, DeepLIFT and CAMs enable gradients for their own passes: called
    inside ``torch.no_grad()`` or ``torch.inference_mode()`` they give the same result."""
    model, x = data(kinds_of(name)[0])
    expected = run(name, make(name, model, x), x, 1)
    with context():
        inputs = x.clone()  # an inference tensor under inference_mode
        torch.testing.assert_close(run(name, make(name, model, x), inputs, 1), expected)
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("name, kind", MODEL_CASES)
def test_models_run_in_their_own_dtype(name, kind):
    """A float64 copy of the model gives the float32 result (to float32 rounding); a bfloat16
    copy runs too (its 8-bit mantissa changes the numbers) and the result is float32."""
    import copy
    model, x = data(kind)
    expected = run(name, make(name, model, x), x, 1)
    as_double = run(name, make(name, copy.deepcopy(model).double(), x), x, 1)
    scale = max(expected.abs().max().item(), 1e-12)
    torch.testing.assert_close(as_double.to(expected.dtype), expected, rtol=1e-4,
                               atol=1e-4 * scale)
    as_bfloat16 = run(name, make(name, copy.deepcopy(model).to(torch.bfloat16), x), x, 1)
    assert as_bfloat16.shape == expected.shape and torch.isfinite(as_bfloat16).all()
    if isinstance(as_bfloat16, torch.Tensor) and name in EXPLAINERS:
        assert as_bfloat16.dtype == torch.float32
