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


def test_rise_with_layer_masking_is_the_mean_score_of_the_binary_masks_keeping_a_pixel():
    from pellucid.explain import Rise
    from pellucid.explain.perturbation.rise import RiseMaskDesign
    model = cnn()
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(7))
    heatmaps = Rise(model, nb_samples=12, grid_size=4, masking="layer", seed=8, batch_size=5,
                    progress=False).explain(x, 1)
    design = RiseMaskDesign.draw(12, 4, 0.5, (16, 16), torch.Generator().manual_seed(8))
    masks = (design.masks(slice(None)) >= 0.5).float()          # (12, 16, 16), 0 or 1
    expected = torch.zeros(2, 16, 16)
    with torch.no_grad():
        for mask in masks:
            p = layer_masked_forward(model, x, mask.expand(2, 16, 16)).softmax(1)[:, 1]
            expected += p[:, None, None] * mask
    torch.testing.assert_close(heatmaps, expected / masks.sum(0).clamp(min=1), rtol=1e-5,
                               atol=1e-6)


def test_sobol_with_layer_masking_gives_the_analytic_indices_of_an_additive_model():
    """Under layer masking, a 1 x 1 convolution and a linear head on the flattened map give
    ``f = c + sum_i z_i c_i`` over binary cells ``z_i`` (``c_i = sum_{p in i} w_p (a x_p + b)``:
    the bias of a masked position is masked too), so ``ST_i = c_i^2 / sum_j c_j^2``."""
    from pellucid.explain import SobolAttribution
    torch.manual_seed(9)
    conv, head = nn.Conv2d(1, 1, 1), nn.Linear(64, 1)
    with torch.no_grad():
        conv.weight.fill_(0.5)
        conv.bias.fill_(2.0)
    model = nn.Sequential(conv, nn.Flatten(), head).eval()
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(10))
    total = SobolAttribution(model, grid_size=2, nb_design=512, masking="layer", seed=0,
                             progress=False).indices(x, 0).total[0]
    with torch.no_grad():
        contribution = (head.weight.view(8, 8) * (0.5 * x[0, 0] + 2.0)).view(2, 4, 2, 4)
    c = contribution.sum((1, 3))                                 # (2, 2) cells
    torch.testing.assert_close(total, c ** 2 / (c ** 2).sum(), rtol=0, atol=0.03)
    with pytest.raises(ValueError, match="perturbation"):
        SobolAttribution(model, masking="layer", perturbation="blur")


def test_group_methods_with_layer_masking_score_layer_masked_coalitions():
    from pellucid.explain import FeatureAblation, KernelShap
    model = cnn()
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(11))
    quadrants = (torch.arange(16)[:, None] // 8) * 2 + torch.arange(16)[None] // 8
    ablation = FeatureAblation(model, feature_mask=quadrants, masking="layer", batch_size=3,
                               progress=False).explain_groups(x, 1)
    with torch.no_grad():
        full = model(x)[:, 1]
        for g in range(4):
            keep = (quadrants != g).float().expand(2, 16, 16)
            drop = full - layer_masked_forward(model, x, keep)[:, 1]
            torch.testing.assert_close(ablation.values[:, g], drop, rtol=1e-5, atol=1e-6)
        nothing = layer_masked_forward(model, x, torch.zeros(2, 16, 16))[:, 1]
    shap = KernelShap(model, feature_mask=quadrants, masking="layer", nb_samples=64, seed=0,
                      progress=False).explain_groups(x, 1)
    # efficiency: the values share f(x) - f(everything masked at every layer)
    torch.testing.assert_close(shap.base_value, nothing, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shap.values.sum(1), full - nothing, rtol=1e-4, atol=1e-4)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        FeatureAblation(lambda a: a.flatten(1)[:, :2], masking="layer")


def test_road_with_layer_masking_masks_the_removed_pixels_instead_of_imputing_them():
    from pellucid.metrics import Road
    model = cnn()
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(12))
    heatmaps = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(13))
    order = heatmaps.view(2, -1).argsort(1, descending=True)
    result = Road(model, fractions=(0.25, 0.5), order="morf", masking="layer", batch_size=3,
                  progress=False)(x, heatmaps, 1)
    expected = []
    for k in (16, 32):
        keep = torch.ones(2, 64)
        keep.scatter_(1, order[:, :k], 0)
        with torch.no_grad():
            expected.append(layer_masked_forward(model, x, keep.view(2, 8, 8)).softmax(1)[:, 1])
    torch.testing.assert_close(torch.as_tensor(result.details["morf_curves"]).float(),
                               torch.stack(expected, 1), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="masking must be"):
        Road(model, masking="zero")


def test_layer_masking_stays_in_its_thread():
    """The mode is thread-local: threads sharing the model, with and without layer masking,
    get their sequential results, and a thread that only runs the model meanwhile sees plain
    forward passes."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from pellucid.explain import FeatureAblation, Occlusion, Rise
    model = cnn()
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(14))
    explainers = [Occlusion(model, patch_size=4, masking=m, progress=False)
                  for m in ("layer", "fill")] + [
        FeatureAblation(model, masking="layer", progress=False),
        Rise(model, nb_samples=32, grid_size=4, masking="layer", seed=0, progress=False)]
    calls = [(explainers[i % 4], x[i % 3:i % 3 + 2], i % 2) for i in range(12)]
    expected = [explainer(a, t) for explainer, a, t in calls]
    with torch.no_grad():
        plain = model(x)
    stop, wrong = threading.Event(), []

    def predict_meanwhile():
        while not stop.is_set():
            with torch.no_grad():
                wrong.append(not torch.allclose(model(x), plain, atol=1e-6))

    thread = threading.Thread(target=predict_meanwhile)
    thread.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda call: call[0](call[1], call[2]), calls))
    finally:
        stop.set()
        thread.join()
    for got, want in zip(results, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert wrong and not any(wrong)


class Gated(nn.Module):
    """A convolution, a squeeze-excitation gate (its operands in either order) and a global
    average by ``nn.AdaptiveAvgPool2d`` or by ``mean((2, 3))``."""

    def __init__(self, gate_first, pooled_by_mean):
        super().__init__()
        torch.manual_seed(15)
        self.conv, self.gate = nn.Conv2d(1, 6, 3, padding=1), nn.Conv2d(6, 6, 1)
        self.head = nn.Linear(6, 2)
        self.gate_first, self.pooled_by_mean = gate_first, pooled_by_mean

    def forward(self, x):
        a = torch.relu(self.conv(x))
        gate = torch.sigmoid(self.gate(F.adaptive_avg_pool2d(a, 1)))
        a = gate * a if self.gate_first else a * gate
        pooled = a.mean((2, 3)) if self.pooled_by_mean else F.adaptive_avg_pool2d(a, 1).flatten(1)
        return self.head(pooled)


def test_the_mask_follows_gates_in_either_order_and_a_mean_over_space():
    x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(16))
    keep = torch.ones(3, 12, 12)
    keep[:, 2:9, 1:6] = 0
    with torch.no_grad():
        outputs = [layer_masked_forward(Gated(gate_first, by_mean), x, keep)
                   for gate_first in (False, True) for by_mean in (False, True)]
        # the kept positions alone, written out: conv, re-mask, gate from their mean, mean
        model = Gated(False, False)
        mask = 1 - F.max_pool2d(1 - keep[:, None], 3, 1, 1)        # after the 3 x 3 conv
        a = torch.relu(model.conv(x * keep[:, None])) * mask
        mean = (a * mask).sum((2, 3), keepdim=True) / mask.sum((2, 3), keepdim=True)
        a = torch.sigmoid(model.gate(mean)) * a
        expected = model.head((a * mask).sum((2, 3)) / mask.sum((2, 3)))
    for out in outputs:
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_layer_masking_warns_where_the_mask_cannot_follow_the_feature_map():
    class ChannelsLast(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = nn.Conv2d(1, 4, 3, padding=1), nn.LayerNorm(4)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            a = self.norm(self.conv(x).permute(0, 2, 3, 1))
            return self.head(a.mean((1, 2)))

    keep = torch.ones(2, 8, 8)
    keep[:, :4] = 0
    with pytest.warns(UserWarning, match="cannot follow permute"):
        layer_masked_forward(ChannelsLast(), torch.rand(2, 1, 8, 8), keep)


def brute_force_conv_mask(keep, kernel, stride, padding, dilation):
    """An output position is kept when none of the input positions its window reads (inside
    the image) is masked; ``padding`` ``(top, bottom, left, right)``."""
    top, bottom, left, right = padding
    height, width = keep.shape
    rows = (height + top + bottom - dilation * (kernel - 1) - 1) // stride + 1
    cols = (width + left + right - dilation * (kernel - 1) - 1) // stride + 1
    out = torch.ones(rows, cols)
    for i in range(rows):
        for j in range(cols):
            for a in range(kernel):
                for b in range(kernel):
                    r, c = i * stride - top + dilation * a, j * stride - left + dilation * b
                    if 0 <= r < height and 0 <= c < width and keep[r, c] == 0:
                        out[i, j] = 0
    return out


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's own
@pytest.mark.parametrize("kernel, stride, padding, dilation", [
    (3, 1, 1, 1), (3, 2, 1, 1), (1, 1, 1, 1), (3, 1, 2, 1), (3, 1, 2, 2), (5, 2, 0, 1),
    (2, 1, "same", 1), (4, 1, "same", 1), (3, 1, "same", 2)])
def test_the_mask_after_a_convolution_is_the_union_of_the_windows(kernel, stride, padding,
                                                                  dilation):
    from pellucid._layer_masking import LayerMasking
    keep = (torch.rand(1, 9, 10, generator=torch.Generator().manual_seed(17)) > 0.2).float()
    conv = nn.Conv2d(1, 2, kernel, stride=stride, padding=padding, dilation=dilation)
    if padding == "same":  # torch pads the extra row and column after (bottom, right)
        total = dilation * (kernel - 1)
        sides = (total // 2, total - total // 2) * 2
    else:
        sides = (padding,) * 4
    expected = brute_force_conv_mask(keep[0], kernel, stride, sides, dilation)
    with torch.no_grad(), LayerMasking(keep) as mode:
        out = conv(mode.masked_input(torch.rand(1, 1, 9, 10)))
        torch.testing.assert_close(mode.mask_of(out)[0, 0], expected)


class TwoBranches(nn.Module):
    """A grey stem widened by ``expand`` or ``repeat``, then split by ``chunk`` or by slicing
    into a branch with reflect padding and a global average, and a branch with batch norm and
    adaptive max pooling; the two pooled vectors side by side."""

    def __init__(self, variant):
        super().__init__()
        torch.manual_seed(18)
        self.left = nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect")
        self.right = nn.Sequential(nn.BatchNorm2d(2), nn.Conv2d(2, 3, 3, padding=1))
        self.right[0].running_mean.fill_(0.7)  # a bias a lost mask would leak at masked places
        self.variant = variant

    def forward(self, x):
        if self.variant == "views":
            a, b = x.expand(-1, 4, -1, -1).chunk(2, 1)
        else:
            wide = x.repeat(1, 4, 1, 1)
            a, b = wide[:, :2], wide[:, 2:]
        left = F.adaptive_avg_pool2d(torch.relu(self.left(a)), 1).flatten(1)
        right = nn.AdaptiveMaxPool2d(1)(self.right(b)).flatten(1)
        return torch.cat([left, right], 1)


def test_the_mask_follows_views_chunks_reflect_padding_and_adaptive_max_pooling():
    import warnings
    x = torch.rand(2, 1, 10, 10, generator=torch.Generator().manual_seed(19))
    keep = torch.ones(2, 10, 10)
    keep[:, 3:8, 2:6] = 0
    model = TwoBranches("copies").eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # the mask follows every op here: no warning
        views = layer_masked_forward(TwoBranches("views").eval(), x, keep)
        copies = layer_masked_forward(model, x, keep)
        # written out: the masks after each 3 x 3 window (reflect-padded on the left)
        kept = x.repeat(1, 2, 1, 1) * keep[:, None]
        mask_left = 1 - F.max_pool2d(1 - F.pad(keep[:, None], (1, 1, 1, 1), mode="reflect"), 3, 1)
        mask_right = 1 - F.max_pool2d(1 - keep[:, None], 3, 1, 1)
        left = torch.relu(model.left(kept)) * mask_left
        left = left.sum((2, 3)) / mask_left.sum((2, 3))
        right = (model.right(kept) * mask_right).masked_fill(mask_right == 0, -torch.inf)
        expected = torch.cat([left, right.amax((2, 3))], 1)
    torch.testing.assert_close(copies, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(views, expected, rtol=1e-5, atol=1e-6)


def test_layer_masking_frees_each_activation_as_a_plain_pass_does():
    from pellucid._layer_masking import LayerMasking
    model = nn.Sequential(*[nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
                            for _ in range(10)]).eval()
    keep = torch.ones(2, 16, 16)
    keep[:, :5] = 0
    with torch.no_grad(), LayerMasking(keep) as mode:
        x = mode.masked_input(torch.rand(2, 4, 16, 16))
        out = model(x)
        assert len(mode._masks) <= 2  # the input and the output; no activation in between
        assert mode.mask_of(out) is not None
