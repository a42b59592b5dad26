"""DeepLift / DeepLiftShap: summation-to-delta on the architectures module hooks get wrong, exact
answers on linear and hand-computed networks, the paper's RevealCancel equations written out
independently, and agreement with Captum where Captum is right."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import small_cnn, small_mlp
from pellucid.explain import DeepLift, DeepLiftShap

RULES = ("rescale", "reveal_cancel")


# -- models -----------------------------------------------------------------------------------
class FunctionalReLU(nn.Module):
    """Activations written as function calls: no module for a hook to attach to."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(6 * 16, 12), nn.Linear(12, 4)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.adaptive_avg_pool2d(torch.relu(self.conv2(h)), 4)
        return self.fc2(self.fc1(h.flatten(1)).relu())


class ReusedReLU(nn.Module):
    """One nn.ReLU object called three times."""

    def __init__(self):
        super().__init__()
        self.act = nn.ReLU()
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(6 * 16, 12), nn.Linear(12, 4)

    def forward(self, x):
        h = self.act(self.conv2(self.act(self.conv1(x))))
        return self.fc2(self.act(self.fc1(F.adaptive_avg_pool2d(h, 4).flatten(1))))


class InplaceReLU(nn.Module):
    """nn.ReLU(inplace=True) (first on the input itself) and a relu_ whose result is ignored."""

    def __init__(self):
        super().__init__()
        self.act = nn.ReLU(inplace=True)
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 16, 4)

    def forward(self, x):
        h = self.conv2(self.act(self.conv1(self.act(x - 0.3))))
        torch.relu_(h)  # relies on the in-place write
        return self.fc(F.adaptive_avg_pool2d(h, 4).flatten(1))


class Residual(nn.Module):
    """x + f(x) blocks with eval-mode batch norm (random statistics) and a reused in-place ReLU."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.conv1, self.conv2 = nn.Conv2d(6, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.bn1, self.bn2 = nn.BatchNorm2d(6), nn.BatchNorm2d(6)
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(6, 4)
        with torch.no_grad():
            for bn in (self.bn1, self.bn2):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(-1.5, 1.5)  # negative scales too
                bn.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        h = self.act(self.stem(x))
        h = self.act(h + self.bn2(self.conv2(self.act(self.bn1(self.conv1(h))))))
        return self.fc(h.mean((2, 3)))


class SigmoidTanh(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 16), nn.Linear(16, 16), nn.Linear(16, 3)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return self.fc3(torch.tanh(self.fc2(self.sigmoid(self.fc1(x)))))


class OtherActivations(nn.Module):
    def __init__(self):
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(6 if i == 0 else 16, 16) for i in range(6))
        self.out = nn.Linear(16, 3)
        for fc in self.fcs:
            nn.init.normal_(fc.weight, std=0.5)  # keep the signal alive through six layers

    def forward(self, x):
        acts = (F.gelu, F.silu, nn.LeakyReLU(0.1), nn.ELU(), F.softplus, nn.ReLU6())
        for fc, act in zip(self.fcs, acts):
            x = act(fc(x))
        return self.out(x.clamp(min=0.05))


class PoolVariants(nn.Module):
    """Padded ceil-mode max pooling asked for its indices, 1-D and adaptive max pooling."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 + 6 * 5, 4)

    def forward(self, x):
        h, _ = F.max_pool2d(torch.tanh(self.conv1(x)), 3, 2, padding=1, ceil_mode=True,
                            return_indices=True)
        h = F.elu(self.conv2(h))
        rows = F.max_pool1d(h.flatten(2), 13)  # (N, 6, 81) -> (N, 6, 6)
        return self.fc(torch.cat([F.adaptive_max_pool2d(h, 2).flatten(1),
                                  rows[:, :, :5].flatten(1)], 1))


def cnn_with_maxpool():
    """Overlapping max pooling windows (kernel 3, stride 2) and a non-overlapping one."""
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                         nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(6 * 16, 8), nn.ReLU(), nn.Linear(8, 4))


MODELS = {
    "mlp": lambda: small_mlp(),
    "cnn_maxpool": cnn_with_maxpool,
    "functional_relu": FunctionalReLU,
    "reused_relu": ReusedReLU,
    "inplace_relu": InplaceReLU,
    "residual": Residual,
    "pool_variants": PoolVariants,
    "sigmoid_tanh": SigmoidTanh,
    "other_activations": OtherActivations,
}
TABULAR = {"mlp", "sigmoid_tanh", "other_activations"}


def make_model(name, seed=0):
    torch.manual_seed(seed)
    return MODELS[name]().eval()


def make_data(name, n=4):
    generator = torch.Generator().manual_seed(3)
    shape = (n, 6) if name in TABULAR else (n, 3, 16, 16)
    x = torch.randn(shape, generator=generator)
    baseline = 0.5 * torch.randn(shape, generator=generator)
    return x, baseline


def target_delta(model, x, baseline, targets):
    with torch.no_grad():
        out, ref = model(x), model(baseline)
    return (out - ref).gather(1, targets[:, None])[:, 0]


def relative_errors(total, delta):
    return ((total - delta).abs() / delta.abs()).max().item()


# -- summation-to-delta -----------------------------------------------------------------------
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("name", list(MODELS))
def test_attributions_sum_to_output_difference(name, rule):
    model = make_model(name)
    x, baseline = make_data(name)
    targets = torch.arange(len(x)) % 3
    heatmaps = DeepLift(model, baseline=baseline, rule=rule, progress=False)(x, targets)
    delta = target_delta(model, x, baseline, targets)
    assert delta.abs().min() > 1e-3  # a meaningful relative check
    totals = heatmaps.sum(dim=tuple(range(1, heatmaps.ndim)))
    assert relative_errors(totals, delta) < 1e-4


@pytest.mark.parametrize("rule", RULES)
def test_deeplift_shap_sums_to_difference_from_background_mean(rule):
    model = make_model("residual")
    x, _ = make_data("residual", n=3)
    background = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    heatmaps = DeepLiftShap(model, background=background, rule=rule, progress=False)(x, 1)
    with torch.no_grad():
        delta = model(x)[:, 1] - model(background)[:, 1].mean()
    assert relative_errors(heatmaps.sum((1, 2)), delta) < 1e-4


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("name", ["sigmoid_tanh", "cnn_maxpool"])
def test_input_equal_to_its_baseline_gets_zero_attributions(name, rule):
    """Every difference is 0, so every multiplier falls back to its limit (a derivative)."""
    model = make_model(name)
    x, baseline = make_data(name)
    baseline[1] = x[1]
    heatmaps = DeepLift(model, baseline=baseline, rule=rule, progress=False)(x, 0)
    assert torch.isfinite(heatmaps).all()
    assert torch.equal(heatmaps[1], torch.zeros_like(heatmaps[1]))
    assert heatmaps[0].abs().sum() > 0


@pytest.mark.parametrize("rule", RULES)
def test_tiny_differences_fall_back_to_gradient_times_input(rule):
    """|x - x0| below the 1e-10 threshold everywhere: multipliers are derivatives at x0, so
    DeepLIFT is the gradient at the reference times the difference."""
    model = make_model("sigmoid_tanh")
    direction, _ = make_data("sigmoid_tanh")
    baseline = torch.zeros_like(direction)
    x = 1e-11 * direction.sign()  # representable next to 0, unlike next to 0.5
    leaf = baseline.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(model(leaf)[:, 2].sum(), leaf)
    got = DeepLift(model, baseline=baseline, rule=rule, progress=False)(x, 2)
    torch.testing.assert_close(got, gradient * (x - baseline), rtol=1e-4, atol=0)


# -- exact answers ----------------------------------------------------------------------------
@pytest.mark.parametrize("rule", RULES)
def test_linear_model_gives_delta_times_weight(rule):
    torch.manual_seed(0)
    tabular = nn.Linear(6, 3)
    x, baseline = make_data("mlp")
    targets = torch.tensor([0, 1, 2, 1])
    got = DeepLift(tabular, baseline=baseline, rule=rule, progress=False)(x, targets)
    assert torch.equal(got, (x - baseline) * tabular.weight.detach()[targets])

    images = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3))
    x, baseline = make_data("cnn_maxpool")
    got = DeepLift(images, baseline=baseline, rule=rule, progress=False)(x, targets)
    weight = images[1].weight.detach()[targets].view(x.shape)
    torch.testing.assert_close(got, ((x - baseline) * weight).sum(1), rtol=0, atol=1e-6)


def min_network():
    """o = i1 - relu(i1 - i2) = min(i1, i2), the example of the paper's Sec. 3.5.3."""

    class Min(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden, self.out = nn.Linear(2, 1), nn.Linear(2, 1)
            with torch.no_grad():
                for layer in (self.hidden, self.out):
                    layer.weight.copy_(torch.tensor([[1.0, -1.0]]))
                    layer.bias.zero_()

        def forward(self, x):
            return self.out(torch.cat([x[:, :1], F.relu(self.hidden(x))], 1))

    return Min().eval()


def test_min_network_by_hand():
    """Worked out from the paper's equations with x0 = 0. x = (3, 5): the hidden unit gets
    dz+ = 3, dz- = -5 and stays at 0; RevealCancel gives dh+ = 1/2 (3 - 0) + 1/2 (0 - 0) = 1.5,
    dh- = -1.5, so i1 gets 3 - 1.5 and i2 gets 1.5. x = (5, 3): dh+ = 2.5 + 1 = 3.5,
    dh- = 0 - 1.5, so i1 gets 5 - 3.5 and i2 gets 1.5. Rescale gives everything to one input."""
    x = torch.tensor([[3.0, 5.0], [5.0, 3.0]])
    reveal = DeepLift(min_network(), rule="reveal_cancel", progress=False)(x, 0)
    rescale = DeepLift(min_network(), rule="rescale", progress=False)(x, 0)
    torch.testing.assert_close(reveal, torch.tensor([[1.5, 1.5], [1.5, 1.5]]))
    torch.testing.assert_close(rescale, torch.tensor([[3.0, 0.0], [0.0, 3.0]]))


def reveal_cancel_reference(w1, b1, w2, x, x0, target):
    """Shrikumar et al. 2017, Sec. 3.5.1 and 3.5.3, for o = W2 relu(W1 x + b1) + b2, in numpy."""
    terms = w1 * (x - x0)[None, :]  # w_ji dx_i
    z0 = w1 @ x0 + b1
    dz_pos, dz_neg = terms.clip(min=0).sum(1), terms.clip(max=0).sum(1)

    def relu(v):
        return np.maximum(v, 0.0)

    dh_pos = 0.5 * (relu(z0 + dz_pos) - relu(z0)) + 0.5 * (relu(z0 + dz_neg + dz_pos)
                                                           - relu(z0 + dz_neg))
    dh_neg = 0.5 * (relu(z0 + dz_neg) - relu(z0)) + 0.5 * (relu(z0 + dz_pos + dz_neg)
                                                           - relu(z0 + dz_pos))
    with np.errstate(invalid="ignore", divide="ignore"):
        m_pos, m_neg = dh_pos / dz_pos, dh_neg / dz_neg
    multiplier = np.where(terms > 0, m_pos[:, None], np.where(terms < 0, m_neg[:, None], 0.0))
    return (w2[target][:, None] * multiplier * terms).sum(0)


def mlp_with_batch_norm():
    """Linear -> BatchNorm1d (eval, some negative scales) -> ReLU -> Linear."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].weight.uniform_(-1.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    return model.eval()


def fused_first_layer(model):
    """(W1, b1) of the affine map before the ReLU (batch norm folded into the linear layer)."""
    linear = model[0]
    weight, bias = linear.weight.detach().double(), linear.bias.detach().double()
    if isinstance(model[1], nn.BatchNorm1d):
        bn = model[1]
        scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
        weight = scale[:, None] * weight
        bias = scale * (bias - bn.running_mean.double()) + bn.bias.detach().double()
    return weight.numpy(), bias.numpy()


@pytest.mark.parametrize("build", [small_mlp, mlp_with_batch_norm])
def test_reveal_cancel_matches_paper_equations_on_mlp(build):
    """With batch norm, the parts must be those of the linear layer before it, carried through
    (not re-split by sign): the paper's split of the folded layer's terms ``s_j w_ji dx_i``."""
    model = build()
    x, baseline = make_data("mlp")
    targets = torch.tensor([0, 1, 2, 0])
    got = DeepLift(model, baseline=baseline, rule="reveal_cancel", progress=False)(x, targets)
    w1, b1 = fused_first_layer(model)
    w2 = model[-1].weight.detach().double().numpy()
    expected = np.stack([reveal_cancel_reference(w1, b1, w2, xi, x0i, int(t)) for xi, x0i, t in
                         zip(x.double().numpy(), baseline.double().numpy(), targets)])
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-5)
    rescale = DeepLift(model, baseline=baseline, rule="rescale", progress=False)(x, targets)
    assert not torch.allclose(rescale, got, atol=1e-3)  # the two rules do differ here


# -- agreement with Captum where it is right --------------------------------------------------
def captum_deeplift(model, x, baseline, targets):
    from captum.attr import DeepLift as CaptumDeepLift
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CaptumDeepLift(model).attribute(x, baseline, target=targets).detach()


@pytest.mark.parametrize("name", ["plain_cnn", "conv_maxpool", "sigmoid_tanh_modules"])
def test_rescale_agrees_with_captum_on_sequential_models(name):
    torch.manual_seed(0)
    model = {
        "plain_cnn": lambda: small_cnn(),
        # Captum's max-pool rule is right when no ReLU precedes the pooling (see below)
        "conv_maxpool": lambda: nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.MaxPool2d(2),
                                              nn.Flatten(), nn.Linear(6 * 64, 4)),
        "sigmoid_tanh_modules": lambda: nn.Sequential(nn.Linear(6, 16), nn.Sigmoid(),
                                                      nn.Linear(16, 16), nn.Tanh(),
                                                      nn.Linear(16, 3)),
    }[name]().eval()
    x, baseline = make_data("sigmoid_tanh" if name == "sigmoid_tanh_modules" else "cnn_maxpool")
    targets = torch.tensor([0, 1, 2, 1])
    ours = DeepLift(model, baseline=baseline, progress=False).attribute(x, targets)
    theirs = captum_deeplift(model, x, baseline, targets)
    correlation = np.corrcoef(ours.flatten().numpy(), theirs.flatten().numpy())[0, 1]
    assert correlation > 0.999
    torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-5)


def test_captum_misses_completeness_where_we_do_not():
    """Documents peer bugs (peers.md; Captum #1085/#1082 and #1276), measured with captum 0.9:
    with F.relu called functionally Captum falls back to the plain gradient, and with a ReLU
    before max pooling its max-pool rule uses one sample's gradient for the whole batch. If a
    Captum release fixes either, its error drops and this test must be revisited."""
    for model in (make_model("functional_relu"),
                  nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4),
                                nn.Flatten(), nn.Linear(6 * 16, 4)).eval()):
        x, baseline = make_data("cnn_maxpool")
        targets = torch.tensor([0, 1, 2, 3])
        delta = target_delta(model, x, baseline, targets)
        theirs = captum_deeplift(model, x, baseline, targets).sum((1, 2, 3))
        ours = DeepLift(model, baseline=baseline, progress=False)(x, targets).sum((1, 2))
        assert relative_errors(theirs, delta) > 0.05
        assert relative_errors(ours, delta) < 1e-4


# -- multi-baseline ---------------------------------------------------------------------------
@pytest.mark.parametrize("rule", RULES)
def test_deeplift_shap_is_the_mean_of_single_baseline_deeplift(rule):
    model = make_model("cnn_maxpool")
    x, _ = make_data("cnn_maxpool", n=3)
    background = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    targets = torch.tensor([2, 0, 1])
    shap = DeepLiftShap(model, background=background, rule=rule, batch_size=5,
                        progress=False)(x, targets)
    singles = [DeepLift(model, baseline=b[None], rule=rule, progress=False)(x, targets)
               for b in background]
    torch.testing.assert_close(shap, torch.stack(singles).mean(0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rule", RULES)
def test_batch_size_does_not_change_the_result(rule):
    model = make_model("residual")
    x, baseline = make_data("residual", n=5)
    one = DeepLift(model, baseline=baseline, rule=rule, batch_size=1, progress=False)(x, 1)
    many = DeepLift(model, baseline=baseline, rule=rule, batch_size=64, progress=False)(x, 1)
    torch.testing.assert_close(one, many, rtol=1e-5, atol=1e-6)


# -- contract ---------------------------------------------------------------------------------
def test_heatmaps_are_channel_sums_of_the_attributions():
    model = make_model("cnn_maxpool")
    x, baseline = make_data("cnn_maxpool")
    explainer = DeepLift(model, baseline=baseline, progress=False)
    heatmaps = explainer(x)  # targets=None: predicted classes
    assert heatmaps.shape == (4, 16, 16) and heatmaps.dtype == torch.float32
    targets = model(x).argmax(1)
    torch.testing.assert_close(heatmaps, explainer.attribute(x, targets).sum(1))


def test_model_and_inputs_are_left_untouched():
    model = make_model("residual")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, baseline = make_data("residual")
    x_copy = x.clone()
    DeepLift(model, baseline=baseline, rule="reveal_cancel", progress=False)(x, 0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m.training for m in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert torch.equal(x, x_copy)
    assert torch._C._len_torch_function_stack() == 0


def test_mode_is_removed_when_the_forward_raises():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            if torch.is_grad_enabled():  # predictions work, the DeepLIFT pass fails
                F.relu(x)
                raise RuntimeError("boom")
            return self.fc(x)

    x, _ = make_data("mlp")
    with pytest.raises(RuntimeError, match="boom"):
        DeepLift(Broken(), progress=False)(x)
    assert torch._C._len_torch_function_stack() == 0
    y = torch.tensor([-1.0, 2.0], requires_grad=True)
    (grad,) = torch.autograd.grad(F.relu(y).sum(), y)  # plain ReLU again
    assert torch.equal(grad, torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("rule", RULES)
def test_probabilities_sum_to_their_difference(rule):
    """Softmax has a rule (composites.softmax): a model returning probabilities conserves."""
    model = nn.Sequential(nn.Linear(6, 3), nn.Softmax(dim=1)).eval()
    x, baseline = make_data("mlp")
    targets = torch.tensor([0, 1, 2, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        heatmaps = DeepLift(model, baseline=baseline, rule=rule, progress=False)(x, targets)
    assert relative_errors(heatmaps.sum(1), target_delta(model, x, baseline, targets)) < 1e-4


def test_attention_without_a_rule_warns():
    """nn.MultiheadAttention with add_zero_attn has no rule: differentiated, with a warning."""

    class ZeroAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = nn.MultiheadAttention(2, 1, add_zero_attn=True, batch_first=True)
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            tokens = x.view(len(x), 3, 2)
            return self.fc(self.attention(tokens, tokens, tokens)[0].flatten(1))

    torch.manual_seed(0)
    x, _ = make_data("mlp")
    with pytest.warns(UserWarning, match="no rule for multi_head_attention_forward with "
                                         "add_zero_attn"):
        DeepLift(ZeroAttention().eval(), progress=False)(x, 0)


def test_bad_arguments_are_reported():
    model = small_mlp()
    with pytest.raises(ValueError, match="rule must be one of"):
        DeepLift(model, rule="gradient")
    with pytest.raises(TypeError, match="torch.nn.Module"):
        DeepLift(lambda a: a)
    with pytest.raises(ValueError, match="background must hold"):
        DeepLiftShap(model, background=torch.zeros(6))
    with pytest.raises(ValueError, match="sample shape"):
        DeepLiftShap(model, background=torch.zeros(3, 5), progress=False)(torch.zeros(2, 6))
    with pytest.raises(ValueError, match="does not broadcast"):
        DeepLift(model, baseline=torch.zeros(4), progress=False)(torch.zeros(2, 6))
    with pytest.raises(ValueError, match="baseline must be finite"):
        DeepLift(model, baseline=float("nan"), progress=False)(torch.zeros(2, 6))
    with pytest.raises(ValueError, match="background must be finite"):
        DeepLiftShap(model, background=torch.full((3, 6), float("inf")))
    assert "rule='reveal_cancel'" in repr(DeepLift(model, rule="reveal_cancel"))
