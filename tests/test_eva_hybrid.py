"""EVA's hybrid estimator (Fel et al., 2023, Fig. 3): the box of g(B) estimated from vertices of
the perturbation set, h bounded from it. Exact box for a linear g (centre +- |W| epsilon written
out), hence equal to fully verified IBP Eva; inside g's IBP box otherwise and never above the
verified IBP overlap; an op the verified mode refuses works before the cut; bad arguments
refused before any pass; independent of batch_size."""
import pytest
import torch
from torch import nn

from pellucid.explain import Eva
from pellucid.explain.eva import output_bounds

EPSILON = 0.1
METHODS = ("ibp", "crown-ibp", "crown")


def mlp(first=None):
    """Linear(4, 6), [first], Linear(6, 6), ReLU, Linear(6, 3): split after the first layer."""
    torch.manual_seed(0)
    layers = [nn.Linear(4, 6)] + ([first] if first is not None else [nn.Identity()])
    return nn.Sequential(*layers, nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3)).double().eval()


def cnn():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1),
                         nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(12, 3)
                         ).double().eval()


class Skip(nn.Module):
    """``second(relu(first(x)) * scale + x)``: a skip connection around ``first``."""

    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Linear(4, 4).double(), nn.Linear(4, 3).double()

    def forward(self, x, scale=1.0):
        return self.second(self.first(x).relu() * scale + x)


def inputs(*shape, seed=2):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def overlaps(explainer, x, targets, monkeypatch):
    """The heatmaps and the overlap of every box (in Eva's order), read from ``_overlap``."""
    seen, original = [], explainer._overlap
    monkeypatch.setattr(explainer, "_overlap", lambda *args: seen.append(original(*args))
                        or seen[-1])
    heatmaps = explainer.explain(x, targets)
    monkeypatch.undo()
    return heatmaps, torch.cat(seen)


def test_vertex_box_is_exact_for_a_linear_g_and_hybrid_ibp_equals_verified(monkeypatch):
    model = mlp()
    x, targets = inputs(3, 4), [0, 1, 2]
    hybrid = Eva(model, epsilon=EPSILON, bounds="ibp", target_layer="0", nb_samples=200, seed=0)
    # the box of g(B) for g(x) = W x + b, region 1 fixed: centre W x + b, radius |W| eps free
    free = torch.ones(3, 4, dtype=torch.float64)
    free[:, 1] = 0
    weight, bias = model[0].weight.detach(), model[0].bias.detach()
    lower, upper = hybrid._empirical_box(x, EPSILON * free, seed=5)
    centre, radius = x @ weight.T + bias, (EPSILON * free) @ weight.abs().T
    torch.testing.assert_close(lower, centre - radius)
    torch.testing.assert_close(upper, centre + radius)
    verified = Eva(model, epsilon=EPSILON, bounds="ibp")
    maps, boxes = overlaps(hybrid, x, targets, monkeypatch)
    expected_maps, expected_boxes = overlaps(verified, x, targets, monkeypatch)
    assert boxes.shape == (3 * 5, 1)  # the ball and one box per column, for 3 inputs
    torch.testing.assert_close(boxes, expected_boxes)
    torch.testing.assert_close(maps, expected_maps)


@pytest.mark.parametrize("method", METHODS)
def test_empirical_box_inside_ibp_box_and_overlap_below_verified_ibp(method, monkeypatch):
    model = cnn()
    x = inputs(2, 1, 4, 4)
    hybrid = Eva(model, epsilon=EPSILON, bounds=method, target_layer="2", nb_samples=32,
                 feature_mask=torch.tensor([[0, 0, 1, 1]] * 2 + [[2, 2, 3, 3]] * 2), seed=0)
    radius = torch.full_like(x, EPSILON)
    radius[:, :, :2] = 0  # a box with some coordinates fixed
    lower, upper = hybrid._empirical_box(x, radius, seed=3)
    g = model[:3]
    ibp_lower, ibp_upper = output_bounds(g, x - radius, x + radius, method="ibp")
    assert (ibp_lower <= lower.flatten(1) + 1e-12).all()
    assert (upper.flatten(1) <= ibp_upper + 1e-12).all()
    assert (lower < upper).any()  # a box, not a point
    _, boxes = overlaps(hybrid, x, None, monkeypatch)
    _, verified = overlaps(Eva(model, epsilon=EPSILON, bounds="ibp", feature_mask=hybrid.
                               feature_mask), x, None, monkeypatch)
    assert (boxes <= verified + 1e-12).all()


def test_an_unsupported_op_before_the_cut_works_in_hybrid_mode_only():
    model = mlp(nn.GELU())
    x = inputs(2, 4)
    with pytest.raises(NotImplementedError, match="gelu"):
        Eva(model, epsilon=EPSILON).explain(x)
    hybrid = Eva(model, epsilon=EPSILON, target_layer=model[1], nb_samples=16)
    maps = hybrid.explain(x, [[0, 2]] * 2)
    assert maps.shape == (2, 2, 4) and torch.isfinite(maps).all()


def test_bad_arguments_are_refused_before_any_pass_and_the_model_is_unchanged():
    model = mlp(nn.GELU())
    calls = []
    handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
    with pytest.raises(ValueError, match="target_layer"):
        Eva(model, target_layer="nope")
    with pytest.raises(ValueError, match="nb_samples must be an integer >= 1, got 0"):
        Eva(model, target_layer="1", nb_samples=0)
    with pytest.raises(ValueError, match="skip connection"):
        Eva(Skip(), target_layer="first")
    assert not calls
    handle.remove()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    Eva(model, target_layer="1", nb_samples=8).explain(inputs(2, 4))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert [type(m) for m in model] == [nn.Linear, nn.GELU, nn.Linear, nn.ReLU, nn.Linear]
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                   for m in model.modules())


def test_forward_kwargs_are_refused_in_hybrid_mode():
    with pytest.raises(ValueError, match=r"forward_kwargs are not supported, got \['scale'\]"):
        Eva(Skip(), target_layer="second").explain(inputs(1, 4), 0,
                                                   forward_kwargs={"scale": 2.0})


def test_result_does_not_depend_on_batch_size():
    model = mlp(nn.GELU())
    x = inputs(3, 4)
    maps = [Eva(model, epsilon=EPSILON, target_layer="1", nb_samples=24, seed=7,
                batch_size=size).explain(x, [[0, 1]] * 3) for size in (1, 5, 1000)]
    torch.testing.assert_close(maps[0], maps[1])
    torch.testing.assert_close(maps[0], maps[2])
    other = Eva(model, epsilon=EPSILON, target_layer="1", nb_samples=24, seed=8).explain(
        x, [[0, 1]] * 3)
    assert not torch.equal(other, maps[0])  # the draws matter (GELU: not all vertices drawn)
