"""CRAFT at ViT token activations (N, T, D): a planted token model (concept directions put into
chosen patches, no class token, non-square images) and a small ViT with a class token (PCA with
as many concepts as token channels: the concept bottleneck is exact)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from architectures import MHAAttention, TimmAttention, ViTBlock
from pellucid.explain import Craft
from pellucid.explain.cam import vit_reshape

K, D, CELL = 3, 12, 4            # planted concepts, token width, patch side in pixels
GRID = (4, 6)                    # patch grid of the 16 x 24 planted images


class PatchTokens(nn.Module):
    """ViT patch embedding: ``(N, C, H, W) -> (N, h*w, D)``, patches row by row."""

    def __init__(self, channels, dim, patch):
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class ClassToken(nn.Module):
    """Prepends a learned class token and adds position embeddings."""

    def __init__(self, dim, patches):
        super().__init__()
        self.cls = nn.Parameter(0.5 * torch.randn(1, 1, dim))
        self.pos = nn.Parameter(0.5 * torch.randn(1, patches + 1, dim))

    def forward(self, tokens):
        return torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], 1) + self.pos


class ClassTokenHead(nn.Module):
    def __init__(self, dim, classes):
        super().__init__()
        self.norm, self.linear = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, tokens):
        return self.linear(self.norm(tokens[:, 0]))


class MeanTokenHead(nn.Module):
    def __init__(self, linear):
        super().__init__()
        self.linear = linear

    def forward(self, tokens):
        return self.linear(tokens.mean(1))


class FirstTokens(nn.Module):
    def __init__(self, count):
        super().__init__()
        self.count = count

    def forward(self, tokens):
        return tokens[:, :self.count]


@pytest.fixture(scope="module")
def planted():
    """Concept ``k`` (a non-negative direction ``v_k`` in token space, disjoint supports) fills
    the patches where channel ``k`` of the image is on, scaled by the patch's intensity. The
    patch embedding maps a patch of channel ``k`` at intensity ``a`` to the token ``a v_k``; a
    token MLP (identity weights, ReLU) keeps it; class 0 reads concept 0 of the mean token."""
    generator = torch.Generator().manual_seed(0)
    directions = torch.zeros(K, D)
    for k in range(K):
        directions[k, 4 * k:4 * k + 4] = torch.rand(4, generator=generator) + 0.5
    directions /= directions.norm(dim=1, keepdim=True)
    embed = PatchTokens(K, D, CELL)
    with torch.no_grad():
        embed.proj.weight.copy_(directions.T[:, :, None, None].expand(D, K, CELL, CELL)
                                / CELL ** 2)
        embed.proj.bias.zero_()
    mlp = nn.Linear(D, D)
    with torch.no_grad():
        mlp.weight.copy_(torch.eye(D))
        mlp.bias.zero_()
    head = nn.Linear(D, 5)
    with torch.no_grad():
        head.weight[0] = directions[0]
    model = nn.Sequential(embed, mlp, nn.ReLU(), MeanTokenHead(head)).eval()
    n = 24
    concept = torch.randint(0, K + 1, (n, *GRID), generator=generator)   # K = empty patch
    intensity = 0.5 + torch.rand(n, *GRID, generator=generator)
    cells = torch.stack([(concept == k) * intensity for k in range(K)], 1)  # (n, K, 4, 6)
    x = cells.repeat_interleave(CELL, 2).repeat_interleave(CELL, 3)         # (n, K, 16, 24)
    return model, directions, x, cells


def test_planted_token_concepts_are_recovered_and_localized(planted):
    model, directions, x, cells = planted
    craft = Craft(model, target_layer=2, n_concepts=K, factorization="nmf", patch_size=0.5,
                  crops_per_image=8, importance="occlusion", progress=False).fit(x, targets=0)
    found = F.normalize(craft.concepts_, dim=1)
    cosines = directions @ found.T                                 # (planted, found)
    match = cosines.argmax(1)
    assert sorted(match.tolist()) == list(range(K))
    assert (cosines.max(1).values > 0.95).all(), cosines

    # per-token coefficients on the 4 x 6 patch grid follow the planted intensities
    grid = craft.spatial_coefficients(x)
    assert grid.shape == (len(x), K, *GRID)
    for k in range(K):
        planted_k, found_k = cells[:, k].flatten(), grid[:, match[k]].flatten()
        assert torch.corrcoef(torch.stack([planted_k, found_k]))[0, 1] > 0.95
    # the map of concept k peaks in a patch where k was planted (every image that has k)
    maps = craft.concept_maps(x)
    assert maps.shape == (len(x), K, 16, 24)
    for k in range(K):
        for i in torch.nonzero(cells[:, k].flatten(1).amax(1) > 0)[:, 0]:
            peak = maps[i, match[k]].argmax()
            row, column = int(peak) // 24 // CELL, int(peak) % 24 // CELL
            assert cells[i, k, row, column] > 0

    # explicit layout = the detected one (h*w tokens, no class token)
    explicit = Craft(model, target_layer=2, n_concepts=K, patch_size=0.5, crops_per_image=8,
                     reshape=vit_reshape(*GRID, drop_class_token=False), progress=False)
    torch.testing.assert_close(explicit.fit(x, targets=0).concepts_, craft.concepts_,
                               rtol=0, atol=0)

    # h is linear in the tokens: f(u * m) = b + sum_k m_k (w_0 . W_k) mean_tokens u_k, so the
    # occlusion importance of k is (w_0 . W_k) mean_tokens u_k, equal to gradient x input / T
    importance = craft.estimate_importance(x)
    expected = (craft.concepts_ @ directions[0]) * grid.mean(dim=(2, 3))
    torch.testing.assert_close(craft.sample_importances_, expected, atol=1e-5, rtol=1e-4)
    assert int(importance.argmax()) == int(match[0])
    gradient = Craft(model, target_layer=2, n_concepts=K, patch_size=0.5, crops_per_image=8,
                     importance="gradient_input", progress=False).fit(x, targets=0)
    gradient.estimate_importance(x)
    torch.testing.assert_close(gradient.sample_importances_, expected, atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    model = nn.Sequential(PatchTokens(3, 16, 4), ClassToken(16, 16),
                          ViTBlock(16, TimmAttention(16)), ViTBlock(16, MHAAttention(16)),
                          ClassTokenHead(16, 5)).eval()
    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    return model, x


def test_exact_pca_on_class_token_vit_gives_the_model_back(vit):
    """PCA with n_concepts = 16 token channels: U W + mean is every token, so the concept-space
    model on masks of ones is the model; masks remove a concept by projecting it out."""
    model, x = vit
    craft = Craft(model, target_layer=2, n_concepts=16, factorization="pca", crops_per_image=4,
                  importance="occlusion", progress=False).fit(x, targets=0)
    with torch.no_grad():
        tokens, expected = model[:3](x), model(x)                  # (8, 1 + 4*4, 16)
    w = craft.concepts_
    mean = torch.as_tensor(craft.factorization_.offset_, dtype=torch.float32)
    # the crop activation is the mean patch token (the class token is no position)
    torch.testing.assert_close(craft.transform(x), (tokens[:, 1:].mean(1) - mean) @ w.T,
                               atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(craft.concept_model()(x), craft.transform(x),
                                   atol=1e-4, rtol=1e-4)
    # patch token p = row * 4 + column sits at (row, column) of the grid
    grid = ((tokens[:, 1:] - mean) @ w.T).view(8, 4, 4, 16).permute(0, 3, 1, 2)
    torch.testing.assert_close(craft.spatial_coefficients(x), grid, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(craft.concept_maps(x), F.interpolate(
        grid, size=(16, 16), mode="bilinear", align_corners=False), atol=1e-4, rtol=1e-4)

    masks_model, masks, kwargs = craft.concept_space(x)
    assert kwargs["coefficients"].shape == (8, 16, 17)              # every token, class too
    with torch.no_grad():
        torch.testing.assert_close(masks_model(masks, **kwargs), expected, atol=1e-4, rtol=1e-4)
        every_token_mean = mean.expand(8, 17, 16)
        torch.testing.assert_close(masks_model(torch.zeros_like(masks), **kwargs),
                                   model[3:](every_token_mean), atol=1e-4, rtol=1e-4)
        # occlusion of concept k = f(x) - h(tokens with their W_k component removed)
        removed = torch.stack([model[3:](tokens - ((tokens - mean) @ w[k])[..., None] * w[k])
                               [:, 0] for k in range(16)], 1)
    metrics = craft.concept_metrics(x)
    assert metrics["reconstruction_error"] < 1e-5 and metrics["fidelity"] == 1.0
    craft.estimate_importance(x)
    torch.testing.assert_close(craft.sample_importances_, expected[:, :1] - removed,
                               atol=1e-4, rtol=1e-4)
    assert craft.concept_attributions(x[:2]).shape == (2, 16, 16, 16)
    explicit = Craft(model, target_layer=2, n_concepts=16, factorization="pca",
                     crops_per_image=4, reshape=vit_reshape(4, 4), progress=False)
    torch.testing.assert_close(explicit.fit(x, targets=0).concepts_, w, rtol=0, atol=0)


def test_vit_model_and_inputs_are_not_changed(vit):
    model, x = vit
    model = copy.deepcopy(model).train()                          # no dropout: no warning
    model[0].proj.weight.requires_grad_(False)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    inputs = x.clone()
    craft = Craft(model, target_layer=2, n_concepts=4, factorization="pca", crops_per_image=2,
                  nb_design=8, progress=False).fit(inputs, targets=0)
    craft.estimate_importance(inputs[:2])
    craft.concept_maps(inputs[:2])
    craft.concept_attributions(inputs[:2])
    craft.concept_metrics(inputs[:2])
    assert all(module.training for module in model.modules())
    assert not model[0].proj.weight.requires_grad and model[2].mlp[0].weight.requires_grad
    assert all(parameter.grad is None for parameter in model.parameters())
    assert all(not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks)
               for m in model.modules())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    torch.testing.assert_close(inputs, x, rtol=0, atol=0)
    assert len(model) == 5


def test_token_errors(vit):
    model, x = vit
    with pytest.raises(ValueError, match="token activations.*signed.*non-negative"):
        Craft(model, target_layer=2, n_concepts=3, progress=False).fit(x, targets=0)
    seven = nn.Sequential(PatchTokens(3, 16, 4), FirstTokens(7))
    with pytest.raises(ValueError, match=r"7 tokens.*reshape=vit_reshape"):
        Craft(seven, MeanTokenHead(nn.Linear(16, 5)), n_concepts=3, factorization="pca",
              progress=False).fit(x, targets=0)
    with pytest.raises(ValueError, match="expects 10 tokens; g outputs 17"):
        Craft(model, target_layer=2, n_concepts=3, factorization="pca",
              reshape=vit_reshape(3, 3), progress=False).fit(x, targets=0)
    with pytest.raises(TypeError, match="vit_reshape"):
        Craft(model, target_layer=2, reshape=lambda tokens: tokens)
