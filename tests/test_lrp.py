"""LRP: the rules written out by hand on a two-layer network, conservation where it must hold,
z+ signs, agreement with Captum's LRP on a VGG-style CNN, no module hook, and the composites on
the architectures of tests/architectures.py."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from architectures import architecture_inputs, make_architecture
from pellucid.explain import LRP
from test_deeplift_architectures import HookProbe, assert_unchanged, snapshot


def two_layer():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


def stabilise(z, eps):
    return z + np.where(z >= 0, eps, -eps)


def layer_rule(rule, a, w, b, relevance, eps=1e-6, gamma=0.25):
    """R_a for one layer z = w a + b receiving ``relevance`` (numpy, float64)."""
    pos, neg = w.clip(min=0), w.clip(max=0)
    if rule == "epsilon":
        return a * (w.T @ (relevance / stabilise(w @ a + b, eps)))
    if rule == "gamma":
        w_mod, b_mod = w + gamma * pos, b + gamma * b.clip(min=0)
        return a * (w_mod.T @ (relevance / stabilise(w_mod @ a + b_mod, 1e-9)))
    if rule == "zplus":
        return a * (pos.T @ (relevance / stabilise(pos @ a, 1e-9)))
    if rule == "alpha_beta":
        return a * (2 * pos.T @ (relevance / stabilise(pos @ a, 1e-9))
                    - neg.T @ (relevance / stabilise(neg @ a, 1e-9)))
    raise ValueError(rule)


@pytest.mark.parametrize("composite, rule", [("epsilon", "epsilon"), ("gamma", "gamma"),
                                             ("zplus", "zplus"),
                                             ("alpha2_beta1", "alpha_beta")])
def test_rules_written_out_on_a_two_layer_network(composite, rule):
    """In float64: a pre-activation near 0 amplifies float32 rounding through R / z."""
    model = two_layer().double()
    w1, b1, w2, b2 = (p.detach().double().numpy() for p in model.parameters())
    x = torch.rand(4, 6, generator=torch.Generator().manual_seed(1))  # non-negative inputs
    targets = [0, 1, 2, 0]
    expected = []
    for xi, c in zip(x.double().numpy(), targets):
        hidden = np.maximum(w1 @ xi + b1, 0)
        top = np.zeros(3)
        top[c] = (w2 @ hidden + b2)[c]  # R = f_c at the target, 0 elsewhere
        relevance_hidden = layer_rule(rule, hidden, w2, b2, top)  # ReLU passes it unchanged
        expected.append(layer_rule(rule, xi, w1, b1, relevance_hidden))
    got = LRP(model, composite=composite, progress=False)(x, targets)
    np.testing.assert_allclose(got.numpy(), np.stack(expected), rtol=1e-4, atol=1e-6)


def bias_free_relu_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                         nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.ReLU(),
                         nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(32, 5, bias=False)).eval()


@pytest.mark.parametrize("composite", ["epsilon", "zplus", "epsilon_plus"])
def test_conserves_on_a_bias_free_relu_network(composite):
    """epsilon -> 0 (1e-9) and z+ lose nothing without biases: sum R = f_c(x)."""
    model = bias_free_relu_cnn()
    x = architecture_inputs(3)
    with torch.no_grad():
        scores = model(x)
    targets = scores.argmax(1)
    relevance = LRP(model, composite=composite, epsilon=1e-9, progress=False)(x, targets)
    totals = relevance.flatten(1).sum(1)
    expected = scores.gather(1, targets[:, None])[:, 0]
    assert ((totals - expected).abs() / expected.abs()).max() < 1e-4


def test_zplus_maps_are_non_negative_for_a_positive_score():
    model = bias_free_relu_cnn()
    x = architecture_inputs(3)  # images in [0, 1]
    with torch.no_grad():
        targets = model(x).argmax(1)
        assert (model(x).gather(1, targets[:, None]) > 0).all()
    relevance = LRP(model, composite="zplus", progress=False).attribute(x, targets)
    assert (relevance >= 0).all() and (relevance > 0).any()


class VGG(nn.Module):
    """Conv/ReLU/max-pool blocks and a classifier, a flatten written in forward (Captum's LRP
    needs a rule for every leaf module)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 5))

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def test_agrees_with_captum_lrp_on_a_vgg_style_cnn():
    from captum.attr import LRP as CaptumLRP
    torch.manual_seed(0)
    model = VGG().eval()
    x = architecture_inputs(3)
    targets = torch.tensor([0, 1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = CaptumLRP(model).attribute(x, target=targets).detach()
    ours = LRP(model, composite="epsilon", epsilon=1e-9, progress=False).attribute(x, targets)
    correlation = np.corrcoef(ours.flatten().numpy(), theirs.flatten().numpy())[0, 1]
    assert correlation > 0.99
    torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("name", ["resnet", "convnext", "vit_mha", "vit_sdpa", "swin"])
def test_composite_runs_without_hooks_and_leaves_the_model(name):
    model = HookProbe(make_architecture(name))
    before = snapshot(model)
    x = architecture_inputs(2)
    relevance = LRP(model, composite="epsilon_plus", progress=False).attribute(x, 1)
    assert relevance.shape == x.shape and torch.isfinite(relevance).all()
    assert relevance.abs().sum() > 0
    assert model.checked_in_pass >= 1 and torch._C._len_torch_function_stack() == 0
    assert_unchanged(model, before)


def test_bad_arguments_are_reported():
    with pytest.raises(ValueError, match="composite must be one of"):
        LRP(two_layer(), composite="flat")
    with pytest.raises(ValueError, match="epsilon must be a number >= 0"):
        LRP(two_layer(), epsilon=-1.0)


# -- batch norm folded into the layer before it ---------------------------------------------------
class ConvBN(nn.Module):
    """Conv -> BN -> ReLU twice and Linear -> BatchNorm1d, with biases, non-trivial statistics
    and one negative BN scale (which swaps W+ and W- of the folded layer)."""

    def __init__(self, batch_norm=True):
        super().__init__()
        norm = nn.BatchNorm2d if batch_norm else (lambda c: nn.Identity())
        norm1d = nn.BatchNorm1d if batch_norm else (lambda c: nn.Identity())
        self.conv1, self.bn1 = nn.Conv2d(3, 6, 3, padding=1), norm(6)
        self.conv2, self.bn2 = nn.Conv2d(6, 8, 3, padding=1), norm(8)
        self.fc1, self.bn3 = nn.Linear(32, 12), norm1d(12)
        self.fc2 = nn.Linear(12, 5)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = F.adaptive_avg_pool2d(torch.relu(self.bn2(self.conv2(x))), 2).flatten(1)
        return self.fc2(torch.relu(self.bn3(self.fc1(x))))


def conv_bn_and_folded_copy():
    """The model and a copy with ``W' = W * gamma / sigma``, ``b' = (b - mu) * gamma / sigma +
    beta`` written into its layers and the batch norms removed."""
    torch.manual_seed(0)
    model = ConvBN().eval()
    with torch.no_grad():
        for bn in (model.bn1, model.bn2, model.bn3):
            bn.running_mean.uniform_(-0.3, 0.3)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
        model.bn2.weight[0] = -0.7
    folded = ConvBN(batch_norm=False).eval()
    with torch.no_grad():
        for name in ("conv1", "conv2", "fc1", "fc2"):
            getattr(folded, name).load_state_dict(getattr(model, name).state_dict())
        for layer, bn in ((folded.conv1, model.bn1), (folded.conv2, model.bn2),
                          (folded.fc1, model.bn3)):
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            layer.weight.mul_(scale.view(-1, *[1] * (layer.weight.ndim - 1)))
            layer.bias.copy_((layer.bias - bn.running_mean) * scale + bn.bias)
    return model, folded


@pytest.mark.parametrize("composite", ["epsilon", "gamma", "zplus", "alpha2_beta1",
                                       "epsilon_plus_flat", "epsilon_gamma_box"])
def test_batch_norm_is_folded_into_the_layer_before_it(composite):
    """The LRP of conv/linear -> BN equals the LRP of the hand-folded layer (it did not when BN
    was a diagonal LRP-0 layer: z+ then differed by 1e-2 of the largest relevance)."""
    model, folded = conv_bn_and_folded_copy()
    x = architecture_inputs(3)
    with torch.no_grad():
        torch.testing.assert_close(model(x), folded(x), rtol=1e-5, atol=1e-5)
    before = snapshot(model)
    settings = {"low": 0.0, "high": 1.0} if composite == "epsilon_gamma_box" else {}
    ours = LRP(model, composite=composite, epsilon=0.01, progress=False,
               **settings).attribute(x, 1)
    expected = LRP(folded, composite=composite, epsilon=0.01, progress=False,
                   **settings).attribute(x, 1)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5 * expected.abs().max())
    assert_unchanged(model, before)


def test_zplus_conserves_on_the_resnet_once_batch_norm_is_folded():
    """z+ drops biases, so with BN shifts folded into the convolutions' biases nothing absorbs
    relevance through residual blocks (BN as a diagonal layer lost 88% of it)."""
    model = make_architecture("resnet")
    x = architecture_inputs(3)
    with torch.no_grad():
        scores = model(x)
    targets = scores.argmax(1)
    totals = LRP(model, composite="zplus", progress=False)(x, targets).flatten(1).sum(1)
    expected = scores.gather(1, targets[:, None])[:, 0]
    assert ((totals - expected).abs() / expected.abs()).max() < 1e-4


# -- input-layer rules: flat and z^B --------------------------------------------------------------
def test_flat_and_zbox_input_rules_written_out_on_a_two_layer_network():
    """epsilon_plus_flat: R_i = sum_j R_j / n_j (n_j = 6 inputs); epsilon_gamma_box: R_i =
    sum_j (x_i w_ij - l_i w+_ij - h_i w-_ij) / sum_i' (...) R_j; epsilon on the top layer."""
    model = two_layer().double()
    w1, b1, w2, b2 = (p.detach().double().numpy() for p in model.parameters())
    x = torch.rand(4, 6, generator=torch.Generator().manual_seed(1))
    low = -torch.rand(6, generator=torch.Generator().manual_seed(2))
    high = 1 + torch.rand(6, generator=torch.Generator().manual_seed(3))
    targets = [0, 1, 2, 0]
    flat, box = [], []
    l, h = low.double().numpy(), high.double().numpy()
    for xi, c in zip(x.double().numpy(), targets):
        hidden = np.maximum(w1 @ xi + b1, 0)
        top = np.zeros(3)
        top[c] = (w2 @ hidden + b2)[c]
        relevance = layer_rule("epsilon", hidden, w2, b2, top)
        flat.append(np.full(6, relevance.sum() / 6))
        contributions = (xi[None] * w1 - l[None] * w1.clip(min=0)
                         - h[None] * w1.clip(max=0))  # (hidden j, input i)
        box.append((contributions / stabilise(contributions.sum(1), 1e-9)[:, None]).T
                   @ relevance)
    got = LRP(model, composite="epsilon_plus_flat", progress=False)(x, targets)
    np.testing.assert_allclose(got.numpy(), np.stack(flat), rtol=1e-4, atol=1e-6)
    got = LRP(model, composite="epsilon_gamma_box", low=low, high=high, progress=False)(
        x, targets)
    np.testing.assert_allclose(got.numpy(), np.stack(box), rtol=1e-4, atol=1e-6)


def test_flat_counts_the_receptive_field_inside_the_image():
    """A padded 3x3 convolution as input layer: n_j = channels x in-image taps of j's window."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(75, 3)).double().eval()
    x = torch.rand(1, 2, 5, 5, generator=torch.Generator().manual_seed(1))
    w, b = (p.detach().numpy() for p in model[3].parameters())
    with torch.no_grad():
        hidden = model[1](model[0](x.double()))[0].numpy()
    top = np.zeros(3)
    top[2] = (w @ hidden.ravel() + b)[2]
    relevance = layer_rule("epsilon", hidden.ravel(), w, b, top).reshape(3, 5, 5)
    expected = np.zeros((2, 5, 5))
    for oy in range(5):
        for ox in range(5):
            taps = [(y, x_) for y in range(oy - 1, oy + 2) for x_ in range(ox - 1, ox + 2)
                    if 0 <= y < 5 and 0 <= x_ < 5]
            for y, x_ in taps:
                expected[:, y, x_] += relevance[:, oy, ox].sum() / (2 * len(taps))
    got = LRP(model, composite="epsilon_plus_flat", progress=False).attribute(x, 2)
    np.testing.assert_allclose(got[0].numpy(), expected, rtol=1e-4, atol=1e-7)


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(6, 3)

    def forward(self, x):
        return self.layer(2 * x - 1)


def test_input_rules_report_what_they_need():
    x = torch.rand(2, 6, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="needs the input bounds low and high"):
        LRP(two_layer(), composite="epsilon_gamma_box")
    with pytest.raises(ValueError, match="takes none"):
        LRP(two_layer(), composite="epsilon_plus", low=0.0, high=1.0)
    with pytest.raises(ValueError, match=r"needs low <= x <= high; the inputs range"):
        LRP(two_layer(), composite="epsilon_gamma_box", low=0.5, high=1.0, progress=False)(x, 0)
    with pytest.raises(ValueError, match=r"low must broadcast to one input of shape \(6,\)"):
        LRP(two_layer(), composite="epsilon_gamma_box", low=torch.zeros(3), high=1.0,
            progress=False)(x, 0)
    with pytest.raises(ValueError, match="transforms the input before any of them"):
        LRP(Scaled(), composite="epsilon_plus_flat", progress=False)(x, 0)
