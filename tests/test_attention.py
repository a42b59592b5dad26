"""ViT attention explanations (rollout, Chefer relevance, attention-weighted Grad-CAM): each
against its formula written out here on attention matrices obtained without pellucid (a manual
forward pass of the same weights, and nn.MultiheadAttention called with need_weights=True), on
tiny ViTs of the three styles (nn.MultiheadAttention, attention by hand, scaled_dot_product_
attention); identity and uniform attention; no hook; model, inputs and threads."""
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import small_cnn
from pellucid.explain import AttentionGradCAM, AttentionRelevance, AttentionRollout
from pellucid.explain.attention import AttentionCapture

STYLES = ("mha", "hand", "sdpa")
METHODS = (AttentionRollout, AttentionRelevance, AttentionGradCAM)
DIM, HEADS, PATCH = 16, 2, 4


class HandAttention(nn.Module):
    """timm-style attention with nn.MultiheadAttention's parameter names (so one state dict
    serves every style): by hand (q @ k^T * scale, softmax, dropout, @ v) or with SDPA."""

    def __init__(self, sdpa: bool):
        super().__init__()
        self.sdpa = sdpa
        self.in_proj_weight = nn.Parameter(torch.empty(3 * DIM, DIM))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * DIM))
        self.out_proj = nn.Linear(DIM, DIM)
        self.attn_drop = nn.Dropout(0.0)

    def forward(self, x, mask=None):
        b, n, c = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.reshape(b, n, 3, HEADS, c // HEADS).permute(2, 0, 3, 1, 4)
        if self.sdpa:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            attn = (q @ k.transpose(-2, -1)) * (c // HEADS) ** -0.5
            attn = (attn if mask is None else attn + mask).softmax(dim=-1)
            out = self.attn_drop(attn) @ v
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, style):
        super().__init__()
        self.style = style
        self.norm1, self.norm2 = nn.LayerNorm(DIM), nn.LayerNorm(DIM)
        self.attn = (nn.MultiheadAttention(DIM, HEADS, batch_first=True) if style == "mha"
                     else HandAttention(sdpa=style == "sdpa"))
        self.mlp = nn.Sequential(nn.Linear(DIM, 2 * DIM), nn.GELU(), nn.Linear(2 * DIM, DIM))

    def forward(self, x, mask=None):
        n = self.norm1(x)
        if self.style == "mha":
            x = x + self.attn(n, n, n, attn_mask=mask, need_weights=False)[0]
        else:
            x = x + self.attn(n, mask)
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """16x16 images, 4x4 patches of dim 16, ``depth`` blocks of 2 heads, ``prefix`` tokens (a
    class token, then registers), 5 classes read from the class token. ``mask``: an additive
    (tokens, tokens) attention mask given to every block."""

    def __init__(self, style="mha", depth=2, prefix=1, seed=0, mask=None):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Conv2d(3, DIM, PATCH, stride=PATCH)
        self.prefix = nn.Parameter(torch.randn(1, prefix, DIM) * 0.5)
        self.position = nn.Parameter(torch.randn(1, prefix + 16, DIM) * 0.5)
        self.blocks = nn.ModuleList(Block(style) for _ in range(depth))
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, 5)
        self.mask = mask
        for block in self.blocks:  # MHA initialises its bias to 0 and ours is empty
            nn.init.normal_(block.attn.in_proj_weight, std=0.4)
            nn.init.normal_(block.attn.in_proj_bias, std=0.1)
        self.eval()

    def tokens(self, x):
        patches = self.embed(x).flatten(2).transpose(1, 2)
        return torch.cat([self.prefix.expand(len(x), -1, -1), patches], 1) + self.position

    def forward(self, x):
        t = self.tokens(x)
        for block in self.blocks:
            t = block(t, self.mask)
        return self.head(self.norm(t)[:, 0])


def vit(style="mha", **kwargs):
    """The same weights in every style (seeded, then copied from the MHA model)."""
    reference = TinyViT("mha", **kwargs)
    model = TinyViT(style, **kwargs)
    model.load_state_dict(reference.state_dict())
    return model


def images(n=3, size=(16, 16), seed=1):
    return torch.rand(n, 3, *size, generator=torch.Generator().manual_seed(seed))


# -- the reference: a manual forward pass of the same weights --------------------------------
def manual_forward(model, x):
    """Logits, per-block attention (B, heads, T, T) and values (B, heads, T, d), written out
    from the parameters (no pellucid, no module call inside the blocks)."""
    t = model.tokens(x)
    attentions, values = [], []
    for block in model.blocks:
        n = F.layer_norm(t, (DIM,), block.norm1.weight, block.norm1.bias)
        qkv = F.linear(n, block.attn.in_proj_weight, block.attn.in_proj_bias)
        q, k, v = qkv.reshape(len(x), -1, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
        logits = q @ k.transpose(-2, -1) / np.sqrt(DIM // HEADS)
        a = torch.softmax(logits if model.mask is None else logits + model.mask, dim=-1)
        attentions.append(a)
        values.append(v)
        mixed = (a @ v).transpose(1, 2).reshape(len(x), -1, DIM)
        t = t + F.linear(mixed, block.attn.out_proj.weight, block.attn.out_proj.bias)
        t = t + block.mlp(block.norm2(t))
    return model.head(model.norm(t)[:, 0]), attentions, values


def to_image(token_maps, grid=(4, 4), size=(16, 16)):
    maps = torch.as_tensor(np.asarray(token_maps), dtype=torch.float32).reshape(-1, 1, *grid)
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)[:, 0]


def reference_rollout(attentions, fusion="mean", discard_ratio=0.0, prefix=1):
    """Abnar & Zuidema's rollout as jacobgil/vit-explain writes it, rows normalised by their
    own sums, one sample at a time."""
    maps = []
    for i in range(len(attentions[0])):
        result = np.eye(attentions[0].shape[-1])
        for a in attentions:
            heads = a[i].detach().double().numpy()
            fused = {"mean": heads.mean(0), "max": heads.max(0), "min": heads.min(0)}[fusion]
            flat = fused.reshape(-1).copy()
            drop = np.argsort(flat, kind="stable")[:int(flat.size * discard_ratio)]
            flat[drop[drop != 0]] = 0
            mixed = (flat.reshape(fused.shape) + np.eye(len(fused))) / 2
            mixed = mixed / mixed.sum(-1, keepdims=True)
            result = mixed @ result
        maps.append(result[0, prefix:])
    return np.stack(maps)


def mha_attentions(model, x):
    """Per-block attention from nn.MultiheadAttention itself (need_weights=True)."""
    t, attentions = model.tokens(x), []
    for block in model.blocks:
        n = block.norm1(t)
        _, weights = block.attn(n, n, n, need_weights=True, average_attn_weights=False)
        attentions.append(weights)
        t = block(t)
    return attentions


# -- analytic cases ----------------------------------------------------------------------------
@pytest.mark.parametrize("style", STYLES)
def test_rollout_of_identity_attention_is_a_uniform_zero_map(style):
    """Every token attends only to itself: nothing flows from the patches to the class token,
    so R = I and the map is 0 everywhere."""
    mask = torch.full((17, 17), float("-inf")).fill_diagonal_(0)
    model = vit(style, mask=mask)
    maps = AttentionRollout(model, normalize=False, progress=False).explain(images())
    assert torch.equal(maps, torch.zeros_like(maps))


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("style", STYLES)
def test_rollout_of_uniform_attention_is_uniform(style, depth):
    """Equal logits: A = J/T, (A + I)/2 = I/2 + J/(2T), and its L-th power is
    2^-L I + (1 - 2^-L) J/T, so every patch gets (1 - 2^-L) / 17."""
    model = vit(style, depth=depth, mask=torch.zeros(17, 17))
    with torch.no_grad():
        for block in model.blocks:
            block.attn.in_proj_weight[:2 * DIM] = 0
            block.attn.in_proj_bias[:2 * DIM] = 0
    maps = AttentionRollout(model, normalize=False, progress=False).explain(images())
    torch.testing.assert_close(maps, torch.full_like(maps, (1 - 0.5 ** depth) / 17))


# -- formulas written out ---------------------------------------------------------------------
def test_the_manual_forward_is_the_model():
    model, x = vit("mha"), images()
    with torch.no_grad():
        torch.testing.assert_close(manual_forward(model, x)[0], model(x))
        for mine, theirs in zip(manual_forward(model, x)[1], mha_attentions(model, x)):
            torch.testing.assert_close(mine, theirs)


@pytest.mark.parametrize("fusion, discard_ratio", [("mean", 0.0), ("max", 0.0), ("min", 0.0),
                                                   ("mean", 0.9), ("max", 0.5)])
def test_rollout_is_the_product_formula(fusion, discard_ratio):
    model, x = vit("mha", depth=3), images(4)
    with torch.no_grad():
        expected = to_image(reference_rollout(mha_attentions(model, x), fusion, discard_ratio))
    explainer = AttentionRollout(model, head_fusion=fusion, discard_ratio=discard_ratio,
                                 normalize=False, progress=False)
    torch.testing.assert_close(explainer.explain(x), expected, rtol=1e-5, atol=1e-6)


def reference_relevance(model, x, targets, prefix=1):
    """R = I; R += mean_h ReLU(dy/dA * A) @ R per block (Chefer et al. 2021, eqs. 5-6)."""
    logits, attentions, _ = manual_forward(model, x)
    gradients = torch.autograd.grad(logits[torch.arange(len(x)), targets].sum(), attentions)
    r = torch.eye(attentions[0].shape[-1]).expand(len(x), -1, -1)
    for a, g in zip(attentions, gradients):
        r = r + (g * a).clamp(min=0).mean(1) @ r
    return r[:, 0, prefix:].detach()


def reference_attention_gradcam(model, x, targets, prefix=1):
    """m_p = ReLU(sum_c w_c V_pc) * mean_h A_h[0, p], w_c = mean_p dy/dV_pc, last block."""
    logits, attentions, values = manual_forward(model, x)
    (g,) = torch.autograd.grad(logits[torch.arange(len(x)), targets].sum(), values[-1])
    as_tokens = lambda t: t.transpose(1, 2).flatten(2)[:, prefix:]  # noqa: E731 (B, P, C)
    weights = as_tokens(g).mean(1)
    cam = torch.relu(torch.einsum("bpc,bc->bp", as_tokens(values[-1]), weights))
    return (cam * attentions[-1].mean(1)[:, 0, prefix:]).detach()


@pytest.mark.parametrize("method, reference", [(AttentionRelevance, reference_relevance),
                                               (AttentionGradCAM, reference_attention_gradcam)])
@pytest.mark.parametrize("style", STYLES)
def test_gradient_methods_are_their_formula(method, reference, style):
    model, x, targets = vit(style), images(4), torch.tensor([1, 3, 0, 4])
    expected = to_image(reference(vit("hand"), x, targets))
    maps = method(model, normalize=False, progress=False).explain(x, targets)
    assert maps.abs().max() > 0
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_the_three_attention_styles_give_the_same_maps(method):
    x = images(4)
    maps = [method(vit(style, depth=3), progress=False).explain(x, [0, 1, 2, 3])
            for style in STYLES]
    for other in maps[1:]:
        torch.testing.assert_close(other, maps[0], rtol=1e-4, atol=1e-5)


def test_several_targets_come_from_one_forward_pass():
    model, x = vit("sdpa"), images(2)
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))
    explainer = AttentionRelevance(model, progress=False)
    maps = explainer.explain(x, np.array([[0, 1, 2]] * 2))
    assert calls == [1, 2]  # the targets check, then one pass for the three targets
    for j in range(3):
        torch.testing.assert_close(maps[:, j], explainer.explain(x, j))


# -- model layouts ----------------------------------------------------------------------------
def test_register_tokens_and_a_rectangular_grid():
    """Two prefix tokens (class + a register); 16x32 images give a 4x8 grid, inferred."""
    model, x = vit("hand", prefix=2), images(2, size=(16, 32))
    model.position = nn.Parameter(torch.randn(1, 2 + 32, DIM) * 0.5)
    with torch.no_grad():
        expected = to_image(reference_rollout(manual_forward(model, x)[1], prefix=2),
                            grid=(4, 8), size=(16, 32))
    maps = AttentionRollout(model, nb_prefix_tokens=2, normalize=False,
                            progress=False).explain(x)
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-6)
    given = AttentionRollout(model, nb_prefix_tokens=2, patch_grid=(4, 8), normalize=False,
                             progress=False).explain(x)
    torch.testing.assert_close(given, maps)


def test_clear_errors():
    x = images(2)
    with pytest.raises(ValueError, match="found no attention"):
        AttentionRollout(small_cnn(), progress=False).explain(x)
    with pytest.raises(ValueError, match="patch_grid=\\(4, 5\\) has 20 patches"):
        AttentionRollout(vit(), patch_grid=(4, 5), progress=False).explain(x)
    with pytest.raises(ValueError, match="pass patch_grid"):
        AttentionRollout(vit(), nb_prefix_tokens=2, progress=False).explain(x)
    with pytest.raises(ValueError, match="patch_grid must be"):
        AttentionRollout(vit(), patch_grid=(4, 0))
    with pytest.raises(ValueError, match="discard_ratio"):
        AttentionRollout(vit(), discard_ratio=1.0)
    with pytest.raises(ValueError, match="head_fusion"):
        AttentionRollout(vit(), head_fusion="median")
    with pytest.raises(ValueError, match="nb_prefix_tokens"):
        AttentionRelevance(vit(), nb_prefix_tokens=0)


# -- the capture: no hook, nothing changed, threads ---------------------------------------------
class HookProbe(nn.Module):
    """Wraps a model and records, during its forward pass, every hook registered anywhere."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x):
        from torch.nn.modules import module as module_globals
        hooks = [len(h) for m in self.modules() for h in (
            m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks)]
        hooks += [len(getattr(module_globals, name)) for name in dir(module_globals)
                  if name.startswith("_global_") and name.endswith("hooks")]
        self.seen.append(sum(hooks))
        return self.inner(x)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("style", STYLES)
def test_no_hook_and_nothing_changed(method, style):
    probe = HookProbe(vit(style))
    next(probe.parameters()).requires_grad_(False)
    x = images(3)
    x_before = x.clone()
    state = {k: v.clone() for k, v in probe.state_dict().items()}
    flags = [p.requires_grad for p in probe.parameters()]
    modes = [m.training for m in probe.modules()]
    method(probe, progress=False, batch_size=2).explain(x)
    assert probe.seen and set(probe.seen) == {0}  # no hook during any pass
    assert all(torch.equal(state[k], v) for k, v in probe.state_dict().items())
    assert [p.requires_grad for p in probe.parameters()] == flags
    assert all(p.grad is None for p in probe.parameters())
    assert torch.equal(x, x_before) and [m.training for m in probe.modules()] == modes
    assert not torch._C._is_torch_function_mode_enabled()  # the mode is gone


def test_capture_is_left_on_an_exception_and_sees_only_its_thread():
    model, x = vit("sdpa"), images(2)
    with pytest.raises(RuntimeError, match="on purpose"):
        with AttentionCapture():
            raise RuntimeError("on purpose")
    assert not torch._C._is_torch_function_mode_enabled()
    other_thread = []
    with AttentionCapture() as capture:
        worker = threading.Thread(target=lambda: other_thread.append(model(x)))
        worker.start()
        worker.join()
        assert capture.layers == []  # the other thread's pass is not captured
        model(x)
    assert len(capture.layers) == 2


@pytest.mark.parametrize("method", METHODS)
def test_threads_sharing_a_model_and_an_explainer(method):
    model, x = vit("mha"), images(4)
    explainer = method(model, progress=False, batch_size=2)
    expected = [explainer.explain(x[i:i + 1], i) for i in range(4)]
    results = [None] * 4

    def work(i):
        for _ in range(3):
            results[i] = explainer.explain(x[i:i + 1], i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


# -- the rewritten attention functions against torch's own ---------------------------------------
def outputs_with_and_without_capture(function):
    expected = function()
    with AttentionCapture() as capture:
        got = function()
    return expected, got, capture.layers


@pytest.mark.parametrize("case", ["plain", "bool mask", "float mask", "key padding", "both masks",
                                  "sequence first", "unbatched", "kdim", "causal"])
@pytest.mark.parametrize("need_weights, average", [(False, True), (True, True), (True, False)])
def test_multihead_attention_rewrite_is_torch_s(case, need_weights, average):
    torch.manual_seed(0)
    kdim = 6 if case == "kdim" else None
    mha = nn.MultiheadAttention(8, 2, batch_first=case != "sequence first", kdim=kdim,
                                vdim=kdim).eval()
    q = torch.randn(3, 5, 8)
    kv = torch.randn(3, 7, 6) if case == "kdim" else q
    kwargs = {"need_weights": need_weights, "average_attn_weights": average}
    length = kv.shape[1]
    if case in ("bool mask", "both masks"):
        kwargs["attn_mask"] = torch.rand(5, length) < 0.3
        kwargs["attn_mask"][:, 0] = False
    if case == "float mask":
        kwargs["attn_mask"] = torch.randn(3 * 2, 5, length)
    if case in ("key padding", "both masks"):
        kwargs["key_padding_mask"] = torch.arange(length).expand(3, -1) > 4
    if case == "causal":
        kwargs.update(attn_mask=nn.Transformer.generate_square_subsequent_mask(5), is_causal=True)
    if case == "sequence first":
        q = kv = q.transpose(0, 1)
    if case == "unbatched":
        q = kv = q[0]
    expected, got, layers = outputs_with_and_without_capture(lambda: mha(q, kv, kv, **kwargs))
    torch.testing.assert_close(got[0], expected[0], rtol=1e-5, atol=1e-6)
    if need_weights:
        torch.testing.assert_close(got[1], expected[1], rtol=1e-5, atol=1e-6)
    else:
        assert got[1] is None
    assert len(layers) == 1 and layers[0].as_heads(layers[0].weights).shape[1:] == (2, 5, length)


@pytest.mark.parametrize("case", ["plain", "bool mask", "float mask", "causal", "scale", "gqa",
                                  "no head axis"])
def test_scaled_dot_product_rewrite_is_torch_s(case):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 5, 8, generator=g) for _ in range(3))
    kwargs = {}
    if case == "bool mask":
        kwargs["attn_mask"] = torch.rand(5, 5, generator=g) > 0.3
        kwargs["attn_mask"][:, 0] = True
    if case == "float mask":
        kwargs["attn_mask"] = torch.randn(2, 1, 5, 5, generator=g)
    if case == "causal":
        kwargs["is_causal"] = True
    if case == "scale":
        kwargs["scale"] = 0.7
    if case == "gqa":
        k, v, kwargs["enable_gqa"] = k[:, :2], v[:, :2], True
    if case == "no head axis":
        q, k, v = q[:, 0], k[:, 0], v[:, 0]
    expected, got, layers = outputs_with_and_without_capture(
        lambda: F.scaled_dot_product_attention(q, k, v, **kwargs))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert len(layers) == 1 and layers[0].values is not None


class EncoderViT(nn.Module):
    """A ViT on nn.TransformerEncoder (nn.MultiheadAttention inside, fused fast path in eval)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Conv2d(3, DIM, PATCH, stride=PATCH)
        self.cls = nn.Parameter(torch.randn(1, 1, DIM))
        layer = nn.TransformerEncoderLayer(DIM, HEADS, 32, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(DIM, 5)
        self.eval()

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        return self.head(self.encoder(torch.cat([self.cls.expand(len(x), -1, -1), t], 1))[:, 0])


def test_transformer_encoder_models():
    """Under the capture the encoder leaves its fused fast path for the functional attention;
    the outputs are the same and the rollout is the formula on need_weights=True attention."""
    model, x = EncoderViT(), images(3)
    with torch.no_grad():
        expected = model(x)
        with AttentionCapture() as capture:
            torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
        assert len(capture.layers) == 2
        t, attentions = torch.cat([model.cls.expand(3, -1, -1),
                                   model.embed(x).flatten(2).transpose(1, 2)], 1), []
        for layer in model.encoder.layers:
            attentions.append(layer.self_attn(t, t, t, average_attn_weights=False)[1])
            t = layer(t)
    maps = AttentionRollout(model, normalize=False, progress=False).explain(x)
    torch.testing.assert_close(maps, to_image(reference_rollout(attentions)), rtol=1e-5,
                               atol=1e-6)
    assert AttentionRelevance(model, progress=False).explain(x).abs().max() > 0


@pytest.mark.parametrize("method", METHODS)
def test_a_vit_in_training_mode_keeps_its_batchnorm_statistics(method):
    """Warned once, mode kept, running statistics put back (as for the CNNs in
    tests/test_training_mode.py)."""
    model = vit("sdpa")
    model.embed = nn.Sequential(model.embed, nn.BatchNorm2d(DIM))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(UserWarning, match="training mode"):
        method(model, progress=False).explain(images(), 1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training


@pytest.mark.parametrize("style", STYLES)
def test_rollout_of_attention_to_one_patch_marks_that_patch(style):
    """The class token attends only to patch (1, 2) (token 1 + 6), every other token only to
    itself: the class row of (A + I)/2 is (e_0 + e_7)/2, so after L layers the map is
    1 - 2^-L on that patch and 0 elsewhere. Checks the row-by-row grid layout too."""
    mask = torch.full((17, 17), float("-inf")).fill_diagonal_(0)
    mask[0] = float("-inf")
    mask[0, 7] = 0
    model = vit(style, depth=2, mask=mask)
    maps = AttentionRollout(model, normalize=False, progress=False).explain(images(2))
    expected = torch.zeros(2, 16)
    expected[:, 6] = 1 - 0.5 ** 2
    torch.testing.assert_close(maps, to_image(expected))
    assert torch.equal(maps[:, 5:7, 9:11].amin((1, 2)), maps.amax((1, 2)))  # the peak
    assert maps[:, :, :4].abs().max() < 1e-6
