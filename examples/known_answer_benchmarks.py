"""Benchmarks with known answers, in about a minute of CPU: DiffROAR on BlockMNIST
(Shah et al., 2021), IROF on the same images (Rieger & Hansen, 2020), a ChaosMining-style
low-SNR regression (which 4 of 30 features matter?) and BAM's model contrast (Yang & Kim, 2019).

    python examples/known_answer_benchmarks.py
"""
import torch
from torch import nn

from pellucid.datasets import load_bam, load_blockmnist, load_chaos_regression
from pellucid.datasets.bam import model_contrast
from pellucid.explain import IntegratedGradients, Occlusion, Saliency
from pellucid.metrics import FeatureAgreement, Irof
from pellucid.procedures import DiffRoar
from pellucid.zoo import fit_from_scratch


def train(x, y, seed=0, steps=200, regression=False, cnn=False):
    """A one-hidden-layer MLP (or a conv-pool-conv-global max pool CNN), full-batch Adam."""
    outputs = 1 if regression else int(torch.as_tensor(y).max()) + 1
    inputs = torch.as_tensor(x)[0].numel()

    def build():
        if cnn:
            return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                                 nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(32, outputs))
        return nn.Sequential(nn.Flatten(), nn.Linear(inputs, 64), nn.ReLU(),
                             nn.Linear(64, outputs))
    return fit_from_scratch(build, x, y, epochs=steps, lr=1e-2, regression=regression,
                            seed=seed)


blocks = load_blockmnist(block_size=8)
print("DiffROAR on BlockMNIST (top half kept minus bottom half kept, retrained):")
for name, method, kwargs in (("Occlusion, one patch per block", Occlusion, {"patch_size": 8}),
                             ("Saliency", Saliency, {})):
    result = DiffRoar(train, method, explainer_kwargs={"progress": False, **kwargs},
                      fractions=(0.5,), repeats=1, progress=False)(
        blocks.x_train, blocks.y_train, blocks.x_test, blocks.y_test)
    print(f"  {name:32s} {result.curves[0, 0]:+.2f}")

model = train(blocks.x_train, blocks.y_train)
x, y = blocks.x_test[:32], blocks.y_test[:32]
irof = Irof(model, feature_mask=torch.arange(16).view(4, 4).repeat_interleave(4, 0)
            .repeat_interleave(2, 1), progress=False)  # 4 x 4 cells of 4 x 2 pixels
for name, method in (("Occlusion", Occlusion), ("Saliency", Saliency)):
    heatmaps = method(model, progress=False).explain(x, y)
    print(f"IROF {name}: {irof(x, heatmaps, y).mean:.3f}")

chaos = load_chaos_regression(1000, 200, n_features=30, n_relevant=4, snr=2.0)
regressor = train(chaos.x_train, chaos.y_train, steps=300, regression=True)
heatmaps = IntegratedGradients(regressor, progress=False).explain(chaos.x_test,
                                                                   torch.zeros(200).long())
agreement = FeatureAgreement(k=4)(chaos.x_test, heatmaps.abs(),
                                  masks=chaos.true_attributions_test).mean
print(f"ChaosMining-style regression: IG top-4 feature agreement {agreement:.2f} "
      f"(random: {4 / 30:.2f}); relevant features {sorted(chaos.extras['relevant'])}")

bam = load_bam(300, 100, size=24, object_size=12)
object_model = train(bam.x_train, bam.extras["y_object_train"], steps=300, cnn=True)
scene_model = train(bam.x_train, bam.extras["y_scene_train"], steps=100, cnn=True)
contrast = model_contrast(
    Saliency(object_model, progress=False).explain(bam.x_test, bam.extras["y_object_test"]),
    Saliency(scene_model, progress=False).explain(bam.x_test, bam.extras["y_scene_test"]),
    bam.masks_test)
print(f"BAM model contrast of Saliency: {contrast.mean():+.3f} (a model-blind method: 0)")
