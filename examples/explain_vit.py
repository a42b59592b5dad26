"""Explain a vision transformer: a tiny ViT trained on the digits, three attention maps.

    python examples/explain_vit.py --out figures/

The ViT (8x8 patches of the 32x32 digits, a class token, two nn.TransformerEncoder blocks) is
trained for a few seconds here. The attention is read while the model runs: no hook, no change
to the model. A timm-style model (attention by hand or F.scaled_dot_product_attention) works the
same way.
"""
import argparse
from pathlib import Path

import torch
from torch import nn

from pellucid import plots, zoo
from pellucid.explain import AttentionGradCAM, AttentionRelevance, AttentionRollout


class TinyViT(nn.Module):
    """Patches + class token + position embedding + nn.TransformerEncoder; the class token's
    final state gives the logits."""

    def __init__(self, dim: int = 48, patch: int = 8, size: int = 32, classes: int = 10):
        super().__init__()
        self.patches = nn.Conv2d(1, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = nn.Parameter(torch.randn(1, 1 + (size // patch) ** 2, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, 4, 2 * dim, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(dim, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(images).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(len(images), -1, -1), tokens], 1) + self.position
        return self.head(self.encoder(tokens)[:, 0])


def train(x: torch.Tensor, y: torch.Tensor, epochs: int = 10) -> TinyViT:
    torch.manual_seed(0)
    model = TinyViT()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        for batch in torch.randperm(len(x)).split(64):
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def main(out: Path) -> None:
    data = zoo.load_dataset("digits_cnn")
    model = train(data.x_train, data.y_train)
    with torch.no_grad():
        accuracy = (model(data.x_test).argmax(1) == data.y_test).float().mean()
    print(f"tiny ViT: test accuracy {accuracy:.3f}")

    images = data.x_test[:4]
    maps = {
        "rollout": AttentionRollout(model, discard_ratio=0.5, progress=False)(images),
        "relevance": AttentionRelevance(model, progress=False)(images),       # predicted class
        "attention Grad-CAM": AttentionGradCAM(model, progress=False)(images),
    }
    titles = [f"digit {int(label)}" for label in data.y_test[:4]]
    path = plots.save_figure(plots.method_grid(images, maps, titles=titles),
                             out / "vit_attention.png")
    print(f"saved {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("pellucid_output"),
                        help="folder for the PNG files (default: ./pellucid_output)")
    main(parser.parse_args().out)
