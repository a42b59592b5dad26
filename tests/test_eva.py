"""EVA (Fel et al., 2023) and its verified bounds: sound over 10 000 sampled points of the
ball on a CNN (batch norm, max and average pooling), an MLP and a residual model written with
functional and in-place calls; CROWN never looser than IBP (and tighter where it should be);
exact on a linear model; the attribution equal to the paper's formula written out for a linear
model; unsupported operations refused by name."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pellucid.explain import Eva
from pellucid.explain.eva import output_bounds
from pellucid.explain.eva.bounds import crown
from pellucid.explain.eva.verified import bounded_pass

EPSILON = 0.1
METHODS = ("ibp", "crown-ibp", "crown")


def cnn():
    torch.manual_seed(0)
    batch_norm = nn.BatchNorm2d(4)
    batch_norm.running_mean.uniform_(-0.2, 0.2)
    batch_norm.running_var.uniform_(0.5, 2.0)
    batch_norm.weight.data.uniform_(-1.5, 1.5)  # some negative scales
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), batch_norm, nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, 3)).double().eval()


def mlp():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 3)).double().eval()


class Residual(nn.Module):
    """Functional and in-place calls: ``F.conv2d``, ``relu_``, ``out += x``, ``torch.add``,
    ``x.relu()``, ``F.relu``, ``view``, products, sums and differences with constants."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.w1, self.w2 = (nn.Parameter(torch.randn(2, 2, 3, 3) * 0.5) for _ in range(2))
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        out = F.conv2d(x, self.w1, padding=1).relu_()
        out = F.conv2d(out, self.w2, padding=1)
        out += x
        out = torch.add(F.relu(out), x.relu()) * 0.5 - 0.1
        out = 0.3 - torch.add(torch.ones_like(out), out, alpha=-2.0)
        return self.fc(F.adaptive_avg_pool2d(out, 2).view(len(x), -1))


MODELS = {"cnn": (cnn, (1, 8, 8)), "mlp": (mlp, (6,)), "residual": (lambda: Residual().double(),
                                                                      (2, 4, 4))}


def sampled_outputs(model, x, n=10_000):
    """The model on ``n`` points of the L-infinity ball around each input: a fifth of them
    vertices (where the extremes of a piecewise-linear model often lie), the rest uniform."""
    generator = torch.Generator().manual_seed(3)
    noise = torch.rand(n, *x.shape, generator=generator, dtype=x.dtype) * 2 - 1
    noise[: n // 5] = noise[: n // 5].sign()
    points = (x[None] + EPSILON * noise).reshape(-1, *x.shape[1:])
    with torch.no_grad():
        return torch.cat([model(p) for p in points.split(5000)]).view(n, len(x), -1)


@pytest.mark.parametrize("name", MODELS)
def test_bounds_hold_on_10000_sampled_points(name):
    make, shape = MODELS[name]
    model = make()
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    outputs = sampled_outputs(model, x)
    widths = {}
    for method in METHODS:
        lower, upper = output_bounds(model, x - EPSILON, x + EPSILON, method=method)
        assert ((outputs >= lower - 1e-9) & (outputs <= upper + 1e-9)).all(), method
        widths[method] = upper - lower
    # CROWN alone (not intersected with IBP) is sound too
    mode, node = bounded_pass(model, x - EPSILON, x + EPSILON, "crown")
    least, most = crown(mode.nodes, node, torch.eye(3, dtype=x.dtype)[:, None].expand(3, 2, 3))
    assert ((outputs >= least.T - 1e-9) & (outputs <= most.T + 1e-9)).all()
    # never looser than IBP; on these models strictly tighter on average
    assert (widths["crown"] <= widths["crown-ibp"] + 1e-12).all()
    assert (widths["crown-ibp"] <= widths["ibp"] + 1e-12).all()
    assert widths["crown"].mean() < widths["ibp"].mean()
    # and the observed spread lies inside
    assert (outputs.amax(0) - outputs.amin(0) <= widths["crown"] + 1e-9).all()


def test_margin_bounds_hold_on_sampled_points():
    """The specification EVA uses, f_k - f_c, bounded by CROWN directly."""
    model = mlp()
    x = torch.rand(2, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    outputs = sampled_outputs(model, x)
    spec = torch.tensor([[1.0, -1.0, 0.0], [0.0, -1.0, 1.0]], dtype=torch.float64)
    margins = outputs @ spec.T
    for method in METHODS:
        lower, upper = output_bounds(model, x - EPSILON, x + EPSILON, method=method, spec=spec)
        assert ((margins >= lower - 1e-9) & (margins <= upper + 1e-9)).all(), method


def test_bounds_are_exact_on_a_linear_model():
    """f(x) = W x + b: the bounds are W x + b -/+ |W| eps (the output) and, for CROWN,
    (w_k - w_c) x -/+ |w_k - w_c| eps (a margin), each reached at a vertex of the ball."""
    torch.manual_seed(6)
    model = nn.Linear(5, 3).double()
    x = torch.rand(4, 5, dtype=torch.float64)
    weight, bias = model.weight.detach(), model.bias.detach()
    centre = x @ weight.T + bias
    spread = EPSILON * weight.abs().sum(1)
    for method in METHODS:
        lower, upper = output_bounds(model, x - EPSILON, x + EPSILON, method=method)
        torch.testing.assert_close(lower, centre - spread, rtol=0, atol=1e-12)
        torch.testing.assert_close(upper, centre + spread, rtol=0, atol=1e-12)
    vertex = x[:, None] + EPSILON * weight.sign()[None]  # maximises each output
    with torch.no_grad():
        reached = torch.stack([model(vertex[:, k])[:, k] for k in range(3)], 1)
    torch.testing.assert_close(reached, upper, rtol=0, atol=1e-12)
    spec = torch.tensor([[1.0, -1.0, 0.0]], dtype=torch.float64)
    difference = weight[0] - weight[1]
    _, upper = output_bounds(model, x - EPSILON, x + EPSILON, method="crown", spec=spec)
    expected = x @ difference + bias[0] - bias[1] + EPSILON * difference.abs().sum()
    torch.testing.assert_close(upper[:, 0], expected, rtol=0, atol=1e-12)


def test_eva_is_the_paper_s_formula_on_a_linear_model():
    """AO(x, B_u) = max_{k != c} (w_k - w_c) x + b_k - b_c + eps sum_{i not in u} |w_k,i -
    w_c,i| (exact for a linear model); EVA(x, u) = AO(x, B) - AO(x, B_u), written out here."""
    torch.manual_seed(7)
    model = nn.Linear(6, 4).eval()
    x = torch.rand(3, 6)
    groups = np.array([0, 0, 1, 2, 2, 2])
    heatmaps = Eva(model, epsilon=0.2, feature_mask=groups, bounds="crown",
                   progress=False).explain(x, [0, 2, 3])
    w, b = model.weight.detach().double().numpy(), model.bias.detach().double().numpy()
    for i, c in enumerate([0, 2, 3]):
        def overlap(fixed):
            return max((w[k] - w[c]) @ x[i].double().numpy() + b[k] - b[c]
                       + 0.2 * np.abs(w[k] - w[c])[~fixed].sum() for k in range(4) if k != c)
        full = overlap(np.zeros(6, bool))
        expected = [full - overlap(groups == groups[j]) for j in range(6)]
        np.testing.assert_allclose(heatmaps[i].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_eva_ranks_the_region_the_model_reads():
    """Only the centre pixels reach the logits: only their regions have importance."""
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3)).eval()
    with torch.no_grad():
        model[3].weight.view(3, 2, 4, 4)[..., :2, :] = 0  # the top half is never read
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(8))
    heatmaps = Eva(model, epsilon=0.1, feature_mask=torch.arange(16).view(4, 4),
                   progress=False).explain(x)
    assert (heatmaps[:, :2] == 0).all() and (heatmaps[:, 2:] > 0).all()


def test_batches_of_boxes_do_not_change_the_result():
    model = cnn().float()
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(9))
    for method in METHODS:
        one = Eva(model, feature_mask=np.arange(64).reshape(8, 8) // 16, bounds=method,
                  batch_size=1, progress=False).explain(x)
        many = Eva(model, feature_mask=np.arange(64).reshape(8, 8) // 16, bounds=method,
                   batch_size=50, progress=False).explain(x)
        torch.testing.assert_close(one, many, rtol=1e-4, atol=1e-5)


class Sigmoid(nn.Module):
    def forward(self, x):
        return torch.sigmoid(x @ torch.ones(6, 3))


@pytest.mark.parametrize("model, message", [
    (Sigmoid(), "cannot bound sigmoid"),
    (nn.Sequential(nn.Unflatten(1, (1, 2, 3)), nn.BatchNorm2d(1), nn.Flatten(),
                   nn.Linear(6, 3)).train(), "eval mode"),
    (nn.Sequential(nn.Linear(6, 4), nn.Dropout(0.5), nn.Linear(4, 3)).train(), "eval mode"),
    (nn.Sequential(nn.Linear(6, 4), nn.GELU(), nn.Linear(4, 3)), "cannot bound gelu"),
])
@pytest.mark.filterwarnings("ignore:Sequential is in training mode")  # said, then refused
def test_unsupported_operations_are_refused_by_name(model, message):
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NotImplementedError, match=message):
        Eva(model, progress=False, batch_size=4).explain(torch.rand(5, 6), 0)
    assert sum(calls) <= 1 + 4  # the target check, then the first batch of boxes only
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_modern_architectures_are_refused_by_name():
    from architectures import architecture_inputs, make_architecture
    for architecture, operation in (("convnext", "layer_norm"), ("mobilenet_v3", "hardswish"),
                                    ("vit_mha", "cat")):
        with pytest.raises(NotImplementedError, match=f"cannot bound {operation}"):
            Eva(make_architecture(architecture), progress=False).explain(
                architecture_inputs(1), 1)


def test_targets_must_be_classes_and_epsilon_positive():
    with pytest.raises(ValueError, match="targets must be classes"):
        Eva(mlp().float(), progress=False).explain(torch.rand(2, 6), lambda out: out[:, 0])
    for epsilon in (0, -1.0, float("inf"), "0.1", True):
        with pytest.raises(ValueError, match="epsilon"):
            Eva(mlp(), epsilon=epsilon)
    with pytest.raises(ValueError, match="bounds must be one of"):
        Eva(mlp(), bounds="deeppoly")
