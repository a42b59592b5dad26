"""Layer masking (Balasubramanian & Feizi, 2023): unmasked activations never read a masked
input, no mask is a plain forward pass, and on a CNN trained to read the shape of a grey patch
(a visible mask-shape shortcut: a grey bar, horizontal or vertical) the shape of a layer mask
cannot be read from the outputs, while the shape of a grey fill can."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pellucid._layer_masking import layer_masked_forward


def cnn(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                          nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AvgPool2d(2), nn.Conv2d(8, 8, 3, padding="same"), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    model[1].running_mean.uniform_(-1, 1)
    return model.eval()


def test_unmasked_activations_never_read_masked_inputs():
    model = cnn()
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    keep = torch.ones(3, 16, 16)
    keep[:, 4:10, 3:12] = 0
    changed = x.clone()
    changed[:, :, 4:10, 3:12] = 5 * torch.rand(3, 1, 6, 9)
    with torch.no_grad():
        torch.testing.assert_close(layer_masked_forward(model, changed, keep),
                                   layer_masked_forward(model, x, keep), rtol=0, atol=0)
        torch.testing.assert_close(layer_masked_forward(model, x, torch.ones(3, 16, 16)),
                                   model(x), rtol=0, atol=0)


def shapes(n, generator):
    """32 x 32 images, half horizontal bars, half vertical bars (3 x 12 pixels), each at a
    random place; returns the keep masks (0 on the bar) and the class (0 horizontal, 1
    vertical)."""
    keep = torch.ones(n, 32, 32)
    labels = torch.arange(n) % 2
    corners = torch.randint(1, 19, (n, 2), generator=generator)
    for i, (r, c) in enumerate(corners.tolist()):
        if labels[i] == 0:
            keep[i, r:r + 3, c:c + 12] = 0
        else:
            keep[i, r:r + 12, c:c + 3] = 0
    return keep, labels


def test_a_layer_mask_hides_its_shape_where_a_grey_fill_shows_it():
    generator = torch.Generator().manual_seed(2)
    model = cnn(seed=3)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(100):  # the shortcut: the class is the shape of the grey patch
        keep, labels = shapes(32, generator)
        noise = 0.2 * torch.rand(32, 1, 32, 32, generator=generator)  # a faint background
        grey = noise * keep[:, None] + 0.5 * (1 - keep[:, None])
        loss = F.cross_entropy(model(grey), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    keep, labels = shapes(400, generator)
    noise = 0.2 * torch.rand(400, 1, 32, 32, generator=generator)
    with torch.no_grad():
        grey = model(noise * keep[:, None] + 0.5 * (1 - keep[:, None]))
        layer = layer_masked_forward(model, noise, keep)
    grey_accuracy = (grey.argmax(1) == labels).float().mean().item()
    layer_accuracy = (layer.argmax(1) == labels).float().mean().item()
    separation = {"grey": d_prime(grey, labels), "layer": d_prime(layer, labels)}
    print(f"shape read from the outputs: grey fill {grey_accuracy:.3f} accuracy, d' "
          f"{separation['grey']:.2f}; layer masking {layer_accuracy:.3f}, d' "
          f"{separation['layer']:.2f}")
    assert grey_accuracy > 0.95 and separation["grey"] > 3
    assert layer_accuracy < 0.65 and separation["layer"] < 0.3
    assert layer.std(0).min() > 0  # not a blind model: the unmasked noise still moves it


def d_prime(outputs, labels):
    """How far apart the output margins of the two shapes are, in within-shape deviations."""
    margin = outputs[:, 1] - outputs[:, 0]
    a, b = margin[labels == 0], margin[labels == 1]
    return ((b.mean() - a.mean()).abs() / ((a.var() + b.var()) / 2).sqrt()).item()


def test_occlusion_with_layer_masking_is_the_drop_of_each_layer_masked_window():
    from pellucid.explain import Occlusion
    model = cnn()
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    heatmaps = Occlusion(model, patch_size=8, masking="layer", batch_size=3,
                         progress=False).explain(x, 1)
    with torch.no_grad():
        full = model(x)[:, 1]
        for r in (0, 8):
            for c in (0, 8):
                keep = torch.ones(2, 16, 16)
                keep[:, r:r + 8, c:c + 8] = 0
                drop = full - layer_masked_forward(model, x, keep)[:, 1]
                torch.testing.assert_close(heatmaps[:, r:r + 8, c:c + 8],
                                           drop[:, None, None].expand(2, 8, 8))
    fill = Occlusion(model, patch_size=8, progress=False).explain(x, 1)
    assert not torch.allclose(fill, heatmaps)  # the grey fill is an input; the layer mask not


def test_layer_masking_is_refused_where_it_cannot_run():
    from pellucid.explain import Occlusion
    with pytest.raises(ValueError, match="masking must be"):
        Occlusion(cnn(), masking="grey")
    with pytest.raises(TypeError, match="torch.nn.Module"):
        Occlusion(lambda a: a[:, :2], masking="layer")
    with pytest.raises(ValueError, match="needs images"):
        Occlusion(nn.Linear(6, 2), masking="layer", progress=False).explain(torch.rand(2, 6), 0)


def test_deletion_and_insertion_with_layer_masking_follow_the_written_out_curve():
    from pellucid.metrics import Deletion, Insertion
    model = cnn()
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    heatmaps = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(6))
    order = heatmaps.view(2, -1).argsort(1, descending=True)
    for metric, deleting in ((Deletion, True), (Insertion, False)):
        result = metric(model, step=16, masking="layer", batch_size=3, progress=False)(
            x, heatmaps, 1)
        expected = []
        for k in (0, 16, 32, 48, 64):
            chosen = torch.zeros(2, 64)
            chosen.scatter_(1, order[:, :k], 1)
            keep = (1 - chosen) if deleting else chosen
            with torch.no_grad():
                out = layer_masked_forward(model, x, keep.view(2, 8, 8)).softmax(1)[:, 1]
            expected.append(out)
        torch.testing.assert_close(torch.as_tensor(result.curves).float(),
                                   torch.stack(expected, 1), rtol=1e-5, atol=1e-6)
