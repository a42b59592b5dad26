"""Pointing game, relevance mass and relevance rank accuracy on masks with known answers."""
import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt

from pellucid.metrics import PointingGame, RelevanceMass, RelevanceRankAccuracy


def score(metric, heatmaps, masks):
    """The metric contract: ``metric(inputs, heatmaps, masks=masks)``; localization metrics read
    only the inputs' shape (images (N, 3, H, W) for (N, H, W) heatmaps, else tabular)."""
    heatmaps = torch.as_tensor(np.asarray(heatmaps))
    shape = ((len(heatmaps), 3, *heatmaps.shape[-2:]) if heatmaps.ndim >= 3
             else tuple(heatmaps.shape))
    return metric(torch.zeros(shape), heatmaps, masks=masks)


def random_box_masks(n, size, generator):
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n):
        top, left = torch.randint(0, size - 8, (2,), generator=generator).tolist()
        height, width = torch.randint(3, 9, (2,), generator=generator).tolist()
        masks[i, top:top + height, left:left + width] = True
    return masks


@pytest.mark.parametrize("metric", [PointingGame(), RelevanceMass(), RelevanceRankAccuracy()])
def test_a_heatmap_equal_to_the_mask_scores_one(metric):
    masks = random_box_masks(20, 32, torch.Generator().manual_seed(0))
    result = score(metric, masks.float(), masks)
    np.testing.assert_array_equal(result.scores, 1.0)
    assert result.higher_is_better


def test_pointing_game_of_random_heatmaps_is_the_tolerated_area_fraction():
    g = torch.Generator().manual_seed(1)
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[4:12, 18:28] = True
    masks = mask.expand(4000, 32, 32)
    heatmaps = torch.rand(4000, 32, 32, generator=g)
    exact = score(PointingGame(tolerance=0), heatmaps, masks)
    assert abs(exact.mean - mask.float().mean().item()) < 0.02  # area fraction 0.078
    default = score(PointingGame(), heatmaps, masks)
    tolerance = round(15 * 32 / 224)
    assert default.details["tolerance"] == tolerance == 2
    dilated = distance_transform_edt(~mask.numpy()) <= tolerance
    print(f"pointing game, random heatmaps: {exact.mean:.3f} (area {mask.float().mean():.3f}), "
          f"tolerance 2 px: {default.mean:.3f} (dilated area {dilated.mean():.3f})")
    assert abs(default.mean - dilated.mean()) < 0.025
    full_size = score(PointingGame(), torch.rand(1, 224, 224), torch.ones(1, 224, 224))
    assert full_size.details["tolerance"] == 15


def test_pointing_game_tolerance_is_euclidean_distance_to_the_mask():
    masks = torch.zeros(3, 20, 20)
    masks[:, 10, 10] = 1
    heatmaps = torch.zeros(3, 20, 20)
    heatmaps[0, 13, 14] = 1  # distance 5
    heatmaps[1, 14, 14] = 1  # distance sqrt(32) > 5
    heatmaps[2, 10, 15] = 1  # distance 5
    tolerant = score(PointingGame(tolerance=5), heatmaps, masks)
    np.testing.assert_array_equal(tolerant.scores, [1, 0, 1])


def test_relevance_mass_and_rank_accuracy_by_hand():
    heatmaps = torch.tensor([[3.0, -2.0, 1.0, 0.0, 4.0, 2.0]])
    masks = torch.tensor([[1, 1, 0, 0, 0, 1]])
    mass = score(RelevanceMass(), heatmaps, masks).scores[0]
    assert mass == pytest.approx((3 + 2) / (3 + 1 + 4 + 2))
    # mask size 3; top 3 features: 4.0 (out), 3.0 (in), 2.0 (in)
    assert score(RelevanceRankAccuracy(), heatmaps, masks).scores[0] == pytest.approx(2 / 3)


def test_random_heatmaps_score_about_the_mask_area():
    g = torch.Generator().manual_seed(2)
    masks = random_box_masks(500, 24, g)
    heatmaps = torch.rand(500, 24, 24, generator=g)
    area = masks.float().mean().item()
    assert abs(score(RelevanceMass(), heatmaps, masks).mean - area) < 0.02
    assert abs(score(RelevanceRankAccuracy(), heatmaps, masks).mean - area) < 0.02


def test_empty_masks_and_no_positive_relevance_score_nan():
    masks = torch.zeros(2, 8, 8)
    masks[1, 2:4, 2:4] = 1
    heatmaps = -torch.rand(2, 8, 8)
    for metric in (PointingGame(), RelevanceMass(), RelevanceRankAccuracy()):
        assert np.isnan(score(metric, heatmaps, masks).scores[0])
    assert np.isnan(score(RelevanceMass(), heatmaps, masks).scores[1])


def test_channel_heatmaps_are_summed_and_bad_inputs_raise():
    masks = torch.zeros(2, 8, 8)
    masks[:, :2, :2] = 1
    heatmaps = torch.zeros(2, 3, 8, 8)
    heatmaps[:, 1, 0, 0] = 1  # in the mask
    heatmaps[:, 0, 6, 6], heatmaps[:, 2, 6, 6] = 2, -2  # opposite signs: sum 0 (|.| or max: 2)
    heatmaps[:, 0, 5, 7], heatmaps[:, 1, 5, 7] = 1.5, -1  # sum 0.5
    np.testing.assert_array_equal(score(PointingGame(), heatmaps, masks).scores, [1, 1])
    np.testing.assert_allclose(score(RelevanceMass(), heatmaps, masks).scores, 1 / 1.5)
    with pytest.raises(ValueError, match=r"masks must have the heatmaps' shape \(2, 8, 8\)"):
        score(PointingGame(), torch.rand(2, 8, 8), torch.ones(2, 8, 7))
    with pytest.raises(ValueError, match="PointingGame needs images"):
        score(PointingGame(), torch.rand(2, 8), torch.ones(2, 8))
    bad = torch.rand(2, 8, 8)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        score(RelevanceMass(), bad, masks)
    with pytest.raises(ValueError, match="tolerance"):
        PointingGame(tolerance=-1)
    assert score(RelevanceRankAccuracy(), np.random.rand(3, 5), np.eye(3, 5)).scores.shape == (3,)


def test_pointing_game_ties_score_the_share_of_tied_maxima_that_hit():
    """An Occlusion-like map with a 4 x 4 block of equal maxima, half of it inside the mask:
    0.5 whichever way the image is flipped (the first maximum in row-major order would make it
    0 or 1 by orientation alone)."""
    heatmaps = torch.zeros(1, 12, 12)
    heatmaps[0, 4:8, 4:8] = 1.0
    masks = torch.zeros(1, 12, 12, dtype=torch.bool)
    masks[0, 4:8, 6:] = True  # the right half of the block
    scores = [score(PointingGame(tolerance=0), h, m).scores[0]
              for h, m in [(heatmaps, masks), (heatmaps.flip(2), masks.flip(2)),
                           (heatmaps.flip(1), masks.flip(1))]]
    assert scores == [0.5, 0.5, 0.5]
    assert score(PointingGame(tolerance=2), heatmaps, masks).scores[0] == 1.0  # all near it
