"""DeepLIFT on a model with LayerNorm, attention, GELU and a gating product: the attributions
still add up to f(x) - f(baseline); LRP runs on it too, and a Grad-CAM reads its channels-last
stage.

    python examples/deeplift_transformer.py

A tiny random-weight hybrid (conv stem, channels-last LayerNorm, multi-head self-attention over
the positions, a squeeze-excitation-style gate) stands in for a ConvNeXt/Swin/ViT classifier.
"""
import torch
from torch import nn

from pellucid.explain import LRP, DeepLift, GradCAM
from pellucid.explain.cam import channels_last_reshape


class Hybrid(nn.Module):
    def __init__(self, dim=16, classes=5):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 4, 4)                      # (N, dim, 8, 8)
        self.norm = nn.LayerNorm(dim)                            # over channels-last tokens
        self.attention = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.gate = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        grid = self.norm(self.stem(x).permute(0, 2, 3, 1))      # (N, 8, 8, dim) channels-last
        tokens = grid.flatten(1, 2)
        tokens = tokens + self.attention(tokens, tokens, tokens, need_weights=False)[0]
        tokens = tokens + self.mlp(tokens)
        pooled = tokens.mean(1)
        return self.head(pooled * torch.sigmoid(self.gate(pooled)))  # a product of activations


def main() -> None:
    torch.manual_seed(0)
    model = Hybrid().eval()
    images = torch.rand(2, 3, 32, 32)
    targets = model(images).argmax(1)

    baseline = 0.5 * torch.ones_like(images)                   # a grey image
    contributions = DeepLift(model, baseline=baseline, progress=False).attribute(images, targets)
    with torch.no_grad():
        delta = (model(images) - model(baseline)).gather(1, targets[:, None])[:, 0]
    for i in range(len(images)):
        print(f"image {i}: sum of contributions {contributions[i].sum().item():+.6f}, "
              f"f(x) - f(grey) {delta[i].item():+.6f}")

    relevance = LRP(model, composite="epsilon", progress=False).attribute(images, targets)
    scores = model(images).gather(1, targets[:, None])[:, 0].tolist()
    print(f"LRP-epsilon relevance sums {relevance.flatten(1).sum(1).tolist()}, f_c(x) {scores} "
          "(biases and the LayerNorm and attention rules do not conserve)")

    automatic = GradCAM(model, progress=False)                 # finds "norm", channels-last
    explicit = GradCAM(model, target_layer="norm", reshape=channels_last_reshape,
                       progress=False)
    maps = automatic(images, targets)
    print(f"Grad-CAM of the channels-last stage: maps {tuple(maps.shape)}, same as explicit: "
          f"{torch.allclose(maps, explicit(images, targets))}")

if __name__ == "__main__":
    main()
