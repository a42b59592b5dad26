"""Tiny reproductions of the blocks of today's image classifiers, with ``torch.nn`` only (no
torchvision/timm): ResNet, ConvNeXt, Swin, MobileNetV3, EfficientNet, DenseNet and two ViTs.

Each is a classifier of 3x16x16 images into 5 classes with a few thousand random weights (fixed
seed, eval mode, batch-norm statistics randomised so that they matter). ``ARCHITECTURES`` maps a
name to a factory ``seed -> model``; ``make_architecture(name)`` builds one. What each model
reproduces is written in its docstring; the suite runs every explainer on all of them
(``test_architectures.py``) and checks DeepLIFT's summation-to-delta on them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WIDTH = 16
CLASSES = 5
INPUT_SHAPE = (3, 16, 16)


def _randomise_batch_norms(model: nn.Module) -> None:
    """Eval-mode batch norms with non-trivial statistics and affine parameters."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)


class StochasticDepth(nn.Module):
    """Drops the whole residual branch of a sample with probability ``p`` in training (rescaling
    the kept ones); the identity in eval mode."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(len(x), *[1] * (x.ndim - 1), device=x.device) >= self.p
        return x * keep / (1 - self.p)


# -- ResNet -----------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """torchvision's BasicBlock: one in-place ReLU module called before and after the residual
    addition, an optional strided 1x1 downsampling shortcut."""

    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                            nn.BatchNorm2d(c_out))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = BasicBlock(8, 8)
        self.layer2 = BasicBlock(8, WIDTH, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(WIDTH, CLASSES)

    def forward(self, x):
        x = self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# -- ConvNeXt ---------------------------------------------------------------------------------
class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of (N, C, H, W), through a permute to channels-last."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv, permute to channels-last, LayerNorm, Linear, GELU, Linear, layer
    scale, permute back, stochastic depth, residual addition."""

    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1, self.act, self.pwconv2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(
            4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))
        self.drop_path = StochasticDepth(0.1)

    def forward(self, x):
        h = self.dwconv(x).permute(0, 2, 3, 1)
        h = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(h))))
        return x + self.drop_path(h.permute(0, 3, 1, 2))


class TinyConvNeXt(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, WIDTH, 2, 2), LayerNorm2d(WIDTH, eps=1e-6))
        self.stages = nn.Sequential(ConvNeXtBlock(WIDTH), ConvNeXtBlock(WIDTH))
        self.norm = nn.LayerNorm(WIDTH, eps=1e-6)
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.head(self.norm(x.mean((2, 3))))


# -- Swin -------------------------------------------------------------------------------------
def window_partition(x, size):
    """(N, H, W, C) -> (N * windows, size * size, C)."""
    n, h, w, c = x.shape
    x = x.view(n, h // size, size, w // size, size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, size * size, c)


def window_reverse(windows, size, h, w):
    """(N * windows, size * size, C) -> (N, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // size, w // size, size, size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a learned relative position bias and an
    optional mask (shifted windows): ``softmax(q k^T / sqrt(d) + B + M) v``."""

    def __init__(self, dim, size, heads):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(
            0.5 * torch.randn((2 * size - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size),
                                            indexing="ij")).flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + size - 1
        self.register_buffer("relative_position_index",
                             relative[..., 0] * (2 * size - 1) + relative[..., 1])

    def forward(self, x, mask=None):
        b, t, c = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(t, t, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            windows = mask.shape[0]
            attn = attn.view(b // windows, windows, self.heads, t, t) + mask[None, :, None]
            attn = attn.view(-1, self.heads, t, t)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, t, c))


class SwinBlock(nn.Module):
    """Channels-last (N, H, W, C): LayerNorm, cyclic shift with ``torch.roll``, window
    partition, window attention (masked when shifted), reverse, roll back, residual; LayerNorm,
    MLP with GELU, residual."""

    def __init__(self, dim, resolution, size, shift, heads=2):
        super().__init__()
        self.size, self.shift = size, shift
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, size, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        mask = None
        if shift:
            regions = torch.zeros(1, resolution, resolution, 1)
            spans = (slice(0, -size), slice(-size, -shift), slice(-shift, None))
            for i, (rows, cols) in enumerate((r, c) for r in spans for c in spans):
                regions[:, rows, cols, :] = i
            ids = window_partition(regions, size)[..., 0]
            mask = (ids[:, None, :] != ids[:, :, None]).float() * -100.0
        self.register_buffer("attn_mask", mask)

    def forward(self, x):
        n, h, w, c = x.shape
        shifted = self.norm1(x)
        if self.shift:
            shifted = torch.roll(shifted, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = self.attn(window_partition(shifted, self.size), self.attn_mask)
        shifted = window_reverse(windows, self.size, h, w)
        if self.shift:
            shifted = torch.roll(shifted, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + shifted
        return x + self.mlp(self.norm2(x))


class TinySwin(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, WIDTH, 2, 2)
        self.patch_norm = nn.LayerNorm(WIDTH)
        self.blocks = nn.Sequential(SwinBlock(WIDTH, 8, 4, 0), SwinBlock(WIDTH, 8, 4, 2))
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, x):
        x = self.patch_norm(self.patch_embed(x).permute(0, 2, 3, 1))
        x = self.norm(self.blocks(x))  # (N, H, W, C), pooled in channels-last as timm does
        return self.head(x.mean((1, 2)))


# -- MobileNetV3 and EfficientNet ---------------------------------------------------------------
class SqueezeExcitation(nn.Module):
    """``x * gate(fc2(act(fc1(avgpool(x)))))``: the product of two input-dependent tensors."""

    def __init__(self, channels, squeezed, activation, gate):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, squeezed, 1), nn.Conv2d(squeezed, channels, 1)
        self.activation, self.gate = activation, gate

    def forward(self, x):
        scale = self.fc2(self.activation(self.fc1(F.adaptive_avg_pool2d(x, 1))))
        return x * self.gate(scale)


def conv_bn_act(c_in, c_out, kernel, stride, activation, groups=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups,
                                   bias=False), nn.BatchNorm2d(c_out), activation)


class InvertedResidual(nn.Module):
    """Expansion 1x1, depthwise 3x3, squeeze-excitation, projection 1x1 (no activation),
    residual with stochastic depth: MobileNetV3's block (hardswish, ReLU/hardsigmoid SE) or
    EfficientNet's MBConv (SiLU, SiLU/sigmoid SE)."""

    def __init__(self, channels, expanded, activation, se_activation, gate, drop=0.0):
        super().__init__()
        self.block = nn.Sequential(
            conv_bn_act(channels, expanded, 1, 1, activation),
            conv_bn_act(expanded, expanded, 3, 1, activation, groups=expanded),
            SqueezeExcitation(expanded, expanded // 4, se_activation, gate),
            nn.Conv2d(expanded, channels, 1, bias=False), nn.BatchNorm2d(channels))
        self.drop_path = StochasticDepth(drop)

    def forward(self, x):
        return x + self.drop_path(self.block(x))


class TinyMobileNetV3(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_act(3, 8, 3, 2, nn.Hardswish()),
            InvertedResidual(8, WIDTH, nn.Hardswish(), nn.ReLU(), nn.Hardsigmoid()))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(8, WIDTH), nn.Hardswish(),
                                        nn.Linear(WIDTH, CLASSES))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class TinyEfficientNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_act(3, 8, 3, 2, nn.SiLU()),
            InvertedResidual(8, WIDTH, nn.SiLU(), nn.SiLU(), nn.Sigmoid(), drop=0.2),
            conv_bn_act(8, WIDTH, 1, 1, nn.SiLU()))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(WIDTH, CLASSES)

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# -- DenseNet ---------------------------------------------------------------------------------
class DenseLayer(nn.Module):
    """BN, functional ReLU, 1x1 conv, BN, ReLU, 3x3 conv; its output is concatenated."""

    def __init__(self, c_in, growth):
        super().__init__()
        self.norm1, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, 2 * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(2 * growth)
        self.conv2 = nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False)

    def forward(self, features):
        x = torch.cat(features, 1)
        return self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x))))))


class TinyDenseNet(nn.Module):
    def __init__(self, growth=4):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
        self.layers = nn.ModuleList([DenseLayer(8, growth), DenseLayer(8 + growth, growth)])
        self.transition = nn.Sequential(nn.BatchNorm2d(8 + 2 * growth), nn.ReLU(),
                                        nn.Conv2d(8 + 2 * growth, WIDTH, 1, bias=False))
        self.norm = nn.BatchNorm2d(WIDTH)
        self.classifier = nn.Linear(WIDTH, CLASSES)

    def forward(self, x):
        features = [self.stem(x)]
        for layer in self.layers:
            features.append(layer(features))
        x = F.relu(self.norm(self.transition(torch.cat(features, 1))), inplace=True)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# -- ViTs -------------------------------------------------------------------------------------
class TimmAttention(nn.Module):
    """timm's ``Attention``: fused qkv, heads split with reshape/permute/unbind,
    ``F.scaled_dot_product_attention``, projection."""

    def __init__(self, dim, heads=2):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, t, c = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, t, c))


class MHAAttention(nn.Module):
    """``nn.MultiheadAttention`` (batch first), called as torchvision's ViT does."""

    def __init__(self, dim, heads=2):
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x):
        return self.attention(x, x, x, need_weights=False)[0]


class ViTBlock(nn.Module):
    def __init__(self, dim, attention):
        super().__init__()
        self.norm1, self.attn, self.norm2 = nn.LayerNorm(dim), attention, nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """4x4 patches (a 4x4 grid of 16 tokens), a class token, learned position embeddings,
    ``depth`` pre-norm blocks, final LayerNorm, head on the class token."""

    def __init__(self, attention, depth=2):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, WIDTH, 4, 4)
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, WIDTH))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, 17, WIDTH))
        self.blocks = nn.Sequential(*[ViTBlock(WIDTH, attention(WIDTH)) for _ in range(depth)])
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, x):
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], 1) + self.pos_embed
        return self.head(self.norm(self.blocks(tokens))[:, 0])


ARCHITECTURES = {
    "resnet": TinyResNet,
    "convnext": TinyConvNeXt,
    "swin": TinySwin,
    "mobilenet_v3": TinyMobileNetV3,
    "efficientnet": TinyEfficientNet,
    "densenet": TinyDenseNet,
    "vit_mha": lambda: TinyViT(MHAAttention),
    "vit_sdpa": lambda: TinyViT(TimmAttention),
}
"""name -> factory of a fresh model (random weights drawn from the global generator)."""

TOKEN_MODELS = {"vit_mha": "blocks.1.norm1", "vit_sdpa": "blocks.1.norm1"}
"""Models without a convolutional stage -> a token layer of their last block for CAMs (used with
``vit_reshape(4, 4)``)."""


def make_architecture(name: str, seed: int = 0) -> nn.Module:
    """The architecture ``name`` with the weights of ``seed``, in eval mode."""
    torch.manual_seed(seed)
    model = ARCHITECTURES[name]()
    _randomise_batch_norms(model)
    return model.eval()


def architecture_inputs(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, *INPUT_SHAPE, generator=torch.Generator().manual_seed(seed))
