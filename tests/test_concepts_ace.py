"""ACE on images with two planted textures that drive the class.

Each 24x24 image is four 12x12 quadrants holding, in a random order, a red texture, a green
texture (both drive class 0: its logit is the mean of the red and green channels after a ReLU
and a pooling to 4x4) and two distractors (blue, and dark blue) that it ignores. The random
examples are generic images of other textures (blue, dark blue, grey). The two most important
clusters must be the red and the green texture, each with segment purity > 0.8 (the share of
its segments whose pixels are mostly that texture)."""
import numpy as np
import pytest
import torch
from torch import nn

from pellucid.explain.concepts import Ace
from pellucid.explain.concepts.ace import segment_image

COLOURS = {0: (1.0, 0.1, 0.1), 1: (0.1, 1.0, 0.1), 2: (0.1, 0.1, 1.0), 3: (0.1, 0.1, 0.3),
           4: (0.4, 0.4, 0.4)}


class Colours(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU(), nn.AvgPool2d(6))
        with torch.no_grad():
            self.features[0].weight.copy_(torch.eye(3)[:, :, None, None])
            self.features[0].bias.zero_()

    def forward(self, x):
        a = self.features(x).mean((2, 3))
        logit = a[:, 0] + a[:, 1]
        return torch.stack([logit, -logit], 1)


def textured(n, seed, textures=None):
    """Images and their texture map (N, H, W): quadrants hold textures 0..3 in random order
    (or ``textures`` drawn at random)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 3, 24, 24), dtype=np.float32)
    truth = np.zeros((n, 24, 24), dtype=np.int64)
    for i in range(n):
        order = rng.permutation(4) if textures is None else rng.choice(textures, 4)
        for quadrant, texture in enumerate(order):
            rows = slice(12 * (quadrant // 2), 12 * (quadrant // 2) + 12)
            cols = slice(12 * (quadrant % 2), 12 * (quadrant % 2) + 12)
            colour = np.array(COLOURS[texture])[:, None, None]
            x[i, :, rows, cols] = colour * rng.uniform(0.7, 1.0, (1, 12, 12))
            truth[i, rows, cols] = texture
    return torch.from_numpy(x), truth


def test_the_two_most_important_clusters_are_the_planted_textures():
    images, truth = textured(12, 0)
    random_examples, _ = textured(40, 1, textures=[2, 3, 4])   # generic: no planted texture
    ace = Ace(Colours().eval(), target_layer="features", n_segments=(4, 9), n_clusters=6,
              max_segments=20, min_images=0.5, n_runs=10, seed=0, progress=False)
    result = ace(images, 0, random_examples=random_examples)
    found = []
    for cluster in result.clusters[:2]:
        members = np.flatnonzero(result.labels == cluster)
        dominant = [np.bincount(truth[result.image_index[m]][result.masks[m].numpy()],
                                minlength=4).argmax() for m in members]
        texture = np.bincount(dominant, minlength=4).argmax()
        purity = np.mean(np.array(dominant) == texture)
        found.append((int(texture), float(purity)))
    print("ACE top clusters (texture, purity):", found, "scores", result.scores.round(3),
          "significant", result.significant)
    assert sorted(texture for texture, _ in found) == [0, 1]
    assert all(purity > 0.8 for _, purity in found)
    assert result.scores[:2].min() > 0.9 > 0.1 > result.scores[2:].max()
    assert result.patches.shape[1:] == (3, 24, 24)


def test_segment_image_is_the_box_filled_outside_and_resized():
    image = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:6, 4] = True
    mask[5, 4:8] = True                                     # an L: box rows 2..5, cols 4..7
    expected = torch.full((3, 4, 4), 0.25)
    expected[:, :, 0] = image[:, 2:6, 4]
    expected[:, 3, :] = image[:, 5, 4:8]
    resized = torch.nn.functional.interpolate(expected[None], size=(8, 8), mode="bilinear",
                                              align_corners=False)[0]
    torch.testing.assert_close(segment_image(image, mask, 0.25), resized)
    images, _ = textured(2, 0)
    ace = Ace(Colours().eval(), target_layer="features", n_segments=(4,), progress=False)
    patches, index, masks = ace.segments(images)
    assert len(patches) == len(index) == len(masks) == 8    # SLIC finds the 4 quadrants
    for patch, i, segment in zip(patches, index, masks):
        torch.testing.assert_close(patch, segment_image(images[i], segment, 117.5 / 255))


def test_clear_errors():
    images, _ = textured(4, 0)
    ace = Ace(Colours().eval(), target_layer="features", max_segments=20, progress=False)
    with pytest.raises(ValueError, match=">= 2 \\* max_segments = 40"):
        ace(images, 0, random_examples=images)
    with pytest.raises(ValueError, match="images"):
        ace(images[:, :, 0, 0], 0, random_examples=torch.rand(40, 3))
