"""CAM family: each variant against its published formula written out here with plain autograd
(the activations A and gradients dy_c/dA come from running the two halves of a Sequential
model, no pellucid code), plus batching, layer choice, token models, hooks and model safety."""
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from scipy.spatial.distance import pdist
from sklearn.cluster import DBSCAN
from torch import nn

from conftest import small_cnn
from pellucid.explain import (CFCAM, AblationCAM, EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM,
                              LayerCAM, ScoreCAM, XGradCAM)
from pellucid.explain.cam import find_target_layer, vit_reshape

ALL_CAMS = [GradCAM, GradCAMPlusPlus, XGradCAM, LayerCAM, HiResCAM, ScoreCAM, AblationCAM,
            EigenCAM, CFCAM]
TARGETS = torch.tensor([1, 3, 0, 4])


# -- independent references -------------------------------------------------------------------
def split_forward(model, split, x, targets):
    """A = model[:split](x), out = model[split:](A), G = d out[i, t_i] / dA (numpy, float64)."""
    a = model[:split](x).detach().requires_grad_(True)
    out = model[split:](a)
    (g,) = torch.autograd.grad(out[torch.arange(len(x)), targets].sum(), a)
    return a.detach().double().numpy(), g.double().numpy()


def divide(num, den):
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


def channel_map(weights, a):
    """ReLU(sum_k w_k A_k) at layer resolution."""
    return np.maximum(np.einsum("nk,nkhw->nhw", weights, a), 0)


def to_input_size(maps, size=(16, 16)):
    t = torch.as_tensor(maps, dtype=torch.float32)[:, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[:, 0]


def reference_gradcam(a, g):
    return channel_map(g.mean(axis=(2, 3)), a)


def reference_gradcam_plus_plus(a, g):
    sums = a.sum(axis=(2, 3))[:, :, None, None]
    alpha = divide(g**2, 2 * g**2 + sums * g**3)
    return channel_map((alpha * np.maximum(g, 0)).sum(axis=(2, 3)), a)


def reference_xgradcam(a, g):
    return channel_map(divide((a * g).sum(axis=(2, 3)), a.sum(axis=(2, 3))), a)


def reference_layercam(a, g):
    return np.maximum((np.maximum(g, 0) * a).sum(axis=1), 0)


def reference_hirescam(a, g):
    return np.maximum((g * a).sum(axis=1), 0)


def reference_eigencam(a, g):
    maps = []
    for sample in a:
        c, h, w = sample.shape
        points = sample.reshape(c, -1).T
        centred = points - points.mean(axis=0)
        v = np.linalg.svd(centred, full_matrices=False)[2][0]
        projection = centred @ v
        if np.corrcoef(projection, points.sum(axis=1))[0, 1] < 0:
            projection = -projection
        maps.append(np.maximum(projection, 0).reshape(h, w))
    return np.stack(maps)


def reference_cfcam(a, g, sigma=1.0):
    weights = np.zeros(a.shape[:2])
    for n in range(len(a)):
        features = a[n].reshape(len(a[n]), -1)
        norms = np.sqrt((features**2).sum(axis=1))
        top = norms >= np.percentile(norms, 75)
        raw = {k: g[n, k].mean() for k in np.flatnonzero(top)}
        rest = np.flatnonzero(~top)
        eps = max(np.percentile(pdist(features[rest]), 25), 1e-5)
        labels = DBSCAN(eps=eps, min_samples=max(2, int(0.05 * len(rest)))).fit_predict(
            features[rest])
        for label in set(labels) - {-1}:
            members = rest[labels == label]
            smooth = gaussian_filter(g[n, members].mean(axis=0), sigma=sigma)
            raw.update({k: smooth.mean() for k in members})
        kept = np.array(sorted(raw))
        values = np.array([raw[k] for k in kept])
        weights[n, kept] = np.exp(values) / np.exp(values).sum()
    return channel_map(weights, a)


def reference_scorecam(model, split, x, targets):
    a = model[:split](x).detach()
    weights = torch.zeros(a.shape[:2])
    with torch.no_grad():
        for n in range(len(x)):
            for k in range(a.shape[1]):
                mask = to_input_size(a[n, k][None].numpy())[0]
                if mask.max() > mask.min():
                    mask = (mask - mask.min()) / (mask.max() - mask.min())
                    probabilities = torch.softmax(model(x[n:n + 1] * mask), dim=1)
                    weights[n, k] = probabilities[0, targets[n]]
    return channel_map(weights.double().numpy(), a.double().numpy())


def reference_ablationcam(model, split, x, targets):
    """Zero channel k of A and run the model's tail: (y_c - y_c^k) / y_c."""
    with torch.no_grad():
        a = model[:split](x)
        y = model[split:](a)[torch.arange(len(x)), targets]
        weights = torch.zeros(a.shape[:2])
        for k in range(a.shape[1]):
            ablated = a.clone()
            ablated[:, k] = 0
            weights[:, k] = (y - model[split:](ablated)[torch.arange(len(x)), targets]) / y
    return channel_map(weights.double().numpy(), a.double().numpy())


GRADIENT_REFERENCES = {GradCAM: reference_gradcam, GradCAMPlusPlus: reference_gradcam_plus_plus,
                       XGradCAM: reference_xgradcam, LayerCAM: reference_layercam,
                       HiResCAM: reference_hirescam, EigenCAM: reference_eigencam,
                       CFCAM: reference_cfcam}


def assert_maps_equal(actual, expected_layer_maps, tolerance=1e-5):
    expected = to_input_size(expected_layer_maps)
    assert expected.abs().max() > 0, "a reference map that is all zero proves nothing"
    scale = float(expected.abs().max())
    error = float((actual - expected).abs().max()) / scale
    assert error < tolerance, f"max relative error {error:.2e}"
    return error


# -- formulas -----------------------------------------------------------------------------------
@pytest.mark.parametrize("split", [3, 4], ids=["conv_output", "relu_output"])
@pytest.mark.parametrize("cam", list(GRADIENT_REFERENCES), ids=lambda c: c.__name__)
def test_gradient_cams_equal_published_formulas(cam, split, images):
    model = small_cnn()
    a, g = split_forward(model, split, images, TARGETS)
    maps = cam(model, target_layer=model[split - 1], normalize=False)(images, TARGETS)
    assert maps.shape == (4, 16, 16) and maps.dtype == torch.float32
    assert_maps_equal(maps, GRADIENT_REFERENCES[cam](a, g))


def test_gradcam_equals_captum_layer_gradcam(images):
    from captum.attr import LayerAttribution, LayerGradCam
    model = small_cnn()
    expected = LayerGradCam(model, model[3]).attribute(images, target=TARGETS,
                                                       relu_attributions=True)
    expected = LayerAttribution.interpolate(expected, (16, 16), interpolate_mode="bilinear")
    maps = GradCAM(model, normalize=False)(images, TARGETS)
    torch.testing.assert_close(maps, expected[:, 0].detach(), rtol=1e-5, atol=1e-7)


def test_cfcam_reference_exercises_clusters_noise_and_kept_channels(images):
    """The CF-CAM formula test above is only meaningful if its steps all happen on the data."""
    model = small_cnn()
    a, _ = split_forward(model, 4, images, TARGETS)
    seen = set()
    for sample in a:
        features = sample.reshape(len(sample), -1)
        norms = np.linalg.norm(features, axis=1)
        rest = features[norms < np.percentile(norms, 75)]
        labels = DBSCAN(eps=max(np.percentile(pdist(rest), 25), 1e-5),
                        min_samples=2).fit_predict(rest)
        seen.update({"noise" if label == -1 else "cluster" for label in labels})
    assert seen == {"noise", "cluster"}


@pytest.mark.parametrize("split", [3, 4], ids=["conv_output", "relu_output"])
def test_scorecam_equals_wang_et_al(split, images):
    model = small_cnn()
    maps = ScoreCAM(model, target_layer=model[split - 1], normalize=False, batch_size=5)(
        images, TARGETS)
    assert_maps_equal(maps, reference_scorecam(model, split, images, TARGETS))


@pytest.mark.parametrize("split", [3, 4], ids=["conv_output", "relu_output"])
def test_ablationcam_equals_desai_ramaswamy(split, images):
    model = small_cnn()
    maps = AblationCAM(model, target_layer=model[split - 1], normalize=False, batch_size=5)(
        images, TARGETS)
    assert_maps_equal(maps, reference_ablationcam(model, split, images, TARGETS))


def test_normalize_scales_each_map_to_unit_interval(cnn, images):
    raw = GradCAM(cnn, normalize=False)(images, TARGETS)
    scaled = GradCAM(cnn)(images, TARGETS)
    flat = raw.reshape(4, -1)
    low, high = flat.min(1).values, flat.max(1).values
    varies = high > low
    assert varies.sum() >= 2 and not varies.all()  # this data has an all-zero map too
    expected = (raw[varies] - low[varies, None, None]) / (high - low)[varies, None, None]
    torch.testing.assert_close(scaled[varies], expected)
    assert torch.equal(scaled[~varies], torch.zeros_like(scaled[~varies]))


# -- batching -----------------------------------------------------------------------------------
@pytest.mark.parametrize("cam", [ScoreCAM, AblationCAM], ids=lambda c: c.__name__)
def test_perturbation_cams_do_not_depend_on_batch_size(cam, cnn, images):
    one = cam(cnn, batch_size=1, normalize=False)(images, TARGETS)
    many = cam(cnn, batch_size=64, normalize=False)(images, TARGETS)
    torch.testing.assert_close(one, many, rtol=1e-6, atol=1e-6 * float(many.abs().max()))


@pytest.mark.parametrize("cam", [ScoreCAM, AblationCAM], ids=lambda c: c.__name__)
def test_perturbation_passes_are_chunks_of_batch_size(cam, cnn, images):
    sizes = []
    handle = cnn[0].register_forward_pre_hook(lambda _m, inputs: sizes.append(len(inputs[0])))
    try:
        cam(cnn, batch_size=5, target_layer="3")(images[:2], 1)
    finally:
        handle.remove()
    # target check on 1 image, capture pass of 2, then <= 2 x 8 channel passes in chunks of 5
    assert sizes[:2] == [1, 2] and len(sizes) > 3
    assert max(sizes[2:]) == 5 and sum(sizes[2:]) <= 16


# -- targets ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cam", ALL_CAMS, ids=lambda c: c.__name__)
def test_one_int_target_explains_every_image(cam, cnn, images):
    explainer = cam(cnn, batch_size=3)
    together = explainer(images, 2)
    separately = torch.cat([explainer(images[i:i + 1], 2) for i in range(4)])
    torch.testing.assert_close(together, separately, rtol=1e-5, atol=1e-5)
    assert (together.reshape(4, -1).amax(1) > 0).all()


def test_one_target_per_sample(cnn, images):
    explainer = GradCAM(cnn)
    together = explainer(images, TARGETS)
    separately = torch.cat([explainer(images[i:i + 1], int(TARGETS[i])) for i in range(4)])
    torch.testing.assert_close(together, separately)
    assert not torch.allclose(together, explainer(images, 0))


# -- target layer -------------------------------------------------------------------------------
def test_auto_layer_is_last_convolutional_stage(cnn, images):
    assert find_target_layer(cnn, images) == "3"  # ReLU of the last Conv2d, before pooling
    torch.testing.assert_close(GradCAM(cnn)(images, TARGETS),
                               GradCAM(cnn, target_layer=cnn[3])(images, TARGETS))
    bare = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    assert find_target_layer(bare, images) == "2"


def test_auto_layer_of_a_residual_model_is_the_block(images):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return F.relu(x + self.conv(x))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.block = nn.Conv2d(3, 4, 3, padding=1), Block()
            self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(self.pool(self.block(self.stem(x))).flatten(1))

    assert find_target_layer(Net().eval(), images) == "block"


def test_layer_by_dotted_name_equals_layer_by_module(cnn, images):
    torch.testing.assert_close(GradCAM(cnn, target_layer="1")(images, 1),
                               GradCAM(cnn, target_layer=cnn[1])(images, 1))


def test_unknown_layer_name_lists_close_names():
    model = nn.Sequential(OrderedDict(conv1=nn.Conv2d(3, 4, 3), relu1=nn.ReLU(),
                                      conv2=nn.Conv2d(4, 4, 3), pool=nn.AdaptiveAvgPool2d(1),
                                      flat=nn.Flatten(), fc=nn.Linear(4, 2)))
    with pytest.raises(ValueError, match=r"'conv3'.*close names.*conv2"):
        GradCAM(model, target_layer="conv3")
    with pytest.raises(ValueError, match="not a submodule"):
        GradCAM(model, target_layer=nn.Conv2d(3, 4, 3))
    with pytest.raises(TypeError, match="target_layer"):
        GradCAM(model, target_layer=3)


def test_model_without_4d_activations_needs_reshape(images):
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 5)).eval()
    with pytest.raises(ValueError, match=r"no layer with a 4-D output.*reshape"):
        GradCAM(flat)(images, 0)
    with pytest.raises(ValueError, match=r"\(N, C, h, w\).*reshape=vit_reshape"):
        GradCAM(flat, target_layer="1")(images, 0)


def test_clear_errors_for_bad_arguments(cnn, images):
    with pytest.raises(TypeError, match="torch.nn.Module"):
        GradCAM(lambda a: a.sum(1))
    with pytest.raises(ValueError, match=r"images"):
        GradCAM(small_cnn())(torch.rand(4, 3), 0)
    with pytest.raises(ValueError, match="explicit target_layer"):
        GradCAM(cnn, reshape=vit_reshape(4, 4))
    with pytest.raises(TypeError, match="reshape"):
        GradCAM(cnn, target_layer="3", reshape="vit")
    with pytest.raises(ValueError, match="sigma"):
        CFCAM(cnn, sigma=-1.0)


# -- token models -------------------------------------------------------------------------------
class TinyViT(nn.Module):
    """Patch embedding conv -> class token + 4x4 patch tokens -> LayerNorm -> attention + MLP
    (residual) -> head on the class token."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv2d(3, 8, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.pos = nn.Parameter(0.1 * torch.randn(1, 17, 8))
        self.norm = nn.LayerNorm(8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
        self.head = nn.Linear(8, 5)

    def embed(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        return torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1) + self.pos

    def tail(self, tokens, normed):
        mixed = tokens + self.attn(normed, normed, normed, need_weights=False)[0]
        return self.head((mixed + self.mlp(mixed))[:, 0])

    def forward(self, x):
        tokens = self.embed(x)
        return self.tail(tokens, self.norm(tokens))


def as_maps(tokens):
    """(N, 17, C) -> (N, C, 4, 4), written independently of vit_reshape."""
    n, _, c = tokens.shape
    return tokens[:, 1:].permute(0, 2, 1).reshape(n, c, 4, 4)


def test_tiny_vit_with_reshape_equals_gradcam_formula(images):
    model = TinyViT().eval()
    tokens = model.embed(images).detach()
    normed = model.norm(tokens).detach().requires_grad_(True)
    out = model.tail(tokens, normed)
    (g,) = torch.autograd.grad(out[torch.arange(4), TARGETS].sum(), normed)
    a, g = as_maps(normed.detach()).double().numpy(), as_maps(g).double().numpy()
    maps = GradCAM(model, target_layer="norm", reshape=vit_reshape(4, 4), normalize=False)(
        images, TARGETS)
    assert maps.shape == (4, 16, 16)
    assert_maps_equal(maps, reference_gradcam(a, g))


def test_tiny_vit_ablation_zeroes_the_feature_of_every_patch_token(images):
    model = TinyViT().eval()
    with torch.no_grad():
        tokens = model.embed(images)
        normed = model.norm(tokens)
        y = model.tail(tokens, normed)[torch.arange(4), TARGETS]
        weights = torch.zeros(4, 8)
        for k in range(8):
            ablated = normed.clone()
            ablated[:, 1:, k] = 0  # feature k of the patch tokens; the class token is kept
            weights[:, k] = (y - model.tail(tokens, ablated)[torch.arange(4), TARGETS]) / y
    expected = channel_map(weights.double().numpy(), as_maps(normed).double().numpy())
    maps = AblationCAM(model, target_layer="norm", reshape=vit_reshape(4, 4), normalize=False,
                       batch_size=7)(images, TARGETS)
    assert_maps_equal(maps, expected)
    scores = ScoreCAM(model, target_layer="norm", reshape=vit_reshape(4, 4))(images, TARGETS)
    assert scores.shape == (4, 16, 16) and torch.isfinite(scores).all()


def test_vit_reshape_says_what_it_expected():
    with pytest.raises(ValueError, match=r"\(N, 10, C\).*\(2, 17, 8\)"):
        vit_reshape(3, 3)(torch.zeros(2, 17, 8))
    assert vit_reshape(2, 2, drop_class_token=False)(torch.zeros(1, 4, 3)).shape == (1, 3, 2, 2)


# -- hooks and the user's model -------------------------------------------------------------------
def hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(m._backward_pre_hooks) for m in model.modules())


class Explode(nn.Module):
    """Raises IndexError in forward when ``when()`` is true (pytorch-grad-cam's context manager
    swallows IndexError)."""

    def __init__(self, when):
        super().__init__()
        self.when = when

    def forward(self, x):
        if self.when():
            raise IndexError("boom")
        return x


@pytest.mark.parametrize("cam", ALL_CAMS, ids=lambda c: c.__name__)
def test_no_hook_remains_after_explain_or_after_an_exception(cam, images):
    model = small_cnn()
    model.insert(4, Explode(lambda: False))
    cam(model)(images, 1)
    assert hook_count(model) == 0
    # raises during the capture pass (gradient variants) or the perturbation passes
    model[4].when = (torch.is_inference_mode_enabled if cam in (ScoreCAM, AblationCAM)
                     else lambda: True)
    with pytest.raises(IndexError, match="boom"):
        cam(model, target_layer="3")(images, 1)
    assert hook_count(model) == 0
    model[4].when = lambda: True
    with pytest.raises(IndexError, match="boom"):  # during the probe of target_layer=None
        cam(model)(images, 1)
    assert hook_count(model) == 0


@pytest.mark.parametrize("cam", ALL_CAMS, ids=lambda c: c.__name__)
def test_user_model_is_unchanged(cam, images):
    model = small_cnn().train()
    model[0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [(m.training, [p.requires_grad for p in m.parameters(recurse=False)])
             for m in model.modules()]
    cam(model)(images, TARGETS)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert flags == [(m.training, [p.requires_grad for p in m.parameters(recurse=False)])
                     for m in model.modules()]
    assert all(p.grad is None for p in model.parameters())


def test_works_under_no_grad_and_with_frozen_parameters(cnn, images):
    expected = GradCAM(cnn)(images, TARGETS)
    with torch.no_grad():
        torch.testing.assert_close(GradCAM(cnn)(images, TARGETS), expected)
    for p in cnn.parameters():
        p.requires_grad_(False)
    torch.testing.assert_close(GradCAM(cnn)(images, TARGETS), expected)


def test_inplace_relu_after_the_layer_does_not_change_its_activation(images):
    reference = small_cnn()
    inplace = small_cnn()
    inplace[3] = nn.ReLU(inplace=True)
    a, g = split_forward(reference, 3, images, TARGETS)  # A = conv output, before the ReLU
    maps = GradCAM(inplace, target_layer="2", normalize=False)(images, TARGETS)
    assert_maps_equal(maps, reference_gradcam(a, g))


def test_inputs_are_not_modified(cnn, images):
    copy = images.clone()
    for cam in (GradCAM, ScoreCAM, AblationCAM):
        cam(cnn)(images, 1)
    assert torch.equal(images, copy)


def test_repr_and_exports(cnn):
    from pellucid.explain.cam.gradient_cams import GradCAM as FromModule
    assert FromModule is GradCAM
    text = repr(GradCAM(cnn, target_layer="3", reshape=None, batch_size=8))
    assert text.startswith("GradCAM(target_layer='3', reshape=None, normalize=True, batch_size=8")
