"""ROAD: noisy linear imputation (constant images, the neighbour equations, sparsity) and the
MoRF/LeRF curves."""
import numpy as np
import pytest
import scipy.sparse
import torch
from torch import nn

import pellucid.metrics.road as road
from pellucid.metrics import Road
from pellucid.metrics.road import noisy_linear_impute


def test_imputation_of_a_constant_image_is_that_constant():
    images = torch.full((3, 2, 9, 7), 0.37)
    keep = torch.rand(3, 9, 7, generator=torch.Generator().manual_seed(0)) > 0.6
    exact = noisy_linear_impute(images, keep, noise_level=0.0)
    torch.testing.assert_close(exact, images, atol=1e-6, rtol=0)
    noisy = noisy_linear_impute(images, keep, noise_level=0.01,
                                generator=torch.Generator().manual_seed(1))
    removed = ~keep[:, None].expand_as(images)
    assert torch.equal(noisy[~removed], images[~removed])  # kept pixels untouched
    residual = noisy[removed] - 0.37
    assert residual.abs().max() < 0.06 and 0.007 < residual.std() < 0.013


def test_every_imputed_pixel_is_the_weighted_mean_of_its_neighbours():
    g = torch.Generator().manual_seed(2)
    images = torch.rand(2, 3, 6, 5, generator=g)
    keep = torch.rand(2, 6, 5, generator=g) > 0.5
    out = noisy_linear_impute(images, keep, noise_level=0.0).double()
    weights = {(dr, dc): (1 / 12 if dr and dc else 1 / 6)
               for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc}
    for b in range(2):
        for r in range(6):
            for c in range(5):
                if keep[b, r, c]:
                    assert torch.equal(out[b, :, r, c], images[b, :, r, c].double())
                    continue
                total, weighted = 0.0, torch.zeros(3, dtype=torch.float64)
                for (dr, dc), w in weights.items():
                    if 0 <= r + dr < 6 and 0 <= c + dc < 5:
                        total += w
                        weighted += w * out[b, :, r + dr, c + dc]
                torch.testing.assert_close(out[b, :, r, c], weighted / total, atol=1e-5, rtol=0)


def test_the_system_is_solved_sparse(monkeypatch):
    seen = []

    def spy(matrix, rhs):
        seen.append((matrix, rhs.shape))
        return scipy.sparse.linalg.spsolve(matrix, rhs)

    monkeypatch.setattr(road, "spsolve", spy)
    images = torch.rand(4, 3, 16, 16)
    keep = torch.rand(4, 16, 16, generator=torch.Generator().manual_seed(3)) > 0.5
    noisy_linear_impute(images, keep, noise_level=0.0)
    (matrix, rhs_shape), = seen  # one block system for the whole batch
    n = int((~keep).sum())
    assert scipy.sparse.issparse(matrix) and matrix.shape == (n, n) and rhs_shape == (n, 3)
    assert n < matrix.nnz <= 9 * n


def linear_binary_image_model(weights):
    model = nn.Sequential(nn.Flatten(), nn.Linear(weights.numel(), 2, bias=False))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[1] = weights.reshape(-1)
    return model.eval()


def test_morf_falls_faster_than_lerf_for_exact_attributions():
    g = torch.Generator().manual_seed(4)
    weights = torch.randn(1, 12, 12, generator=g)
    images = torch.rand(16, 1, 12, 12, generator=g) - 0.5
    model = linear_binary_image_model(weights * 4)
    exact, random = (weights * images)[:, 0], torch.rand(16, 12, 12, generator=g)
    metric = Road(model, fractions=(0.1, 0.3, 0.5, 0.7, 0.9), progress=False)
    good, bad = metric(images, exact, targets=1), metric(images, random, targets=1)
    print(f"ROAD LeRF-MoRF area: exact {good.mean:.3f}, random {bad.mean:.3f}")
    assert good.mean > bad.mean + 0.2 and good.higher_is_better
    assert (good.details["morf_auc"] < good.details["lerf_auc"]).mean() > 0.9
    np.testing.assert_allclose(good.scores, good.details["lerf_auc"] - good.details["morf_auc"])
    assert good.curves.shape == (16, 5) and good.details["morf_accuracy"].shape == (5,)
    morf_only = Road(model, fractions=(0.1, 0.3, 0.5, 0.7, 0.9), order="morf",
                     progress=False)(images, exact, targets=1)
    assert not morf_only.higher_is_better
    np.testing.assert_allclose(morf_only.scores, good.details["morf_auc"], atol=0.05)


def test_without_noise_the_batch_size_does_not_matter(cnn, images):
    heatmaps = torch.rand(4, 16, 16, generator=torch.Generator().manual_seed(5))
    small = Road(cnn, noise_level=0.0, batch_size=1, progress=False)(images, heatmaps)
    large = Road(cnn, noise_level=0.0, batch_size=100, progress=False)(images, heatmaps)
    np.testing.assert_allclose(small.curves, large.curves, atol=1e-6)
    seeded = [Road(cnn, seed=7, progress=False)(images, heatmaps).scores for _ in range(2)]
    np.testing.assert_array_equal(*seeded)


def test_bad_arguments_raise(cnn, images, mlp, tabular):
    with pytest.raises(ValueError, match="fractions"):
        Road(cnn, fractions=(0.5, 0.2))
    with pytest.raises(ValueError, match="fractions"):
        Road(cnn, fractions=(0.5, 1.0))
    with pytest.raises(ValueError, match="order"):
        Road(cnn, order="up")
    with pytest.raises(ValueError, match="Road needs images"):
        Road(mlp)(tabular, torch.rand(5, 6))
    with pytest.raises(ValueError, match="heatmaps must have shape"):
        Road(cnn)(images, torch.rand(4, 16))


def impute_by_hand(image, removed):
    """Linear imputation written out densely: for every removed pixel p,
    sum_q w_q (x_p - x_q) = 0 over its neighbours q inside the image (1/6 direct, 1/12
    diagonal), removed neighbours unknown too; one dense solve per channel."""
    channels, height, width = image.shape
    unknown = [(r, c) for r in range(height) for c in range(width) if removed[r, c]]
    index = {p: i for i, p in enumerate(unknown)}
    a, b = np.zeros((len(unknown), len(unknown))), np.zeros((len(unknown), channels))
    for (r, c), i in index.items():
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                q = (r + dr, c + dc)
                if (dr or dc) and 0 <= q[0] < height and 0 <= q[1] < width:
                    w = 1 / 12 if dr and dc else 1 / 6
                    a[i, i] += w
                    if q in index:
                        a[i, index[q]] -= w
                    else:
                        b[i] += w * image[:, q[0], q[1]]
    out = image.copy()
    if unknown:
        solution = np.linalg.solve(a, b)
        for (r, c), i in index.items():
            out[:, r, c] = solution[i]
    return out


def test_morf_and_lerf_curves_match_a_hand_written_imputation():
    """noise_level=0: at fraction p, MoRF removes the round(p H W) pixels with the highest
    heatmap values, LeRF the round(p H W) lowest (channels together); each curve point is the
    target probability of the hand-imputed image."""
    g = torch.Generator().manual_seed(8)
    images = torch.rand(3, 2, 6, 6, generator=g)
    heatmaps = torch.randn(3, 6, 6, generator=g)  # no ties
    model = nn.Sequential(nn.Flatten(), nn.Linear(72, 3)).eval()
    with torch.no_grad():
        model[1].weight.copy_(3 * torch.randn(3, 72, generator=g))
        model[1].bias.zero_()
    fractions = (0.1, 0.3, 0.5, 0.7)
    result = Road(model, fractions=fractions, noise_level=0.0, progress=False)(
        images, heatmaps, targets=[0, 1, 2])
    for i in range(3):
        order = np.argsort(-heatmaps[i].flatten().numpy())  # most relevant first
        for j, fraction in enumerate(fractions):
            count = round(fraction * 36)
            for name, removed_pixels in (("morf", order[:count]), ("lerf", order[36 - count:])):
                removed = np.zeros(36, dtype=bool)
                removed[removed_pixels] = True
                imputed = impute_by_hand(images[i].double().numpy(), removed.reshape(6, 6))
                with torch.no_grad():
                    logits = model(torch.from_numpy(imputed).float()[None])
                expected = torch.softmax(logits, 1)[0, i].item()
                assert result.details[f"{name}_curves"][i, j] == pytest.approx(expected,
                                                                               abs=1e-5)
