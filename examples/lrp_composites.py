"""LRP composites on a small conv + batch-norm CNN: zennit's presets (epsilon-plus-flat,
epsilon-gamma-box) without canonizers or hooks. Batch norm is folded into the convolution before
it, so the relevance equals that of the folded model.

    python examples/lrp_composites.py
"""
import torch
from torch import nn

from pellucid.explain import LRP


def cnn(batch_norm=True):
    norm = nn.BatchNorm2d if batch_norm else (lambda channels: nn.Identity())
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), norm(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), norm(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5))


def folded_copy(model):
    """The same network with each BN written into its convolution: W gamma / sigma, bias
    (b - mu) gamma / sigma + beta."""
    folded = cnn(batch_norm=False).eval()
    folded.load_state_dict({k: v for k, v in model.state_dict().items()
                            if not k.startswith(("1.", "4."))})
    with torch.no_grad():
        for conv, bn in ((folded[0], model[1]), (folded[3], model[4])):
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias.copy_((conv.bias - bn.running_mean) * scale + bn.bias)
    return folded


def main() -> None:
    torch.manual_seed(0)
    model = cnn().eval()
    with torch.no_grad():
        for bn in (model[1], model[4]):  # statistics as after training
            bn.running_mean.uniform_(-0.3, 0.3)
            bn.running_var.uniform_(0.5, 1.5)
    images = torch.rand(2, 3, 16, 16)                          # pixels in [0, 1]
    targets = model(images).argmax(1)
    scores = model(images).gather(1, targets[:, None])[:, 0]

    for composite, bounds in (("epsilon_plus", {}), ("epsilon_plus_flat", {}),
                              ("epsilon_gamma_box", {"low": 0.0, "high": 1.0})):
        relevance = LRP(model, composite=composite, progress=False, **bounds).attribute(
            images, targets)
        folded = LRP(folded_copy(model), composite=composite, progress=False,
                     **bounds).attribute(images, targets)
        print(f"{composite:<18} relevance sums {relevance.flatten(1).sum(1).tolist()} "
              f"(f_c(x) {scores.tolist()}: the biases take the rest); same as the folded model: "
              f"{torch.allclose(relevance, folded, rtol=1e-4, atol=1e-6)}")


if __name__ == "__main__":
    main()
