"""DeepLIFT on the blocks of today's classifiers (tests/architectures.py): summation-to-delta
for both rules, zero and blurred baselines, one and several images; no module hook at any time
of a pass; the model unchanged. Then the rules for non-elementwise operations one by one
(normalisations, softmax, products, attention, the averaged-Jacobian fallback) against
independent answers, and the model dtypes."""
import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as module_globals

from architectures import ARCHITECTURES, architecture_inputs, make_architecture
from pellucid._baselines import make_baseline
from pellucid.explain import DeepLift

RULES = ("rescale", "reveal_cancel")


def largest_change(model, x, baseline):
    """Per input, the class whose score changes most from the baseline."""
    with torch.no_grad():
        return (model(x) - model(baseline)).abs().argmax(1)


def relative_error(model, heatmaps, x, baseline, target):
    with torch.no_grad():
        delta = (model(x) - model(baseline)).gather(1, torch.as_tensor(target).expand(
            len(x)).view(-1, 1))[:, 0]
    assert delta.abs().min() > 1e-4  # a meaningful relative check
    totals = heatmaps.flatten(1).sum(1).double()
    return ((totals - delta.double()).abs() / delta.double().abs()).max().item()


def assert_no_module_hook(model):
    for hooks in (module_globals._global_forward_hooks, module_globals._global_forward_pre_hooks,
                  module_globals._global_backward_hooks,
                  module_globals._global_backward_pre_hooks):
        assert not hooks
    for module in model.modules():
        assert not (module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                    or module._backward_pre_hooks)


class HookProbe(nn.Module):
    """Runs ``inner`` and checks, before and after it, that no module hook is registered;
    counts the checks made inside DeepLIFT's intercepted pass (a torch-function mode active)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.checked_in_pass = inner, 0

    def forward(self, x):
        assert_no_module_hook(self)
        out = self.inner(x)
        assert_no_module_hook(self)
        self.checked_in_pass += torch._C._len_torch_function_stack() > 0
        return out


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(m.training, dict(m._forward_hooks)) for m in model.modules()],
            [(p.requires_grad, p.grad) for p in model.parameters()])


def assert_unchanged(model, before):
    state, modules, parameters = snapshot(model)
    assert state.keys() == before[0].keys()
    assert all(torch.equal(state[k], before[0][k]) for k in state)
    assert modules == before[1] and parameters == before[2]


@pytest.mark.parametrize("baseline, n", [("zero", 1), ("blur", 3)])  # each baseline, each n
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_sums_to_delta_on_every_architecture(name, rule, baseline, n):
    model = HookProbe(make_architecture(name))
    x = architecture_inputs(n)
    reference = torch.zeros_like(x) if baseline == "zero" else make_baseline("blur", x)
    targets = largest_change(model, x, reference)
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "no rule" warning either
        heatmaps = DeepLift(model, baseline=0.0 if baseline == "zero" else "blur", rule=rule,
                            progress=False)(x, targets)
    assert model.checked_in_pass >= 1
    assert_unchanged(model, before)
    assert relative_error(model, heatmaps, x, reference, targets) < 1e-3


# -- the rules, one by one --------------------------------------------------------------------
class Product(nn.Module):
    """f(x) = (w1 . x) * (w2 . x)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 1, bias=False), nn.Linear(4, 1, bias=False)

    def forward(self, x):
        return self.a(x) * self.b(x)


@pytest.mark.parametrize("rule", RULES)
def test_product_rule_written_out(rule):
    """C_i = dx_i (w1_i * b_mean + w2_i * a_mean), a_mean = (a(x) + a(x0)) / 2."""
    torch.manual_seed(0)
    model = Product().eval()
    x, x0 = torch.randn(3, 4), torch.randn(3, 4)
    w1, w2 = model.a.weight.detach()[0], model.b.weight.detach()[0]
    a_mean, b_mean = (x @ w1 + x0 @ w1) / 2, (x @ w2 + x0 @ w2) / 2
    expected = (x - x0) * (w1 * b_mean[:, None] + w2 * a_mean[:, None])
    got = DeepLift(model, baseline=x0, rule=rule, progress=False)(x, 0)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_softmax_rule_is_exact_on_a_two_class_softmax():
    """softmax([z, 0])_0 = sigmoid(z): the composite rule must give the sigmoid's Rescale
    multiplier (sigmoid(z) - sigmoid(z0)) / (z - z0) for a one-input model."""
    model = nn.Sequential(nn.Linear(1, 2), nn.Softmax(dim=1)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0], [0.0]]))
        model[0].bias.zero_()
    x, x0 = torch.tensor([[2.0], [-1.0]]), torch.tensor([[0.5], [0.7]])
    expected = torch.sigmoid(x) - torch.sigmoid(x0)  # one input: C = its whole difference
    got = DeepLift(model, baseline=x0, progress=False)(x, 0)
    torch.testing.assert_close(got, expected)


class Operations(nn.Module):
    """One non-elementwise operation after a linear layer, chosen by name."""

    def __init__(self, operation):
        super().__init__()
        self.operation = operation
        self.fc, self.out = nn.Linear(6, 12), nn.Linear(12, 3)
        self.group_norm, self.rms_norm = nn.GroupNorm(3, 12), nn.RMSNorm(12)
        self.attention = nn.MultiheadAttention(4, 2, batch_first=True)
        self.gqa = nn.Linear(4, 4 + 2 * 2)

    def forward(self, x):
        h = self.fc(x)
        tokens = h.view(len(x), 3, 4)
        if self.operation == "group_norm":
            h = self.group_norm(h[:, :, None]).squeeze(-1)
        elif self.operation == "instance_norm":
            h = F.instance_norm(tokens).flatten(1)
        elif self.operation == "rms_norm":
            h = self.rms_norm(h)
        elif self.operation == "log_softmax":
            h = F.log_softmax(h, 1)
        elif self.operation == "einsum":
            h = torch.einsum("bi,bi->bi", h, h.flip(1))
        elif self.operation == "division":
            h = h / (1 + h.flip(1).abs()) + 2 / (2 + h.square())
        elif self.operation == "mha_masks":
            padding = torch.zeros(len(x), 3, dtype=torch.bool)
            padding[:, 2] = True
            causal = torch.ones(3, 3, dtype=torch.bool).triu(1)
            h = self.attention(tokens, tokens, tokens, key_padding_mask=padding,
                               attn_mask=causal)[0].flatten(1)
        elif self.operation == "sdpa_variants":
            q, k, v = self.gqa(tokens).split([4, 2, 2], -1)
            q, k, v = q.view(len(x), 3, 2, 2), k[:, :, None], v[:, :, None]
            bias = 0.5 * torch.arange(9.0).view(3, 3)
            h = (F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                v.transpose(1, 2), is_causal=True,
                                                enable_gqa=True).flatten(1)
                 + F.scaled_dot_product_attention(q.transpose(1, 2), q.transpose(1, 2),
                                                  q.transpose(1, 2), attn_mask=bias,
                                                  scale=0.3).flatten(1))
        elif self.operation == "normalize":  # the averaged-Jacobian fallback
            h = F.normalize(h, dim=1) + F.local_response_norm(h[:, :, None], 3).squeeze(-1)
        return self.out(h)


OPERATIONS = ["group_norm", "instance_norm", "rms_norm", "log_softmax", "einsum", "division",
              "mha_masks", "sdpa_variants", "normalize"]


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_each_operation_sums_to_delta(operation, rule):
    torch.manual_seed(0)
    model = Operations(operation).eval()
    generator = torch.Generator().manual_seed(1)
    x, x0 = torch.randn(4, 6, generator=generator), 0.3 * torch.randn(4, 6, generator=generator)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        heatmaps = DeepLift(model, baseline=x0, rule=rule, progress=False)(x, 1)
    # exact rules: float32 rounding; the fallback: its 16-node quadrature error (measured 4e-7)
    assert relative_error(model, heatmaps, x, x0, 1) < 1e-4


def test_the_rules_are_needed():
    """Differentiating these operations as they are misses the sum (the pre-rule behaviour):
    the check above can fail."""
    from pellucid.explain import GradientInput
    model = make_architecture("swin")
    x = architecture_inputs(2)
    with torch.no_grad():
        delta = model(x)[:, 1] - model(torch.zeros_like(x))[:, 1]
    gradient_times_input = GradientInput(model, progress=False)(x, 1).flatten(1).sum(1)
    assert ((gradient_times_input - delta).abs() / delta.abs()).max() > 0.01


# -- dtypes -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet", "swin", "vit_mha"])
def test_float64_model_sums_to_its_own_delta(name):
    model = make_architecture(name).double()
    x = architecture_inputs(2)
    reference = make_baseline("blur", x).double()
    targets = largest_change(model, x.double(), reference)
    heatmaps = DeepLift(model, baseline="blur", progress=False)(x, targets)
    assert heatmaps.dtype == torch.float32
    # the pass runs in float64; the float32 heatmaps' rounding is what remains
    assert relative_error(model, heatmaps, x.double(), reference, targets) < 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_model_is_explained_through_a_float32_copy(dtype):
    model = make_architecture("convnext").to(dtype)
    before = snapshot(model)
    x = architecture_inputs(2)
    as_float = copy.deepcopy(model).float()
    targets = largest_change(as_float, x, make_baseline("blur", x))
    heatmaps = DeepLift(model, baseline="blur", progress=False)(x, targets)
    assert_unchanged(model, before)
    assert next(model.parameters()).dtype == dtype
    assert relative_error(as_float, heatmaps, x, make_baseline("blur", x), targets) < 1e-3
