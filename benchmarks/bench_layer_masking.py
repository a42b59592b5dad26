"""Cost of layer masking: a forward pass with the mask carried through every layer against the
plain pass, and Occlusion and RISE with ``masking="layer"`` against ``masking="fill"``, as
ratios measured in one run, timed in alternation (not run by CI).

Model: the small ResNet of ``bench_tcav.py`` (random weights, eval mode), 3 x 64 x 64 inputs,
batches of 64 (the pass) and a batch_size of 64 (the methods). The mask: a random half of the
8 x 8 cells of each input.

    python benchmarks/bench_layer_masking.py
"""
from __future__ import annotations

import torch
from _timing import interleaved_best_seconds
from bench_tcav import ResNet

from pellucid._layer_masking import layer_masked_forward
from pellucid.explain import Occlusion, Rise


def main() -> None:
    torch.manual_seed(0)
    model = ResNet().eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 64, 64, generator=generator)
    cells = (torch.rand(64, 8, 8, generator=generator) < 0.5).float()
    keep = cells.repeat_interleave(8, 1).repeat_interleave(8, 2)

    def plain():
        with torch.no_grad():
            model(x * keep[:, None])

    def masked():
        with torch.no_grad():
            layer_masked_forward(model, x, keep)

    t_plain, t_masked = interleaved_best_seconds(plain, masked)
    print(f"one pass of 64 images: plain {t_plain * 1e3:.0f} ms, layer-masked "
          f"{t_masked * 1e3:.0f} ms, ratio {t_masked / t_plain:.2f}")
    images = x[:4]
    methods = {
        "Occlusion (8 x 8 patches)": lambda masking: Occlusion(
            model, patch_size=8, masking=masking, batch_size=64, progress=False),
        "RISE (256 masks)": lambda masking: Rise(
            model, nb_samples=256, masking=masking, batch_size=64, seed=0, progress=False),
    }
    for name, make in methods.items():
        fill, layer = make("fill"), make("layer")
        t_fill, t_layer = interleaved_best_seconds(lambda: fill(images, 0),
                                                   lambda: layer(images, 0), repeats=3)
        print(f"{name} on 4 images: fill {t_fill:.2f} s, layer {t_layer:.2f} s, ratio "
              f"{t_layer / t_fill:.2f}")


if __name__ == "__main__":
    main()
