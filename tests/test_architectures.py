"""The explainers of the contract suite on the architectures of tests/architectures.py (ResNet,
ConvNeXt, Swin, MobileNetV3, EfficientNet, DenseNet, two ViTs): heatmaps of the inputs' size,
finite, float32, the model unchanged. Every white-box explainer runs on ``REPRESENTATIVE`` (a
CNN with channels-last stages, Swin, a ViT), with the contract suite's FAST settings, the black-box
ones (forward passes only: the architecture does not change their code path) on the ViT; a
subset that covers each family (``EVERYWHERE``: DeepLIFT, a CAM, a perturbation method, LRP,
Guided Backprop) runs on all eight; the attention explainers on both ViTs (nn.MultiheadAttention
and scaled_dot_product_attention are captured differently). CAMs on the ViTs get a token layer
and ``vit_reshape``."""
import pytest
import torch

import pellucid.explain as explain_package
import test_contract
from architectures import ARCHITECTURES, TOKEN_MODELS, architecture_inputs, make_architecture
from pellucid.explain.base import WhiteBoxExplainer
from pellucid.explain.cam.base import BaseCAM
from pellucid.explain.cam.reshape import vit_reshape

VIT_ONLY = getattr(test_contract, "VIT_ONLY", [])
REPRESENTATIVE = ("convnext", "swin", "vit_mha")
EVERYWHERE = ("DeepLift", "GradCAM", "Occlusion", "LRP", "GuidedBackprop")


def is_cam(name):
    return issubclass(getattr(explain_package, name), BaseCAM)


def settings(name, architecture):
    if is_cam(name) and architecture in TOKEN_MODELS:
        return {"target_layer": TOKEN_MODELS[architecture], "reshape": vit_reshape(4, 4)}
    return {}


def architectures_of(name):
    if name in VIT_ONLY:
        return list(TOKEN_MODELS)
    if name == "Eva":  # bounds ReLU CNNs only; the others are refused (tests/test_eva.py)
        return ["resnet"]
    if name in EVERYWHERE:
        return list(ARCHITECTURES)
    if not issubclass(getattr(explain_package, name), WhiteBoxExplainer):
        return ["vit_mha"]
    return list(REPRESENTATIVE)


CASES = [(name, architecture) for name in test_contract.EXPLAINERS
         if "images" in getattr(explain_package, name).input_kinds
         for architecture in architectures_of(name)]


def test_the_cases_cover_every_architecture_and_explainer():
    assert {architecture for _, architecture in CASES} == set(ARCHITECTURES)
    images = {name for name in test_contract.EXPLAINERS
              if "images" in getattr(explain_package, name).input_kinds}
    assert {name for name, _ in CASES} == images and set(EVERYWHERE) <= images


@pytest.mark.parametrize("name, architecture", CASES)
def test_explainer_runs_on_the_architecture(name, architecture):
    model = make_architecture(architecture)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = architecture_inputs(2)
    explainer = test_contract.make(name, model, x, batch_size=16,
                                   **settings(name, architecture))
    heatmaps = explainer.explain(x, 1)
    assert heatmaps.shape == (2, *x.shape[2:]) and heatmaps.dtype == torch.float32
    assert torch.isfinite(heatmaps).all()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not model.training


# -- CAMs on channels-last stages ---------------------------------------------------------------
@pytest.mark.parametrize("architecture, layer, channels_last", [
    ("resnet", "layer2", False), ("convnext", "stages", False), ("swin", "norm", True),
    ("densenet", "norm", False)])
def test_automatic_layer_is_the_last_stage(architecture, layer, channels_last):
    from pellucid.explain.cam.base import choose_target_layer
    from pellucid.explain.cam.reshape import channels_last_reshape
    model = make_architecture(architecture)
    name, reshape = choose_target_layer(model, architecture_inputs(1))
    assert name == layer and reshape is (channels_last_reshape if channels_last else None)


@pytest.mark.parametrize("architecture", list(TOKEN_MODELS))
def test_automatic_layer_of_a_vit_is_the_last_block_input_norm(architecture):
    """Not the patch embedding (the last 4-D output): the last token layer whose patch tokens
    reach the class-token head, read with vit_reshape(4, 4); Grad-CAM then equals the
    explicit choice, and frozen parameters do not change it."""
    from pellucid.explain import GradCAM
    from pellucid.explain.cam.base import choose_target_layer
    model = make_architecture(architecture)
    x = architecture_inputs(2)
    name, reshape = choose_target_layer(model, x)
    assert name == TOKEN_MODELS[architecture]
    assert (reshape.height, reshape.width, reshape.drop_class_token) == (4, 4, True)
    explicit = GradCAM(model, target_layer=TOKEN_MODELS[architecture],
                       reshape=vit_reshape(4, 4), progress=False)(x, 1)
    torch.testing.assert_close(GradCAM(model, progress=False)(x, 1), explicit)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    assert choose_target_layer(model, x)[0] == TOKEN_MODELS[architecture]


def test_token_grids_are_read_from_the_input_shape():
    from pellucid.explain.cam.base import token_reshape
    assert repr(token_reshape(17, (16, 16))) == repr(vit_reshape(4, 4))
    assert repr(token_reshape(9, (16, 32))) == repr(vit_reshape(2, 4))
    assert token_reshape(12, (16, 16)) is None and token_reshape(17, (16, 32)) is None
    assert token_reshape(16, (16, 16)) is None  # no class token: left to the 4-D stages


def test_channels_last_reading_of_ambiguous_shapes():
    from torch import nn

    from pellucid.explain.cam.base import is_channels_last
    grid = (16, 16)
    assert is_channels_last(nn.LayerNorm(8), (1, 8, 8, 8), grid)  # acts on the last dim
    assert not is_channels_last(nn.Conv2d(8, 8, 1), (1, 8, 8, 8), grid)
    assert is_channels_last(nn.Identity(), (1, 8, 8, 16), grid)  # (8, 16) is not a 16x16 grid
    assert not is_channels_last(nn.Identity(), (1, 16, 8, 8), grid)


def reference_grad_cam(model, layer, x, target):
    """Grad-CAM written out on the channels-last output of ``layer``: weights are the spatial
    means of dy/dA, map ReLU(sum_c w_c A[..., c]), bilinear upsampling, min-max scaling."""
    import torch.nn.functional as F
    captured = []
    handle = layer.register_forward_hook(lambda module, args, out: captured.append(out))
    try:
        score = model(x)[:, target].sum()
    finally:
        handle.remove()
    (gradient,) = torch.autograd.grad(score, captured[0])
    weights = gradient.mean((1, 2))  # (N, C)
    maps = torch.relu(torch.einsum("nc,nhwc->nhw", weights, captured[0])).detach()
    maps = F.interpolate(maps[:, None], size=x.shape[2:], mode="bilinear",
                         align_corners=False)[:, 0]
    low = maps.flatten(1).min(1).values[:, None, None]
    high = maps.flatten(1).max(1).values[:, None, None]
    return (maps - low) / (high - low)


def test_grad_cam_on_swin_reads_the_stage_channels_last():
    from pellucid.explain import GradCAM
    from pellucid.explain.cam.reshape import channels_last_reshape
    model = make_architecture("swin")
    x = architecture_inputs(2)
    expected = reference_grad_cam(model, model.norm, x, 1)
    torch.testing.assert_close(GradCAM(model, progress=False)(x, 1), expected,
                               rtol=1e-4, atol=1e-5)
    explicit = GradCAM(model, target_layer="norm", reshape=channels_last_reshape, progress=False)
    torch.testing.assert_close(explicit(x, 1), expected, rtol=1e-4, atol=1e-5)
    assert not model.norm._forward_hooks


def test_channels_last_reshape_checks_its_input():
    from pellucid.explain.cam.reshape import channels_last_reshape
    maps = torch.arange(24.0).view(1, 2, 3, 4)
    assert torch.equal(channels_last_reshape(maps)[0, :, 1, 2], maps[0, 1, 2])
    with pytest.raises(ValueError, match=r"\(N, h, w, C\); got shape \(2, 3\)"):
        channels_last_reshape(torch.zeros(2, 3))
