"""CRAFT's recursion on a two-level planted model.

Images hold 4x4 patches of one pure colour each: A (red), B (green) or C (blue). The earlier
layer sees the three colours apart (``early = relu(identity 1x1 conv)``); the later layer sees
``relu(A + B)`` and ``C``: its concept "A or B" is the union of two sub-concepts visible at the
earlier layer. The recursion must find that concept at the later layer and split it, on its
active crops, into the directions of A and B at the earlier layer (cosine > 0.95)."""
import numpy as np
import pytest
import torch
from torch import nn

from pellucid.explain.concepts import concept_tree
from test_concepts_factorization import match_concepts


class TwoLevel(nn.Module):
    def __init__(self):
        super().__init__()
        self.early = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU())
        self.late = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU())
        self.head = nn.Linear(2, 2)
        with torch.no_grad():
            self.early[0].weight.copy_(torch.eye(3)[:, :, None, None])
            union = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])     # A or B; C
            self.late[0].weight.copy_(union[:, :, None, None])
            self.head.weight.copy_(torch.tensor([[1.0, 0.5], [-1.0, -0.5]]))
            for layer in (self.early[0], self.late[0], self.head):
                layer.bias.zero_()

    def forward(self, x):
        return self.head(self.late(self.early(x)).mean((2, 3)))


def colour_patches(n=48, size=16, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 3, size, size), dtype=np.float32)
    for i in range(n):
        colour = i % 3                                        # one colour per image
        for _ in range(3):
            top, left = rng.integers(0, size - 4, 2)
            x[i, colour, top:top + 4, left:left + 4] = rng.uniform(0.5, 1.0)
    return torch.from_numpy(x)


def test_recursion_splits_the_union_into_its_two_sub_concepts():
    model = TwoLevel().eval()
    tree = concept_tree(model, colour_patches(), 0, layers=["late", "early"], n_concepts=2,
                        active_fraction=0.3, patch_size=0.5, crops_per_image=8,
                        importance="occlusion", progress=False)
    assert len(tree) == 2 and all(len(node.children) == 2 for node in tree)
    late = torch.stack([node.vector for node in tree]).double().numpy()
    order, cosines = match_concepts(late, np.eye(2))           # "A or B" and "C" at `late`
    assert cosines.min() > 0.95
    union = tree[order[0]]
    sub = torch.stack([child.vector for child in union.children]).double().numpy()
    _, sub_cosines = match_concepts(sub, np.eye(3)[:2])         # A and B at `early`
    print("recursion: late concepts cosines", cosines.round(4), "sub-concepts of A-or-B",
          sub_cosines.round(4), "importances", [round(c.importance, 3) for c in union.children])
    assert sub_cosines.min() > 0.95
    # importances per level: the class logit is A + B + 0.5 C (means), so removing "A or B"
    # matters more than removing C; each sub-concept carries a positive share
    assert union.importance > tree[order[1]].importance > 0
    assert all(child.importance > 0 for child in union.children)
    assert union.children[0].crops.shape[1:] == (3, 16, 16)


def test_clear_errors():
    model = TwoLevel().eval()
    with pytest.raises(ValueError, match="2 counts for 1 layers"):
        concept_tree(model, colour_patches(6), 0, layers=["late"], n_concepts=[2, 2])
    with pytest.raises(ValueError, match="active_fraction"):
        concept_tree(model, colour_patches(6), 0, layers=["late"], active_fraction=1.5)
    with pytest.raises(ValueError, match="at least one layer"):
        concept_tree(model, colour_patches(6), 0, layers=[])


def test_tree_figure_has_one_box_per_node():
    from types import SimpleNamespace

    from pellucid.plots import concept_tree_figure
    leaf = lambda i: SimpleNamespace(layer="early", index=i, importance=0.1 * i, children=[])  # noqa
    tree = [SimpleNamespace(layer="late", index=0, importance=0.7, children=[leaf(0), leaf(1)]),
            SimpleNamespace(layer="late", index=1, importance=0.2, children=[leaf(2)])]
    axes = concept_tree_figure(tree).axes[0]
    texts = sorted(t.get_text() for t in axes.texts)
    assert len(texts) == 5 and "late #0\n0.7" in texts and "early #2\n0.2" in texts
    positions = {t.get_text(): t.get_position() for t in axes.texts}
    assert positions["late #0\n0.7"][1] == 0.5          # between its two leaves (rows 0, 1)
    assert positions["late #1\n0.2"][1] == 2.0
    assert len(axes.lines) == 3                        # one link per child
