"""Bounded memory of the group methods, checked deterministically (no RSS): whatever
``nb_samples``, a call allocates the same three buffers (one batch of perturbed inputs; the
full-size masks and coalitions of a block of rows) and the model sees every pass in the same
storage; the blocks do not change the result."""
import pytest
import torch

from pellucid import features
from pellucid.explain import KernelShap, Lime, ShapleyValueSampling
from pellucid.explain.groups import coalitions
from pellucid.explain.perturbation.base import _Buffer


class PointerModel(torch.nn.Module):
    """Pooled linear scores that note the storage address and size of every batch."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3 * 4 * 4, 4)
        with torch.no_grad():
            self.linear.weight.copy_(torch.linspace(-1, 1, 4 * 48).view(4, 48).sin())
            self.linear.bias.zero_()
        self.seen: list[tuple[int, int]] = []

    def forward(self, x):
        self.seen.append((x.data_ptr(), len(x)))
        return self.linear(torch.nn.functional.avg_pool2d(x, 4).flatten(1))


@pytest.mark.parametrize("cls", [KernelShap, Lime, ShapleyValueSampling])
def test_buffers_do_not_grow_with_nb_samples(cls, monkeypatch):
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    mask = features.grid((16, 16), grid_size=4)
    batch_size = 8
    allocated: list[int] = []
    allocate = _Buffer.allocate

    def counting(size, dtype, device):
        allocated.append(size * torch.empty(0, dtype=dtype).element_size())
        return allocate(size, dtype, device)
    monkeypatch.setattr(_Buffer, "allocate", staticmethod(counting))
    unblocked = cls(PointerModel(), nb_samples=40, feature_mask=mask, batch_size=batch_size,
                    progress=False)(image, 0)
    block = 3                            # rows of full-size masks at a time
    monkeypatch.setattr(coalitions, "_MASK_BYTES", block * 16 * 16 * 4)
    runs = []
    for nb_samples in (10, 40):  # ShapleyValueSampling: permutations, 15 passes each
        model = PointerModel()
        allocated.clear()
        heatmaps = cls(model, nb_samples=nb_samples, feature_mask=mask, batch_size=batch_size,
                       progress=False)(image, 0)
        passes = model.seen[1:]          # the first is the check of the targets on one input
        assert len(passes) >= nb_samples // batch_size
        assert all(size <= batch_size for _, size in passes)
        assert len({pointer for pointer, _ in passes}) == 1   # one buffer, reused every pass
        runs.append(list(allocated))
    torch.testing.assert_close(heatmaps, unblocked, rtol=0, atol=0)
    # float32: a batch of perturbed inputs, then the masks and the coalitions of a block
    assert runs[0] == runs[1] == [batch_size * 3 * 16 * 16 * 4, block * 16 * 4,
                                  block * 16 * 16 * 4]
