"""Speed of TCAV against the bare passes it needs, as a ratio measured in one run (not run by CI).

TCAV on 100 inputs, one concept (50 examples), a random pool of 100, 20 random runs (20
concept CAVs + 20 random CAVs), at ``layer3`` of a small ResNet (random weights, 3x64x64
inputs, activations 128x8x8 = 8192 values). The bare passes, written by hand: the layers up to
``layer3`` on the 150 examples (no gradient), and per batch of inputs the layers up to
``layer3`` then the rest with the gradient of the target logit w.r.t. the activations.
TCAV adds the 40 CAV fits (in the span of the examples), the directional derivatives and the
t-test. A fresh ``Tcav`` each time (no cached CAV).

    OMP_NUM_THREADS=1 python benchmarks/bench_tcav.py
"""
from __future__ import annotations

import torch
from _timing import interleaved_best_seconds
from torch import nn

from pellucid.explain.concepts import Tcav


class Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(c_out), nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.skip = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                   nn.BatchNorm2d(c_out)) if stride > 1 or c_in != c_out
                     else nn.Identity())

    def forward(self, x):
        return torch.relu(self.skip(x) + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class ResNet(nn.Module):
    def __init__(self, n_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32),
                                  nn.ReLU())
        self.layer1, self.layer2 = Block(32, 32, 1), Block(32, 64, 2)
        self.layer3, self.layer4 = Block(64, 128, 2), Block(128, 256, 2)
        self.fc = nn.Linear(256, n_classes)

    def forward(self, x):
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(x.mean((2, 3)))


def main(batch_size: int = 50):
    torch.manual_seed(0)
    model = ResNet().eval()
    g = torch.Generator().manual_seed(0)
    x, pool = torch.rand(100, 3, 64, 64, generator=g), torch.rand(100, 3, 64, 64, generator=g)
    concept = torch.rand(50, 3, 64, 64, generator=g)
    concept[:, 0] += 0.5

    def features(batch):
        return model.layer3(model.layer2(model.layer1(model.stem(batch))))

    def bare():
        with torch.inference_mode():
            for examples in (concept, pool):
                for start in range(0, len(examples), batch_size):
                    features(examples[start:start + batch_size]).flatten(1)
        for start in range(0, len(x), batch_size):
            activations = features(x[start:start + batch_size])
            logits = model.fc(model.layer4(activations).mean((2, 3)))
            torch.autograd.grad(logits[:, 3].sum(), activations)

    def tcav():
        Tcav(model, target_layer="layer3", n_runs=20, batch_size=batch_size, seed=0,
             progress=False)(x, 3, concepts={"red": concept}, random_examples=pool)

    t_bare, t_tcav = interleaved_best_seconds(bare, tcav)
    print(f"bare passes {t_bare:.3f} s   TCAV (20 runs, 40 CAVs) {t_tcav:.3f} s   "
          f"ratio {t_tcav / t_bare:.2f} (target <= 1.2)")


if __name__ == "__main__":
    main()
