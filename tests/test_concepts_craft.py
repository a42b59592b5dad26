"""CRAFT on a small CNN trained here on scikit-learn digits (8x8 upsampled to 16x16), and the
API contract: every factorization, splitting, validation, no side effects."""
import copy
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from pellucid.explain import Craft, GradientInput, Rise
from pellucid.explain.concepts import FACTORIZATIONS, NotFittedError, split_sequential

LAYER = 4  # g = conv-relu-pool-conv-relu: non-negative (16, 8, 8) activations
NAMES = ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten", "fc"]


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    return x, torch.tensor(data.target)


@pytest.fixture(scope="module")
def digits_cnn(digits):
    x, y = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(16 * 4 * 4, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            batch = order[start:start + 64]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.9
    return model


@pytest.fixture(scope="module")
def zeros(digits):
    x, y = digits
    return x[y == 0]


def test_craft_on_digits_bottleneck_fidelity_and_map_sizes(digits_cnn, zeros):
    craft = Craft(digits_cnn, target_layer=LAYER, n_concepts=6, crops_per_image=8, nb_design=32,
                  progress=False)
    craft.fit(zeros[:60])
    assert craft.class_id_ == 0
    assert craft.concepts_.shape == (6, 16) and craft.concepts_.min() >= 0
    held_out = zeros[60:120]
    metrics = craft.concept_metrics(held_out)
    print("CRAFT digits class 0, 6 NMF concepts, held-out images:",
          {k: round(v, 4) for k, v in metrics.items()})
    assert metrics["fidelity"] >= 0.9
    assert metrics["reconstruction_error"] < 0.5
    # the same scores written out: encode each spatial vector, decode, run h on both
    with torch.no_grad():
        a = digits_cnn[:LAYER + 1](held_out)                              # (60, 16, 8, 8)
        vectors = a.permute(0, 2, 3, 1).reshape(-1, 16).double().numpy()
        u = craft.factorization_.transform(vectors)
        rebuilt = u @ craft.factorization_.components_ + craft.factorization_.offset_
        a_hat = torch.tensor(rebuilt, dtype=torch.float32).view(60, 8, 8, 16).permute(0, 3, 1, 2)
        agree = (digits_cnn[LAYER + 1:](a).argmax(1) == digits_cnn[LAYER + 1:](a_hat).argmax(1))
    assert metrics["fidelity"] == pytest.approx(agree.double().mean().item())
    assert metrics["reconstruction_error"] == pytest.approx(
        np.linalg.norm(vectors - rebuilt) / np.linalg.norm(vectors), rel=1e-6)
    assert metrics["sparsity"] == pytest.approx(
        np.mean(np.abs(u) <= 1e-3 * np.abs(u).max(1, keepdims=True)))
    importances = craft.estimate_importance(held_out[:10])
    assert importances.shape == (6,) and (importances >= 0).all()
    assert craft.sample_importances_.shape == (10, 6)
    maps = craft.concept_maps(held_out[:5])
    assert maps.shape == (5, 6, 16, 16) and maps.dtype == torch.float32 and maps.min() >= 0
    attributions = craft.concept_attributions(held_out[:5])
    assert attributions.shape == (5, 6, 16, 16)
    # the concept model works with any pellucid Explainer (targets = concept index)
    via_explainer = craft.concept_attributions(
        held_out[:5], lambda model: GradientInput(model, progress=False))
    torch.testing.assert_close(via_explainer, attributions, atol=1e-5, rtol=1e-4)
    with torch.no_grad():  # gradients are enabled for Craft's own passes
        torch.testing.assert_close(craft.concept_attributions(held_out[:5]), attributions)


def test_concept_maps_are_the_upsampled_spatial_coefficients(digits_cnn, zeros):
    craft = Craft(digits_cnn, target_layer=LAYER, n_concepts=4, crops_per_image=4,
                  progress=False).fit(zeros[:30])
    x = zeros[:3]
    with torch.no_grad():
        activations = digits_cnn[:LAYER + 1](x)                       # (3, 16, 8, 8)
    vectors = activations.permute(0, 2, 3, 1).reshape(-1, 16).double().numpy()
    coefficients = craft.factorization_.transform(vectors).reshape(3, 8, 8, 4)
    expected = F.interpolate(torch.tensor(coefficients, dtype=torch.float32).permute(0, 3, 1, 2),
                             size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(craft.concept_maps(x), expected)
    pooled = craft.factorization_.transform(activations.mean((2, 3)).double().numpy())
    torch.testing.assert_close(craft.transform(x), torch.tensor(pooled, dtype=torch.float32))


def test_concept_model_gradient_matches_finite_differences(digits_cnn, zeros):
    """<w, dU/dx v> by implicit differentiation against central differences of the exact
    encoder in float64. A little noise on the images avoids ties in max-pooling over the flat
    background, where the network itself is not differentiable."""
    craft = Craft(digits_cnn, target_layer=LAYER, n_concepts=4, crops_per_image=4,
                  progress=False).fit(zeros[:30])
    generator = torch.Generator().manual_seed(0)
    x = zeros[:2] + 0.05 * torch.rand(zeros[:2].shape, generator=generator)
    direction = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    weights = torch.randn(2, 4, generator=generator)
    g64 = copy.deepcopy(digits_cnn[:LAYER + 1]).double()

    def encode64(z):
        with torch.no_grad():
            return torch.tensor(craft.factorization_.transform(g64(z).mean((2, 3)).numpy()))

    h = 1e-6
    finite = (encode64(x.double() + h * direction) - encode64(x.double() - h * direction)) / (2 * h)
    finite = (finite * weights.double()).sum(1)
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((craft.concept_model()(leaf) * weights).sum(), leaf)
    implicit = (grad.double() * direction).flatten(1).sum(1)
    torch.testing.assert_close(implicit, finite, rtol=1e-3, atol=1e-5)
    # concept_attributions is gradient x input of each coefficient, summed over channels
    combined = (craft.concept_attributions(x) * weights[:, :, None, None]).sum(1)
    torch.testing.assert_close(combined, (grad * x).sum(1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("factorization", tuple(FACTORIZATIONS))
def test_every_factorization_shapes_signs_and_seed(digits_cnn, zeros, factorization):
    options = dict(target_layer=LAYER, n_concepts=4, factorization=factorization, crops_per_image=3,
                   nb_design=8, progress=False)
    first = Craft(digits_cnn, **options).fit(zeros[:20])
    second = Craft(digits_cnn, **options).fit(zeros[:20])
    x = zeros[20:24]
    torch.testing.assert_close(first.concepts_, second.concepts_, rtol=0, atol=0)
    assert first.crops_u_.shape == (60, 4) and first.crop_boxes_.shape == (60, 3)
    u = first.transform(x)
    assert u.shape == (4, 4)
    torch.testing.assert_close(u, second.transform(x), rtol=0, atol=0)
    maps = first.concept_maps(x)
    assert maps.shape == (4, 4, 16, 16)
    importances = first.estimate_importance(x)
    assert importances.shape == (4,) and torch.isfinite(importances).all()
    torch.testing.assert_close(importances, second.estimate_importance(x), rtol=0, atol=0)
    metrics = first.concept_metrics(x)
    assert set(metrics) == {"reconstruction_error", "sparsity", "hoyer_sparsity", "fidelity"}
    if factorization == "nmf":
        assert first.concepts_.min() >= 0 and u.min() >= 0 and maps.min() >= 0
    if factorization == "kmeans":
        torch.testing.assert_close(u.sum(1), torch.ones(4))
        with pytest.raises(RuntimeError, match="piecewise constant"):
            first.concept_attributions(x[:1])
        # a black-box explainer of the concept model works for any factorization
        rise = lambda model: Rise(model, nb_samples=32, grid_size=4, progress=False)  # noqa
        assert first.concept_attributions(x[:1], rise).shape == (1, 4, 16, 16)
    else:
        assert first.concept_attributions(x[:1]).shape == (1, 4, 16, 16)


def test_no_side_effects_on_model_and_inputs(digits_cnn, zeros):
    model = copy.deepcopy(digits_cnn).train()        # no dropout/batch-norm: no warning
    model[0].weight.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = zeros[:12].clone()
    torch_rng, numpy_rng = torch.random.get_rng_state(), np.random.get_state()
    craft = Craft(model, target_layer=LAYER, n_concepts=3, crops_per_image=2, nb_design=8,
                  importance="gradient_input", progress=False).fit(x)
    craft.estimate_importance(x[:3])
    craft.concept_attributions(x[:2])
    craft.concept_metrics(x[:3])
    assert all(m.training for m in model.modules())
    assert not model[0].weight.requires_grad and model[3].weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    torch.testing.assert_close(x, zeros[:12], rtol=0, atol=0)
    assert len(model) == 8
    assert torch.equal(torch.random.get_rng_state(), torch_rng)        # private generators
    assert np.random.get_state()[1].tolist() == numpy_rng[1].tolist()


def test_non_square_images(digits_cnn, zeros):
    """Crops, coefficients and maps keep height and width apart (Xplique's Sobol swapped them)."""
    x = F.interpolate(zeros[:8], size=(16, 24), mode="bilinear", align_corners=False)
    h = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    craft = Craft(digits_cnn[:LAYER + 1], h, n_concepts=3, patch_size=0.5, crops_per_image=2,
                  nb_design=8, progress=False).fit(x, targets=0)
    assert craft.crop_size_ == (8, 12)
    assert (craft.crop_boxes_[:, 1] <= 8).all() and (craft.crop_boxes_[:, 2] <= 12).all()
    assert craft.spatial_coefficients(x[:2]).shape == (2, 3, 8, 12)
    assert craft.concept_maps(x[:2]).shape == (2, 3, 16, 24)
    assert craft.concept_attributions(x[:2]).shape == (2, 3, 16, 24)
    assert craft.estimate_importance(x[:2]).shape == (3,)


def test_split_by_index_name_parts_and_nested_name(digits_cnn, zeros):
    options = dict(n_concepts=3, crops_per_image=2, progress=False)
    by_index = Craft(digits_cnn, target_layer=LAYER, **options).fit(zeros[:10])
    by_name = Craft(digits_cnn, target_layer=str(LAYER), **options).fit(zeros[:10])
    by_parts = Craft(digits_cnn[:LAYER + 1], digits_cnn[LAYER + 1:], **options).fit(zeros[:10])
    nested = nn.Sequential(nn.Sequential(*digits_cnn[:3]),
                           nn.Sequential(*digits_cnn[3:6]), *digits_cnn[6:])
    by_dotted = Craft(nested, target_layer="1.1", **options).fit(zeros[:10])
    by_negative = Craft(digits_cnn, target_layer=LAYER - 8, **options).fit(zeros[:10])
    by_module = Craft(nested, target_layer=nested[1][1], **options).fit(zeros[:10])
    from_numpy = Craft(digits_cnn, target_layer=LAYER, **options).fit(zeros[:10].numpy())
    for other in (by_name, by_parts, by_dotted, by_negative, by_module, from_numpy):
        torch.testing.assert_close(other.concepts_, by_index.concepts_, rtol=0, atol=0)
    assert "target_layer=4" in repr(by_index) and "n_concepts=3" in repr(by_index)
    named = nn.Sequential(OrderedDict(zip(NAMES, digits_cnn)))
    g, h = split_sequential(named, "relu2")
    assert list(g._modules) == NAMES[:5] and list(h._modules) == NAMES[5:]
    assert g.conv1 is digits_cnn[0] and h.fc is digits_cnn[7]       # shared, not copied
    g, h = split_sequential(nested, "1.1")
    assert list(g._modules) == ["0", "1"] and list(g[1]._modules) == ["0", "1"]
    assert list(h[0]._modules) == ["2"]


def test_clear_errors(digits_cnn, zeros):
    with pytest.raises(ValueError, match="children's names"):
        Craft(digits_cnn, target_layer="conv9")
    with pytest.raises(TypeError, match="torch.nn.Module"):
        Craft(lambda x: x, target_layer=0)
    with pytest.raises(ValueError, match="submodule of the model or its dotted name"):
        Craft(nn.Module(), target_layer=0)
    with pytest.raises(ValueError, match="either"):
        Craft(digits_cnn)
    with pytest.raises(ValueError, match="not both"):
        Craft(digits_cnn[:5], digits_cnn[5:], target_layer=2)
    with pytest.raises(ValueError, match="power of 2"):
        Craft(digits_cnn, target_layer=LAYER, nb_design=30)
    with pytest.raises(ValueError, match="importance"):
        Craft(digits_cnn, target_layer=LAYER, importance="shap")
    with pytest.raises(ValueError, match="factorization"):
        Craft(digits_cnn, target_layer=LAYER, factorization="svd")
    with pytest.raises(ValueError, match="patch_size"):
        Craft(digits_cnn, target_layer=LAYER, patch_size=1.5)
    with pytest.raises(ValueError, match="exceeds"):
        Craft(digits_cnn, target_layer=LAYER, patch_size=20).fit(zeros[:4])
    with pytest.raises(ValueError, match="non-negative activations"):
        # a conv output
        Craft(digits_cnn, target_layer=3, n_concepts=3, progress=False).fit(zeros[:4])
    with pytest.raises(ValueError, match="at most as many concepts"):
        Craft(digits_cnn, target_layer=LAYER, n_concepts=17, factorization="pca").fit(zeros[:4])
    with pytest.raises(ValueError, match="fewer than n_concepts"):
        Craft(digits_cnn, target_layer=LAYER, n_concepts=10, crops_per_image=3).fit(zeros[:3])
    with pytest.raises(ValueError, match="one class"):
        Craft(digits_cnn, target_layer=LAYER, progress=False).fit(zeros[:2], targets=[0, 1])
    with pytest.raises(ValueError, match="channels"):
        Craft(digits_cnn, target_layer=LAYER, progress=False).fit(torch.rand(2, 3, 16, 16))
    with pytest.raises(NotFittedError, match=r"Craft is not fitted yet; call fit\(images\)"):
        Craft(digits_cnn, target_layer=LAYER).concept_maps(zeros[:2])
