"""Guided Backprop, Deconvnet and Guided Grad-CAM: equal to their formulas written out in plain
autograd (a network rebuilt with the test's own ReLU functions), to Captum's on a sequential CNN
(where Captum's module hooks are right), and on the ResNet block with its reused in-place ReLU,
without any module hook."""
import copy
import warnings

import pytest
import torch
from torch import nn

from architectures import architecture_inputs, make_architecture
from conftest import small_cnn
from pellucid.explain import Deconvolution, GuidedBackprop, GuidedGradCAM
from test_deeplift_architectures import HookProbe, assert_unchanged, snapshot


class ReferenceGuided(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.relu(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.where((x > 0) & (grad > 0), grad, torch.zeros_like(grad))


class ReferenceDeconv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.relu(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.where(grad > 0, grad, torch.zeros_like(grad))


class ReferenceReLU(nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function.apply(x)


def with_reference_relus(model, function):
    """A copy of ``model`` whose nn.ReLU modules are the test's own functions."""
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.ReLU):
                setattr(module, name, ReferenceReLU(function))
    return model


def reference_gradient(model, x, targets):
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(leaf).gather(1, targets[:, None]).sum(), leaf)
    return grad


CASES = [(GuidedBackprop, ReferenceGuided), (Deconvolution, ReferenceDeconv)]


@pytest.mark.parametrize("architecture", ["small_cnn", "resnet"])
@pytest.mark.parametrize("method, function", CASES)
def test_equals_the_rule_written_out(method, function, architecture):
    """The ResNet reuses one in-place nn.ReLU before and after the residual addition."""
    model = small_cnn() if architecture == "small_cnn" else make_architecture("resnet")
    x = architecture_inputs(3)
    targets = torch.tensor([0, 1, 2])
    expected = reference_gradient(with_reference_relus(model, function), x, targets)
    probe = HookProbe(model)
    before = snapshot(probe)
    got = method(probe, progress=False).attribute(x, targets)
    assert probe.checked_in_pass >= 1 and torch._C._len_torch_function_stack() == 0
    assert_unchanged(probe, before)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(got, reference_gradient(model, x, targets), atol=1e-4)


def captum_attributions(name, model, x, targets, layer=None):
    import captum.attr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cls = getattr(captum.attr, name)
        explainer = cls(model, layer) if layer is not None else cls(model)
        return explainer.attribute(x, target=targets).detach()


@pytest.mark.parametrize("method, name", [(GuidedBackprop, "GuidedBackprop"),
                                          (Deconvolution, "Deconvolution")])
def test_agrees_with_captum_on_a_sequential_cnn(method, name):
    model = small_cnn()
    x = architecture_inputs(3)
    targets = torch.tensor([0, 1, 2])
    torch.testing.assert_close(method(model, progress=False).attribute(x, targets),
                               captum_attributions(name, model, x, targets), rtol=1e-5,
                               atol=1e-7)


def test_guided_grad_cam_agrees_with_captum():
    """At a layer of the input's resolution (no upsampling, so Captum's nearest and pellucid's
    bilinear interpolation agree): GBP times the unscaled Grad-CAM map."""
    model = small_cnn()
    x = architecture_inputs(3)
    targets = torch.tensor([0, 1, 2])
    got = GuidedGradCAM(model, target_layer="3", progress=False).attribute(x, targets)
    expected = captum_attributions("GuidedGradCam", model, x, targets, layer=model[3])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    heatmaps = GuidedGradCAM(model, target_layer="3", progress=False)(x, targets)
    torch.testing.assert_close(heatmaps, got.abs().amax(1))


def test_guided_grad_cam_checks_its_layer_early():
    with pytest.raises(ValueError, match="not a module of the model"):
        GuidedGradCAM(small_cnn(), target_layer="nope")
