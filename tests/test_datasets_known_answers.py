"""Benchmarks with known answers: ChaosMining-style low-SNR tasks (Shi et al., 2024)."""
import numpy as np
import pytest
import torch
from torch import nn

from pellucid import datasets
from pellucid.explain import IntegratedGradients
from pellucid.metrics import FeatureAgreement
from pellucid.procedures import Kar
from pellucid.zoo import fit_from_scratch


def fit_mlp(x, y, *, regression, seed=0, steps=300, hidden=64):
    outputs = 1 if regression else int(torch.as_tensor(y).max()) + 1
    return fit_from_scratch(
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(torch.as_tensor(x)[0].numel(), hidden),
                              nn.ReLU(), nn.Linear(hidden, outputs)),
        x, y, epochs=steps, lr=1e-2, weight_decay=1e-4, regression=regression, seed=seed)


@pytest.mark.parametrize("function, formula", [
    ("linear", lambda x: x.sum(1)),
    ("sines", lambda x: np.sin(np.pi * x).sum(1)),
    ("products", lambda x: x[:, 0] * x[:, 1] + x[:, 2] * x[:, 3]),
    ("squares", lambda x: (x ** 2 - 1 / 3).sum(1)),
])
def test_chaos_regression_has_the_stated_snr_and_relevant_features(function, formula):
    snr = 0.5
    data = datasets.load_chaos_regression(20000, 10, n_features=30, n_relevant=4,
                                          function=function, snr=snr, seed=1)
    relevant = data.extras["relevant"]
    x, y = data.x_train.double().numpy(), data.y_train.double().numpy()
    signal = formula(x[:, relevant])  # the formula written out, on the stated features
    noise = y - signal
    np.testing.assert_allclose(signal, data.extras["signal_train"], atol=1e-5)
    assert abs(signal.var() / noise.var() - snr) < 0.05 * snr
    assert abs(noise.mean()) < 0.03 and abs(np.corrcoef(noise, signal)[0, 1]) < 0.03
    assert len(set(relevant)) == 4 and np.all((-1 <= x) & (x <= 1))
    truth = data.true_attributions_train
    assert truth.shape == data.x_train.shape and truth.sum(1).eq(4).all()
    assert truth[:, relevant].eq(1).all()
    # the irrelevant features carry nothing: y is uncorrelated with each of them
    irrelevant = np.setdiff1d(np.arange(30), relevant)
    correlations = [abs(np.corrcoef(x[:, j], y)[0, 1]) for j in irrelevant]
    assert max(correlations) < 0.03


def test_chaos_regression_integrated_gradients_finds_the_relevant_features():
    data = datasets.load_chaos_regression(1000, 200, n_features=50, n_relevant=4,
                                          function="sines", snr=2.0, seed=0)
    model = fit_mlp(data.x_train, data.y_train, regression=True)
    explainer = IntegratedGradients(model, steps=16, progress=False)
    heat = explainer.explain(data.x_test, torch.zeros(len(data.x_test), dtype=torch.long))
    metric = FeatureAgreement(k=4)
    agreement = metric(data.x_test, heat.abs(), masks=data.true_attributions_test)
    generator = torch.Generator().manual_seed(0)
    random = metric(data.x_test, torch.rand(heat.shape, generator=generator),
                    masks=data.true_attributions_test)
    print(f"chaos sines, 4 of 50 relevant, SNR 2: IG feature agreement {agreement.mean:.3f}, "
          f"random {random.mean:.3f} (expected 4/50 = 0.08)")
    assert agreement.mean > random.mean + 0.15 and random.mean < 0.12
    # over the test set, the 4 features with the largest mean |IG| are the relevant ones
    top = set(heat.abs().mean(0).argsort(descending=True)[:4].tolist())
    assert top == set(data.extras["relevant"])


def test_chaos_images_put_the_label_in_one_cell_among_distractors():
    data = datasets.load_chaos_images(120, 40, grid_cells=3, digits=(0, 1, 2), noise=0.0,
                                      signal_cell=5, seed=0)
    assert data.x_train.shape == (120, 1, 24, 24) and data.extras["signal_cell"] == 5
    mask = data.masks_train[0]
    assert mask.sum() == 64 and mask[8:16, 16:24].all()  # row 1, column 2 of a 3x3 grid
    assert (data.masks_train == mask).all()
    # the signal cell is one of the label's digits; scikit-learn's images of that digit
    from sklearn.datasets import load_digits
    bunch = load_digits()
    originals = torch.as_tensor(bunch.images / 16.0, dtype=torch.float32)
    signal = data.x_train[:, 0, 8:16, 16:24]
    distance = ((signal[:, None] - originals[None]) ** 2).flatten(2).sum(2)
    nearest = distance.argmin(1)
    assert torch.allclose(distance.min(1).values, torch.zeros(120), atol=1e-8)
    np.testing.assert_array_equal(bunch.target[nearest.numpy()],
                                  np.array([0, 1, 2])[data.y_train.numpy()])
    # distractors are independent of the label: another cell's digit classes are balanced
    other = data.x_train[:, 0, 0:8, 0:8]
    other_digit = bunch.target[((other[:, None] - originals[None]) ** 2).flatten(2).sum(2)
                               .argmin(1).numpy()]
    assert len(set(other_digit.tolist())) == 10


def test_rfe_style_keeping_the_attributed_features_keeps_accuracy():
    """ChaosMining's RFE question as KAR at the relevant fraction: keeping the 4 features IG
    ranks first keeps accuracy, keeping 4 random ones does not."""
    data = datasets.load_chaos_regression(800, 400, n_features=40, n_relevant=4,
                                          function="linear", snr=4.0, task="classification",
                                          seed=0)

    def train_fn(x, y, seed=0):
        return fit_mlp(x, y, regression=False, seed=seed, steps=200)

    result = Kar(train_fn, IntegratedGradients,
                 explainer_kwargs={"steps": 8, "progress": False}, fractions=(0.1,),
                 repeats=1, progress=False)(data.x_train, data.y_train, data.x_test, data.y_test)
    full = train_fn(data.x_train, data.y_train)
    accuracy = (full(data.x_test).argmax(1) == data.y_test).float().mean().item()
    kept, random = result.details["accuracy_mean"][0], result.details["random_accuracy_mean"][0]
    print(f"RFE-style (KAR at 4/40): all features {accuracy:.3f}, IG top 4 {kept:.3f}, "
          f"random 4 {random:.3f}")
    assert kept > accuracy - 0.05 and kept > random + 0.15


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="function must be one of"):
        datasets.load_chaos_regression(function="cosh")
    with pytest.raises(ValueError, match="n_relevant must be <= n_features = 3"):
        datasets.load_chaos_regression(n_features=3, n_relevant=4)
    with pytest.raises(ValueError, match="snr must be > 0"):
        datasets.load_chaos_regression(snr=0)
    with pytest.raises(ValueError, match=r"signal_cell must be in \[0, 9\)"):
        datasets.load_chaos_images(signal_cell=9)


# -- BAM (Yang & Kim, 2019) -------------------------------------------------------------------

def train_cnn(x, y, seed=0, epochs=12):
    build = lambda: nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        nn.Linear(32, int(y.max()) + 1))
    return fit_from_scratch(build, x, y, epochs=epochs, lr=3e-3, batch_size=32, seed=seed)


def test_bam_images_are_a_scene_with_a_pasted_object():
    data = datasets.load("bam", n_train=50, n_test=20, size=24, object_size=12, noise=0.0,
                         label="scene")
    e = data.extras
    assert data.x_train.shape == (50, 1, 24, 24) and torch.equal(data.y_train, e["y_scene_train"])
    outside = ~data.masks_train[:, None]
    # outside the object's square the image is the scene alone; inside the object is pasted
    assert torch.equal(data.x_train[outside], e["x_train_without_object"][outside])
    assert data.masks_train.flatten(1).sum(1).eq(144).all()
    assert not torch.equal(data.x_train, e["x_train_without_object"])
    # scene and object labels are drawn independently: every pair occurs
    pairs = set(zip(e["y_scene_train"].tolist(), e["y_object_train"].tolist()))
    assert len(pairs) == 9


def test_bam_region_share_and_scores_by_hand():
    from pellucid.datasets.bam import (input_dependence, input_independence, model_contrast,
                                       region_share)
    masks = torch.tensor([[[True, False], [False, False]]] * 2)
    a = torch.tensor([[[3.0, 1.0], [0.0, 0.0]], [[1.0, -1.0], [1.0, 1.0]]])
    b = torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]])
    np.testing.assert_allclose(region_share(a, masks), [0.75, 0.25])
    np.testing.assert_allclose(region_share(b, masks), [0.25, 0.0])
    np.testing.assert_allclose(model_contrast(a, b, masks), [0.5, 0.25])
    np.testing.assert_array_equal(input_dependence(b, a, masks), [1, 1])
    np.testing.assert_array_equal(input_independence(a, b, masks, threshold=0.3), [0, 1])


def test_bam_a_model_independent_method_has_zero_model_contrast_gradients_do_not():
    from skimage.filters import sobel

    from pellucid.benchmark.statistics import bootstrap_ci
    from pellucid.datasets.bam import model_contrast
    from pellucid.explain import Saliency
    data = datasets.load_bam(300, 100, size=24, object_size=12, seed=0)
    e = data.extras
    object_model = train_cnn(data.x_train, e["y_object_train"])
    scene_model = train_cnn(data.x_train, e["y_scene_train"], epochs=4)
    with torch.no_grad():
        accuracy = [(m(data.x_test).argmax(1) == e[f"y_{k}_test"]).float().mean().item()
                    for m, k in ((object_model, "object"), (scene_model, "scene"))]
    print(f"BAM test accuracy: object model {accuracy[0]:.3f}, scene model {accuracy[1]:.3f}")
    assert accuracy[0] > 0.6 and accuracy[1] > 0.95

    def edges(model, inputs):
        return torch.as_tensor(np.stack([sobel(image[0].numpy()) for image in inputs]))

    generator = torch.Generator().manual_seed(0)
    scores = {
        "Saliency": model_contrast(
            Saliency(object_model, progress=False).explain(data.x_test, e["y_object_test"]),
            Saliency(scene_model, progress=False).explain(data.x_test, e["y_scene_test"]),
            data.masks_test),
        "edges": model_contrast(edges(object_model, data.x_test),
                                edges(scene_model, data.x_test), data.masks_test),
        "random": model_contrast(torch.rand(100, 24, 24, generator=generator),
                                 torch.rand(100, 24, 24, generator=generator), data.masks_test),
    }
    intervals = {name: bootstrap_ci(s, n_resamples=1000) for name, s in scores.items()}
    print("BAM model contrast: " + ", ".join(
        f"{n} {s.mean():+.3f} CI [{intervals[n][0]:+.3f}, {intervals[n][1]:+.3f}]"
        for n, s in scores.items()))
    np.testing.assert_array_equal(scores["edges"], 0)  # the same map for both models
    for name in ("edges", "random"):
        assert intervals[name][0] <= 0 <= intervals[name][1]
    assert intervals["Saliency"][0] > 0.03  # the object model looks at the object more
