"""LRP: the rules written out by hand on a two-layer network, conservation where it must hold,
z+ signs, agreement with Captum's LRP on a VGG-style CNN, no module hook, and the composites on
the architectures of tests/architectures.py."""
import warnings

import numpy as np
import pytest
import torch
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
