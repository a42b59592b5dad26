"""DiffROAR (Shah et al., 2021) with real retraining of tiny models: BlockMNIST images and the
suppressor tabular task."""
import numpy as np
import pytest
import torch
from torch import nn

from pellucid.datasets import load_blockmnist, load_suppressor
from pellucid.explain import Occlusion, Saliency
from pellucid.procedures import DiffRoar, Kar
from pellucid.zoo import fit_from_scratch


def train_mlp(x, y, seed=0, steps=150):
    """Full-batch Adam on a one-hidden-layer MLP (the model class of Shah et al.'s theory)."""
    inputs = torch.as_tensor(x)[0].numel()
    return fit_from_scratch(lambda: nn.Sequential(nn.Flatten(), nn.Linear(inputs, 32), nn.ReLU(),
                                                  nn.Linear(32, 2)),
                            x, y, epochs=steps, lr=1e-2, seed=seed)


@pytest.fixture(scope="module")
def blockmnist():
    return load_blockmnist(block_size=8, seed=0)


def diff_roar(data, explainer, fractions=(0.5,), **kwargs):
    return DiffRoar(train_mlp, explainer, explainer_kwargs={"progress": False, **kwargs},
                    fractions=fractions, repeats=1, progress=False)(
        data.x_train, data.y_train, data.x_test, data.y_test)


def test_keeping_occlusions_top_half_beats_its_bottom_half_and_saliency_gaps_less(blockmnist):
    # Occlusion of a whole block: the top half of the pixels is the digit block, the bottom
    # half the constant null block, which carries no label information
    occlusion = diff_roar(blockmnist, Occlusion, patch_size=8)
    saliency = diff_roar(blockmnist, Saliency)
    for name, r in (("occlusion", occlusion), ("saliency", saliency)):
        print(f"DiffROAR(0.5) {name}: top kept {r.details['top_accuracy_mean'][0]:.3f}, bottom "
              f"kept {r.details['bottom_accuracy_mean'][0]:.3f}, gap {r.curves[0, 0]:.3f}")
    assert occlusion.details["top_accuracy_mean"][0] > 0.95
    assert occlusion.details["bottom_accuracy_mean"][0] < 0.65  # about chance
    assert occlusion.curves[0, 0] > 0.3
    assert saliency.curves[0, 0] < occlusion.curves[0, 0] - 0.2
    assert occlusion.higher_is_better and occlusion.scores.shape == (1,)
    np.testing.assert_allclose(occlusion.curves, occlusion.details["top_curves"]
                               - occlusion.details["bottom_curves"])


def test_the_two_curves_are_kar_of_the_ranking_and_of_the_reversed_ranking():
    """Top-k kept is KAR; bottom-k kept is KAR of the negated heatmaps (ties aside: the
    heatmaps here have none)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    heat = rng.random((120, 6)).astype(np.float32)
    heat[:, :2] += 1  # the informative features first

    def explainer(model, inputs, targets):
        return torch.as_tensor(heat[:len(inputs)])

    def negated(model, inputs, targets):
        return -explainer(model, inputs, targets)

    args = (x[:80], y[:80], x[80:], y[80:])
    kw = {"fractions": (0.2, 0.5), "repeats": 1, "progress": False}
    result = DiffRoar(train_mlp, explainer, **kw)(*args)
    top = Kar(train_mlp, explainer, **kw)(*args).curves
    bottom = Kar(train_mlp, negated, **kw)(*args).curves
    np.testing.assert_array_equal(result.details["top_curves"], top)
    np.testing.assert_array_equal(result.details["bottom_curves"], bottom)
    np.testing.assert_allclose(result.curves, top - bottom)
    print(f"DiffROAR tabular (known ranking): {result.details['diff_roar_mean']}")
    assert result.details["diff_roar_mean"][1] > 0.3  # x0, x1 + 1 kept vs 3 irrelevant ones


def test_tabular_suppressor_task_gradient_magnitudes_keep_the_signal_and_suppressor():
    """|gradient| ranks x1 and its suppressor x2 first (the model needs both); the signed
    GradientInput would rank x2 last whenever its contribution is negative."""
    data = load_suppressor(400, 200, noise=0.1, n_irrelevant=6, seed=0)
    result = DiffRoar(train_mlp, Saliency, explainer_kwargs={"progress": False},
                      fractions=(0.25,), repeats=1, progress=False)(
        data.x_train, data.y_train, data.x_test, data.y_test)
    top, bottom = result.details["top_accuracy_mean"][0], result.details["bottom_accuracy_mean"][0]
    print(f"DiffROAR(0.25) suppressor, Saliency: top {top:.3f}, bottom {bottom:.3f}")
    assert top > 0.9 and bottom < 0.65  # x1 and its suppressor x2 kept vs 2 noise features


def test_bad_input_raises_before_training():
    def train_fn(x, y):
        raise AssertionError("trained")
    with pytest.raises(ValueError, match="integer class labels"):
        DiffRoar(train_fn, Saliency, progress=False)(np.zeros((4, 3)), np.zeros(4), np.zeros(
            (2, 3)), np.zeros(2, dtype=int))
    with pytest.raises(TypeError, match="factory"):
        DiffRoar(train_fn, Saliency(nn.Linear(3, 2)))
