"""Speed of the ViT attention explainers, as ratios measured in one run (not run by CI).

On a small ViT (32x32 images, 64 patches of dim 64, 4 blocks of 4 heads, batch 16), for each
attention style (``nn.MultiheadAttention``, by hand, ``F.scaled_dot_product_attention``):

- a forward pass under :class:`AttentionCapture` against a bare forward pass;
- AttentionRollout (given targets: with ``targets=None`` the prelude adds one pass to find the
  predicted classes, although rollout ignores them) against one bare forward pass, next to
  jacobgil/vit-explain's recipe (forward hooks on the attention dropout of the by-hand model,
  then its rollout formula);
- AttentionRelevance and AttentionGradCAM against one bare forward + backward pass, relevance
  next to Chefer et al.'s recipe (hooks that keep the attention and its gradient).

The references check the maps too (they must agree with pellucid's).

    OMP_NUM_THREADS=1 python benchmarks/bench_attention.py
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from _timing import best_seconds
from torch import nn

from pellucid.explain import AttentionGradCAM, AttentionRelevance, AttentionRollout
from pellucid.explain.attention import AttentionCapture

DIM, HEADS, DEPTH, PATCH, SIZE, CLASSES = 64, 4, 4, 4, 32, 10


class Attention(nn.Module):
    def __init__(self, style: str):
        super().__init__()
        self.style = style
        self.qkv, self.proj, self.attn_drop = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM), (
            nn.Dropout(0.0))

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, HEADS, c // HEADS).permute(2, 0, 3, 1, 4)
        if self.style == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = self.attn_drop((q @ k.transpose(-2, -1) * (c // HEADS) ** -0.5).softmax(-1)) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, style: str):
        super().__init__()
        self.style = style
        self.norm1, self.norm2 = nn.LayerNorm(DIM), nn.LayerNorm(DIM)
        self.attn = (nn.MultiheadAttention(DIM, HEADS, batch_first=True) if style == "mha"
                     else Attention(style))
        self.mlp = nn.Sequential(nn.Linear(DIM, 4 * DIM), nn.GELU(), nn.Linear(4 * DIM, DIM))

    def forward(self, x):
        n = self.norm1(x)
        x = x + (self.attn(n, n, n, need_weights=False)[0] if self.style == "mha" else
                 self.attn(n))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, style: str):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Conv2d(3, DIM, PATCH, stride=PATCH)
        self.cls = nn.Parameter(torch.randn(1, 1, DIM) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, 1 + (SIZE // PATCH) ** 2, DIM) * 0.02)
        self.blocks = nn.Sequential(*[Block(style) for _ in range(DEPTH)])
        self.norm, self.head = nn.LayerNorm(DIM), nn.Linear(DIM, CLASSES)
        self.eval()

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(x), -1, -1), t], 1) + self.pos
        return self.head(self.norm(self.blocks(t))[:, 0])


def seconds(function) -> float:
    """Best CPU time of this process over 10 runs (one thread: CPU time is what the work costs,
    little changed by other processes sharing the machine, unlike wall-clock)."""
    return best_seconds(function, repeats=10, clock=time.process_time)


def hooked_attention(model: ViT, x: torch.Tensor, targets=None):
    """The peers' recipe: forward hooks on each block's ``attn_drop`` keep the attention (and, with
    targets, a tensor hook keeps its gradient)."""
    attentions, gradients, handles = [], [], []

    def keep(_module, _inputs, output):
        attentions.append(output)
        if targets is not None:
            output.register_hook(gradients.append)

    for block in model.blocks:
        handles.append(block.attn.attn_drop.register_forward_hook(keep))
    try:
        with torch.set_grad_enabled(targets is not None):
            out = model(x)
            if targets is not None:
                out[torch.arange(len(x)), targets].sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    return attentions, gradients[::-1]


def vit_explain_rollout(model: ViT, x: torch.Tensor) -> torch.Tensor:
    """jacobgil/vit-explain's rollout (mean fusion, rows normalised with keepdim)."""
    attentions, _ = hooked_attention(model, x)
    eye = torch.eye(attentions[0].shape[-1])
    result = eye.expand(len(x), -1, -1)
    for attention in attentions:
        a = (attention.mean(1) + eye) / 2
        result = (a / a.sum(-1, keepdim=True)) @ result
    return result[:, 0, 1:]


def chefer_relevance(model: ViT, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Chefer et al.'s recipe: R = I; R += mean_h ReLU(grad * A) @ R."""
    attentions, gradients = hooked_attention(model, x, targets)
    r = torch.eye(attentions[0].shape[-1]).expand(len(x), -1, -1)
    for a, g in zip(attentions, gradients):
        r = r + (g * a).clamp(min=0).mean(1) @ r
    return r[:, 0, 1:].detach()


def as_image(token_maps: torch.Tensor) -> torch.Tensor:
    grid = SIZE // PATCH
    return F.interpolate(token_maps.reshape(-1, 1, grid, grid), size=(SIZE, SIZE),
                         mode="bilinear", align_corners=False)[:, 0]


def main() -> None:
    torch.set_num_threads(1)
    x = torch.rand(16, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    targets = torch.arange(16) % CLASSES
    print(f"ViT {DEPTH} blocks x {HEADS} heads, dim {DIM}, {(SIZE // PATCH) ** 2} patches, "
          f"batch {len(x)}; ratios to one bare pass of the same batch")
    print(f"{'style':6} {'capture':>8} {'rollout':>8} {'vit-explain':>12} {'relevance':>10} "
          f"{'Chefer hooks':>13} {'attn Grad-CAM':>14}")
    for style in ("mha", "hand", "sdpa"):
        model = ViT(style)
        if style == "sdpa":  # the by-hand model's weights (the MHA model has its own)
            model.load_state_dict(ViT("hand").state_dict())

        def forward():
            with torch.inference_mode():
                model(x)

        def captured_forward():
            with torch.inference_mode(), AttentionCapture():
                model(x)

        def forward_backward():
            leaf = x.clone().requires_grad_(True)
            torch.autograd.grad(model(leaf)[torch.arange(len(x)), targets].sum(), leaf)

        bare, bare_fb = seconds(forward), seconds(forward_backward)
        options = {"progress": False, "normalize": False, "batch_size": len(x)}
        rollout = AttentionRollout(model, **options)
        relevance = AttentionRelevance(model, **options)
        gradcam = AttentionGradCAM(model, **options)
        row = [seconds(captured_forward) / bare, seconds(lambda: rollout(x, targets)) / bare]
        if style == "hand":
            torch.testing.assert_close(rollout(x), as_image(vit_explain_rollout(model, x)),
                                       rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(relevance(x, targets),
                                       as_image(chefer_relevance(model, x, targets)),
                                       rtol=1e-4, atol=1e-6)
            references = [seconds(lambda: vit_explain_rollout(model, x)) / bare,
                          seconds(lambda: chefer_relevance(model, x, targets)) / bare_fb]
        else:
            references = [float("nan")] * 2
        row += [references[0], seconds(lambda: relevance(x, targets)) / bare_fb, references[1],
                seconds(lambda: gradcam(x, targets)) / bare_fb]
        cells = [f"{r:.2f}x" if r == r else "-" for r in row]  # no reference: "-"
        print(f"{style:6} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, (8, 8, 12, 10, 13, 14))))


if __name__ == "__main__":
    main()
