"""Sobol estimators (against the Ishigami function's known indices) and SobolAttribution."""
import numpy as np
import pytest
import torch
from conftest import Recorder, linear_model, small_cnn

from pellucid._imaging import gaussian_blur
from pellucid.explain.perturbation.sobol import SobolAttribution
from pellucid.explain.perturbation.sobol_estimators import (design_rows, jansen_total_indices,
                                               saltelli_first_order_indices, sobol_design)

# Ishigami function, a = 7, b = 0.1, x_i ~ U(-pi, pi); published indices (Ishigami & Homma
# 1990; Saltelli et al. 2008), re-derived in ishigami_analytic below.
ISHIGAMI_TOTAL = np.array([0.5576, 0.4424, 0.2437])
ISHIGAMI_FIRST = np.array([0.3139, 0.4424, 0.0])


def ishigami(u, a=7.0, b=0.1):
    x = (2 * np.asarray(u, dtype=np.float64) - 1) * np.pi
    return np.sin(x[..., 0]) + a * np.sin(x[..., 1]) ** 2 + b * x[..., 2] ** 4 * np.sin(x[..., 0])


def ishigami_analytic(a=7.0, b=0.1):
    """The indices written out from the ANOVA decomposition (no sampling)."""
    v1 = 0.5 * (1 + b * np.pi ** 4 / 5) ** 2
    v2 = a ** 2 / 8
    v13 = b ** 2 * np.pi ** 8 * (1 / 18 - 1 / 50)
    v = v1 + v2 + v13
    return np.array([v1 + v13, v2, v13]) / v, np.array([v1, v2, 0.0]) / v


def test_analytic_ishigami_values_are_the_published_ones():
    total, first = ishigami_analytic()
    np.testing.assert_allclose(total, ISHIGAMI_TOTAL, atol=1e-3)
    np.testing.assert_allclose(first, ISHIGAMI_FIRST, atol=1e-3)


@pytest.mark.parametrize("seed", [0, 1])
def test_jansen_and_saltelli_recover_ishigami_indices(seed):
    a, b, c = sobol_design(2 ** 12, 3, seed=seed)
    f_a, f_b, f_c = ishigami(a), ishigami(b), ishigami(c)
    total, first = ishigami_analytic()
    np.testing.assert_allclose(jansen_total_indices(f_a, f_b, f_c), total, atol=0.03)
    np.testing.assert_allclose(saltelli_first_order_indices(f_a, f_b, f_c), first, atol=0.03)


def test_design_is_pick_freeze_and_seeded():
    a, b, c = sobol_design(16, 5, seed=3)
    assert a.shape == b.shape == (16, 5) and c.shape == (5, 16, 5)
    assert a.min() >= 0 and a.max() <= 1 and b.min() >= 0 and b.max() <= 1
    for i in range(5):
        others = [j for j in range(5) if j != i]
        np.testing.assert_array_equal(c[i][:, i], b[:, i])
        np.testing.assert_array_equal(c[i][:, others], a[:, others])
    stacked = np.concatenate([a, b, c.reshape(-1, 5)])
    chunks = [design_rows(a, b, slice(start, start + 13)) for start in range(0, 7 * 16, 13)]
    np.testing.assert_array_equal(np.concatenate(chunks), stacked)
    again = sobol_design(16, 5, seed=3)
    np.testing.assert_array_equal(again[0], a)
    assert not np.array_equal(sobol_design(16, 5, seed=4)[0], a)


@pytest.mark.parametrize("bad", [0, 3, 24, 2.0, True])
def test_design_size_must_be_a_power_of_two(bad):
    with pytest.raises(ValueError, match="power of 2"):
        sobol_design(bad, 4, seed=0)


def test_estimators_accept_a_batch_axis():
    a, b, c = sobol_design(256, 3, seed=0)
    outputs = [np.stack([ishigami(m), 2 * ishigami(m) + 1]) for m in (a, b, c)]
    batched = jansen_total_indices(*outputs)
    assert batched.shape == (2, 3)
    single = jansen_total_indices(ishigami(a), ishigami(b), ishigami(c))
    np.testing.assert_allclose(batched[0], single)
    np.testing.assert_allclose(batched[1], single)  # indices are invariant to affine maps
    assert saltelli_first_order_indices(*outputs).shape == (2, 3)


def test_estimators_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="f_C must have shape"):
        jansen_total_indices(np.zeros(8), np.zeros(8), np.zeros((3, 7)))
    with pytest.raises(ValueError, match="f_B must have the shape"):
        jansen_total_indices(np.zeros(8), np.zeros(4), np.zeros((3, 8)))


# --- SobolAttribution -------------------------------------------------------------------------

def additive_indices(weights, x):
    contributions = (weights * x) ** 2
    return contributions / contributions.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("perturbation", ["amplitude", "inpainting"])
def test_additive_model_total_indices_are_analytic(perturbation):
    """f(z) = sum_i w_i z_i + b. Amplitude: z_i = x_i (M_i - 1/2) sigma; inpainting with
    baseline 0: z_i = x_i M_i. Either way f = const + sum_i c w_i x_i M_i with the M_i independent
    U(0, 1), so f is additive in the M_i: Var f = sum_i (c w_i x_i)^2 Var(M_i), no interaction,
    and ST_i = S_i = (w_i x_i)^2 / sum_j (w_j x_j)^2 (Var(M_i) = 1/12 and c cancel)."""
    rng = np.random.default_rng(0)
    weights, x = rng.normal(size=6), rng.normal(size=(3, 6))
    explainer = SobolAttribution(linear_model(weights, 0.4), nb_design=1024,
                                 perturbation=perturbation, sigma=2.0, batch_size=4096,
                                 progress=False)
    expected = additive_indices(weights, x)
    inputs = torch.tensor(x, dtype=torch.float32)
    heatmap = explainer(inputs, targets=0).numpy()
    np.testing.assert_allclose(heatmap, expected, atol=0.05)
    indices = explainer.indices(inputs, targets=0)
    np.testing.assert_allclose(indices.total.numpy(), heatmap, atol=1e-6)
    np.testing.assert_allclose(indices.first_order.numpy(), expected, atol=0.05)


def test_amplitude_and_inpainting_inputs_follow_the_documented_formulas():
    """Inputs of ones: inpainting shows the mask itself, amplitude (M - 1/2) sigma. Masks are the
    design's rows A, B, C_1, ..., C_d in that order, each grid cell upsampled by nearest
    neighbour to its block of pixels (here 3 x 5 pixels per cell of a 4 x 4 grid, H != W)."""
    height, width, grid = 12, 20, 4
    a, b, c = sobol_design(8, grid * grid, seed=3)
    rows = np.concatenate([a, b, c.reshape(-1, grid * grid)]).reshape(-1, grid, grid)
    expected_masks = np.kron(rows, np.ones((1, 3, 5)))
    for perturbation, expected in [("inpainting", expected_masks),
                                   ("amplitude", (expected_masks - 0.5) * 3.0)]:
        recorder = Recorder(lambda z: z.sum(axis=(1, 2, 3))[:, None])
        SobolAttribution(recorder, grid_size=grid, nb_design=8, perturbation=perturbation,
                         sigma=3.0, seed=3, batch_size=50, progress=False)(
            torch.ones(1, 2, height, width), targets=0)
        seen = np.concatenate(recorder.batches)
        # nb_design (d + 2) perturbed inputs, after the one pass that checks the targets
        assert seen.shape == (1 + 8 * (grid * grid + 2), 2, height, width)
        seen = seen[1:]
        np.testing.assert_allclose(seen[:, 0], expected, atol=1e-6)
        np.testing.assert_allclose(seen[:, 1], expected, atol=1e-6)


def test_blur_perturbation_uses_the_blurred_image_as_reference():
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    recorder = Recorder(lambda z: z.sum(axis=(1, 2, 3))[:, None])
    SobolAttribution(recorder, grid_size=2, nb_design=2, perturbation="blur", seed=0,
                     batch_size=100, progress=False)(x, targets=0)
    seen = torch.as_tensor(recorder.batches[-1])
    a = torch.as_tensor(sobol_design(2, 4, seed=0)[0]).reshape(-1, 1, 2, 2)
    masks = torch.nn.functional.interpolate(a, size=(8, 8), mode="nearest")
    blurred = gaussian_blur(x)
    torch.testing.assert_close(seen[:2], x * masks + (1 - masks) * blurred)


def test_non_square_images_find_the_cell_the_model_reads():
    """The model reads only rows 0-2, columns 15-19 of a 12 x 20 image: grid cell (0, 3) of a
    4 x 4 grid. Its total index must be ~1 and all others ~0 (a height/width swap would put the
    mass elsewhere)."""
    def region_sum(z):
        return z[:, :, :3, 15:].sum(axis=(1, 2, 3))[:, None] ** 2

    x = torch.rand(2, 3, 12, 20, generator=torch.Generator().manual_seed(1)) + 0.5
    explainer = SobolAttribution(region_sum, grid_size=4, nb_design=32, batch_size=256,
                                 progress=False)
    total = explainer.indices(x, targets=0).total
    assert total.shape == (2, 4, 4)
    np.testing.assert_allclose(total[:, 0, 3].numpy(), 1.0, atol=0.05)
    others = total.clone()
    others[:, 0, 3] = 0
    assert others.abs().max() < 1e-6
    heatmap = explainer(x, targets=0)
    assert heatmap.shape == (2, 12, 20)
    assert heatmap[:, :3, 15:].mean() > 5 * heatmap[:, 6:, :10].abs().mean()


def test_same_map_whatever_the_batch_size_and_seeded():
    model = small_cnn()
    x = torch.rand(3, 3, 8, 12, generator=torch.Generator().manual_seed(2))

    def explain(batch_size, seed):
        return SobolAttribution(model, grid_size=3, nb_design=8, batch_size=batch_size,
                                seed=seed, progress=False)(x)

    torch.testing.assert_close(explain(7, 0), explain(64, 0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(explain(2, 0), explain(64, 0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(explain(64, 0), explain(64, 0), rtol=0, atol=0)
    assert (explain(64, 0) - explain(64, 1)).abs().max() > 1e-3


def test_memory_is_bounded_by_batch_size():
    recorder = Recorder(lambda z: z.reshape(len(z), -1)[:, :1])
    SobolAttribution(recorder, grid_size=4, nb_design=16, batch_size=40, progress=False)(
        torch.rand(3, 1, 8, 8), targets=0)
    sizes = [len(b) for b in recorder.batches]
    assert max(sizes) <= 40
    assert sum(sizes) >= 3 * 16 * (16 + 2)


def test_works_with_torch_sklearn_and_numpy_callables():
    from sklearn.linear_model import LinearRegression, LogisticRegression
    rng = np.random.default_rng(3)
    data = rng.normal(size=(200, 4))
    weights = np.array([2.0, -1.0, 0.5, 0.0])
    x = data[:2]
    expected = additive_indices(weights, x)
    inputs = torch.tensor(x, dtype=torch.float32)
    for model in (LinearRegression().fit(data, data @ weights), lambda a: a @ weights,
                  linear_model(weights)):
        heatmap = SobolAttribution(model, nb_design=512, perturbation="amplitude",
                                   batch_size=2048, progress=False)(inputs, targets=0)
        np.testing.assert_allclose(heatmap.numpy(), expected, atol=0.05)
    classifier = LogisticRegression().fit(data, data @ weights > 0)
    twin = torch.nn.Linear(4, 2).eval()  # logits (0, w.x + b): their softmax is predict_proba
    with torch.no_grad():
        twin.weight.copy_(torch.tensor(np.stack([np.zeros(4), classifier.coef_[0]])))
        twin.bias.copy_(torch.tensor([0.0, classifier.intercept_[0]]))
    same = dict(nb_design=16, seed=2, progress=False)
    torch.testing.assert_close(SobolAttribution(classifier, **same)(inputs),
                               SobolAttribution(twin, probabilities=True, **same)(inputs),
                               rtol=1e-4, atol=1e-6)
    assert SobolAttribution(small_cnn(), grid_size=2, nb_design=4, progress=False)(
        torch.rand(1, 3, 8, 8)).shape == (1, 8, 8)


@pytest.mark.parametrize("kwargs, message", [
    ({"nb_design": 24}, "power of 2"),
    ({"grid_size": 0}, "grid_size"),
    ({"perturbation": "noise"}, "perturbation"),
    ({"sigma": -1.0}, "sigma"),
])
def test_bad_hyperparameters_raise_in_init(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SobolAttribution(small_cnn(), **kwargs)


def test_blur_on_tabular_raises_before_any_forward_pass():
    recorder = Recorder(lambda a: a)
    with pytest.raises(ValueError, match="blur"):
        SobolAttribution(recorder, perturbation="blur", progress=False)(torch.rand(2, 4), 0)
    assert recorder.batches == []


def test_leaves_model_and_inputs_untouched():
    model = small_cnn()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, 3, 8, 8)
    x_before = x.clone()
    SobolAttribution(model, grid_size=2, nb_design=4, progress=False)(x)
    assert not model.training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(x, x_before)


@pytest.mark.filterwarnings("ignore:.*training mode")
def test_indices_put_back_batchnorm_statistics_of_a_model_in_training_mode():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(16, 5)).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    SobolAttribution(model, grid_size=2, nb_design=4, progress=False).indices(
        torch.rand(2, 3, 8, 8), 1)
    assert model.training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_perturbed_inputs_are_built_on_the_device_of_the_model():
    from pellucid.models import Model

    class OnMetaDevice(Model):  # a model adapter that runs "elsewhere" (the meta device)
        def __init__(self):
            super().__init__()
            self.device, self.batches = torch.device("meta"), []

        def _raw_scores(self, x):
            self.batches.append((len(x), x.device.type))
            return torch.zeros(len(x), 3)

    model = OnMetaDevice()
    SobolAttribution(model, grid_size=2, nb_design=4, progress=False).indices(
        torch.rand(2, 3, 8, 8), 1)
    masked = [device for size, device in model.batches if size > 1]  # not the class count
    assert masked and set(masked) == {"meta"}
