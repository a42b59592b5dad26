"""Tiny models shared by the tests (seeded, eval mode, CPU)."""
import pytest
import torch
from torch import nn


def small_cnn(in_channels: int = 3, n_classes: int = 5, seed: int = 0) -> nn.Module:
    """conv-relu-conv-relu-pool-linear; random weights, eval mode."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, n_classes),
    )
    return model.eval()


def small_mlp(n_features: int = 6, n_classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_features, 16), nn.ReLU(), nn.Linear(16, n_classes)).eval()


def linear_model(weights, bias=0.0) -> nn.Module:
    """One-output linear model ``w . x + bias`` with the given weights, eval mode."""
    layer = nn.Linear(len(weights), 1)
    with torch.no_grad():
        layer.weight[:] = torch.as_tensor(weights, dtype=torch.float32)
        layer.bias[:] = bias
    return layer.eval()


class Recorder:
    """A numpy callable model that keeps every batch it sees."""

    def __init__(self, function):
        self.function, self.batches = function, []

    def __call__(self, array):
        self.batches.append(array.copy())
        return self.function(array)


@pytest.fixture
def cnn():
    return small_cnn()


@pytest.fixture
def images():
    return torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def mlp():
    return small_mlp()


@pytest.fixture
def tabular():
    return torch.randn(5, 6, generator=torch.Generator().manual_seed(2))
