"""Feature groups (pellucid.features): grids, scikit-image superpixels called directly as the
reference, tabular column groups, the relabelling of any integer mask, and how the group
explainers take a mask (checked before any pass, relabelling invisible, callables)."""
import functools

import numpy as np
import pytest
import skimage.segmentation
import torch

from conftest import small_cnn
from pellucid import features
from pellucid.explain import FeatureAblation, KernelShap, Lime, ShapleyValueSampling

GROUP_METHODS = [FeatureAblation, KernelShap, Lime, ShapleyValueSampling]


def test_grid_cells_cover_the_image_and_differ_by_at_most_one_pixel():
    mask = features.grid((10, 7), grid_size=3)
    assert mask.shape == (10, 7) and mask.dtype == torch.long
    assert mask.unique().tolist() == list(range(9))
    rows = [(mask == label).any(1).sum().item() for label in (0, 3, 6)]
    cols = [(mask == label).any(0).sum().item() for label in (0, 1, 2)]
    assert sum(rows) == 10 and max(rows) - min(rows) <= 1
    assert sum(cols) == 7 and max(cols) - min(cols) <= 1
    assert features.grid((4, 4), grid_size=(2, 9)).unique().numel() == 8  # at most one per pixel
    with pytest.raises(ValueError, match="grid_size"):
        features.grid((4, 4), grid_size=0)


def scaled_channels_last(image):
    image = image.double()
    image = (image - image.min()) / (image.max() - image.min())
    return image.permute(1, 2, 0).numpy()


def test_superpixels_are_scikit_image_s_on_each_image():
    images = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0)) * 4 - 2
    masks = features.slic(images, n_segments=12, compactness=5.0)
    assert masks.shape == (2, 24, 24) and masks.dtype == torch.long
    for image, mask in zip(images, masks):
        expected = skimage.segmentation.slic(scaled_channels_last(image), n_segments=12,
                                             compactness=5.0, start_label=0)
        np.testing.assert_array_equal(mask.numpy(), expected)
    felzenszwalb = features.felzenszwalb(images, scale=50.0)
    np.testing.assert_array_equal(felzenszwalb[1].numpy(), skimage.segmentation.felzenszwalb(
        scaled_channels_last(images[1]), scale=50.0, sigma=0.8, min_size=20))
    quickshift = features.quickshift(images[0])  # one image (C, H, W)
    np.testing.assert_array_equal(quickshift[0].numpy(), skimage.segmentation.quickshift(
        scaled_channels_last(images[0]), kernel_size=4, max_dist=10.0, ratio=0.5))


@pytest.mark.parametrize("segment", [features.slic, features.felzenszwalb, features.quickshift])
def test_superpixels_of_one_channel_images(segment):
    masks = segment(np.random.default_rng(0).random((2, 1, 20, 20)))
    assert masks.shape == (2, 20, 20) and masks.min() >= 0
    with pytest.raises(ValueError, match=r"images \(N, C, H, W\)"):
        segment(np.zeros((20, 20)))


def test_column_groups_from_indices_and_names():
    mask = features.column_groups([[0, 2], [3]], 5)
    assert mask.tolist() == [0, 2, 0, 1, 3]  # columns 1 and 4 are groups of their own
    names = ["age", "bmi", "bp", "s1"]
    mask = features.column_groups({"body": ["age", "bmi"], "blood": ["bp", "s1"]}, names)
    assert mask.tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="two groups"):
        features.column_groups([[0, 1], [1]], 3)
    with pytest.raises(ValueError, match="unknown column 'weight'"):
        features.column_groups([["weight"]], names)
    with pytest.raises(ValueError, match="out of range"):
        features.column_groups([[5]], 3)


def test_any_integer_labels_are_relabelled_per_input_in_order():
    x = torch.rand(2, 3, 2, 2)
    mask = torch.tensor([[[9, -2], [9, 5]], [[1, 1], [1, 1]]])
    relabelled = features.check_feature_mask(mask, x)
    assert relabelled.tolist() == [[[2, 0], [2, 1]], [[0, 0], [0, 0]]]
    shared = features.check_feature_mask(np.array([[4, 4], [0, 7]]), x)  # (H, W) for all
    assert shared.shape == (2, 2, 2) and shared[1].tolist() == [[1, 1], [0, 2]]
    assert features.check_feature_mask([3, 3, 8], torch.rand(4, 3)).tolist() == [[0, 0, 1]] * 4


@pytest.mark.parametrize("mask, error, message", [
    (torch.zeros(3, 3, dtype=torch.long), ValueError, r"\(H, W\) or \(N, H, W\).*\(3, 3\)"),
    (torch.zeros(16, 16), TypeError, "integer group labels"),
    (torch.zeros(16, 16, dtype=torch.bool), TypeError, "integer group labels"),
    ("slic", TypeError, "integer tensor or array"),
])
def test_a_bad_feature_mask_raises_before_any_pass(mask, error, message):
    model = small_cnn()
    passes = []
    model.register_forward_pre_hook(lambda module, args: passes.append(len(args[0])))
    for cls in GROUP_METHODS:
        with pytest.raises(error, match=message):
            cls(model, feature_mask=mask, progress=False)(torch.rand(2, 3, 16, 16))
    assert passes == []


def test_relabelling_changes_nothing_and_callables_make_masks_per_call(images):
    model = small_cnn()
    mask = features.grid((16, 16), grid_size=3)
    expected = FeatureAblation(model, feature_mask=mask, progress=False)(images, 1)
    scattered = mask * 7 - 20  # the same groups with other labels
    torch.testing.assert_close(
        FeatureAblation(model, feature_mask=scattered, progress=False)(images, 1), expected)
    make = functools.partial(features.grid, grid_size=3)
    result = FeatureAblation(model, feature_mask=lambda x: make(x.shape[2:]),
                             progress=False).explain_groups(images, 1)
    torch.testing.assert_close(result.heatmaps, expected)
    assert torch.equal(result.feature_mask[0], mask)
    slic = functools.partial(features.slic, n_segments=6)
    result = FeatureAblation(model, feature_mask=slic, progress=False).explain_groups(images, 1)
    assert torch.equal(result.feature_mask, features.slic(images, n_segments=6))
    # each pixel carries its group's value; groups past an input's own count are NaN
    for i in range(len(images)):
        counts = int(result.feature_mask[i].max()) + 1
        torch.testing.assert_close(result.heatmaps[i], result.values[i][result.feature_mask[i]])
        assert result.values[i, counts:].isnan().all() and not result.values[i, :counts].isnan(
        ).any()


def test_default_groups_are_a_grid_for_images_and_columns_for_tabular(images, tabular):
    model = small_cnn()
    result = FeatureAblation(model, progress=False).explain_groups(images, 0)
    assert torch.equal(result.feature_mask[0], features.grid((16, 16), grid_size=8))
    mlp_result = FeatureAblation(lambda a: a.sum(1, keepdims=True), progress=False
                                 ).explain_groups(tabular, 0)
    assert mlp_result.feature_mask.tolist() == [list(range(6))] * len(tabular)
