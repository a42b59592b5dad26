"""Splitting any model at a layer (torch.fx): a small ResNet and a small ViT, defined here.

``g`` then ``h`` must give the model's own output, ``with_activations`` the same activations
as ``g``; the user's modules are shared (not copied), nothing is registered on them, and a
skip connection around the layer is refused with a clear error."""
import copy

import pytest
import torch
from torch import nn

from pellucid.explain.concepts import Craft
from pellucid.explain.concepts.split import LayerSplit


class Block(nn.Module):
    """A residual block: ``relu(x + conv2(relu(conv1(x))))``."""

    def __init__(self, c):
        super().__init__()
        self.conv1, self.relu = nn.Conv2d(c, c, 3, padding=1), nn.ReLU()
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return torch.relu(x + self.conv2(self.relu(self.conv1(x))))


class TinyResNet(nn.Module):
    def __init__(self, c=8, k=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.ReLU())
        self.layer1, self.layer2 = Block(c), Block(c)
        self.fc = nn.Linear(c, k)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(x.mean((2, 3)))


class Attention(nn.Module):
    def __init__(self, d, heads=2):
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attention = (q @ k.transpose(-2, -1) / (d // self.heads) ** 0.5).softmax(-1)
        return self.proj((attention @ v).transpose(1, 2).reshape(b, n, d))


class ViTBlock(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm1, self.attn, self.norm2 = nn.LayerNorm(d), Attention(d), nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """Patch embedding, class token, position embedding, two blocks, head on the class token."""

    def __init__(self, d=16, patch=4, size=8, k=3):
        super().__init__()
        self.patch = nn.Conv2d(3, d, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, d) * 0.02)
        self.blocks = nn.Sequential(ViTBlock(d), ViTBlock(d))
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, k)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


def no_hooks(model):
    return all(not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks)
               for m in model.modules())


@pytest.mark.parametrize("make, layer, shape", [
    (TinyResNet, "layer1", (4, 8, 8, 8)), (TinyResNet, "stem", (4, 8, 8, 8)),
    (TinyViT, "blocks.0", (4, 5, 16)), (TinyViT, "blocks.1", (4, 5, 16)),
    (TinyViT, "patch", (4, 16, 2, 2))])
def test_g_then_h_is_the_model_and_shares_its_modules(make, layer, shape):
    torch.manual_seed(0)
    model = make().eval()
    state = copy.deepcopy(model.state_dict())
    x = torch.randn(4, 3, 8, 8)
    split = LayerSplit(model, model.get_submodule(layer))   # a module or its name
    activations = split.g(x)
    assert activations.shape == shape
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(split.h(activations), expected)
    outputs, again = split.with_activations(x)
    torch.testing.assert_close(outputs, expected)
    torch.testing.assert_close(again, activations)
    # the layer's output by a hook, written out independently
    seen = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.append(o))
    model(x)
    handle.remove()
    torch.testing.assert_close(activations, seen[0])
    assert split.g.get_submodule(layer) is model.get_submodule(layer)  # shared, not copied
    assert no_hooks(model)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key])


def test_gradients_through_with_activations_match_h():
    torch.manual_seed(0)
    model = TinyResNet().eval()
    split = LayerSplit(model, "layer1")
    x = torch.randn(3, 3, 8, 8)
    outputs, activations = split.with_activations(x)
    (grad,) = torch.autograd.grad(outputs[:, 1].sum(), activations)
    leaf = split.g(x).detach().requires_grad_(True)
    (expected,) = torch.autograd.grad(split.h(leaf)[:, 1].sum(), leaf)
    torch.testing.assert_close(grad, expected)
    assert all(p.grad is None for p in model.parameters())


def test_skip_connection_around_the_layer_is_refused_but_activations_work():
    model = TinyResNet().eval()
    split = LayerSplit(model, "layer2.conv1")            # inside a residual block
    x = torch.randn(2, 3, 8, 8)
    assert split.with_activations(x)[1].shape == (2, 8, 8, 8)
    with pytest.raises(ValueError, match="skip connection"):
        split.h


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        if x.sum() > 0:           # control flow on a tensor value: not traceable
            return self.conv(x)
        return self.conv(-x)


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.conv(self.conv(x))


def test_clear_errors():
    with pytest.raises(ValueError, match="torch.fx cannot trace"):
        LayerSplit(Branchy(), "conv")
    with pytest.raises(ValueError, match="exactly once"):
        LayerSplit(Twice(), "conv")
    with pytest.raises(ValueError, match="dotted name"):
        LayerSplit(TinyResNet(), "layer9")
    with pytest.raises(ValueError, match="not a submodule"):
        LayerSplit(TinyResNet(), nn.Conv2d(1, 1, 1))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        LayerSplit(lambda x: x, "conv")


@pytest.mark.parametrize("make, layer", [(TinyResNet, "layer1"), (TinyViT, "patch")])
def test_craft_on_a_resnet_and_a_vit(make, layer):
    """With as many PCA concepts as channels the bottleneck is exact: the replayed rest of
    the model gives the model's own predictions (fidelity 1, no reconstruction error)."""
    torch.manual_seed(0)
    model = make().eval()
    x = torch.rand(6, 3, 8, 8)
    channels = model.get_submodule(layer).out_channels if make is TinyViT else 8
    craft = Craft(model, target_layer=layer, n_concepts=channels, factorization="pca",
                  crops_per_image=4, nb_design=8, progress=False).fit(x, targets=0)
    assert craft.concepts_.shape == (channels, channels)
    metrics = craft.concept_metrics(x)
    assert metrics["reconstruction_error"] < 1e-5 and metrics["fidelity"] == 1.0
    with torch.no_grad():
        coefficients = craft.spatial_coefficients(x)
        torch.testing.assert_close(craft.concept_head()(coefficients), model(x),
                                   atol=1e-5, rtol=1e-4)
    assert craft.estimate_importance(x[:2]).shape == (channels,)
    assert no_hooks(model)
