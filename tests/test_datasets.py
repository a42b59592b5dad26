"""Datasets: shapes, dtypes, ranges, seeded determinism, and the ground truth they carry."""
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn import datasets as skd

from pellucid import datasets


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a dataset loader tried to open a network connection")
    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_every_loader_works_offline(no_network):
    for name in datasets.LOADERS:
        data = datasets.load(name)
        assert isinstance(data, datasets.Dataset) and len(data.x_train) and len(data.x_test)
        assert data.x_train.dtype == data.x_test.dtype == torch.float32
        expected = torch.long if data.task == "classification" else torch.float32
        assert data.y_train.dtype == data.y_test.dtype == expected
        assert data.x_train.shape[1:] == data.x_test.shape[1:]
        assert len(data.y_train) == len(data.x_train) and len(data.y_test) == len(data.x_test)
        if data.task == "classification":
            assert set(data.y_train.tolist()) == set(range(data.n_classes))
    photos = datasets.load_photos(size=64)
    assert photos.images.shape == (2, 3, 64, 64) and photos.names == ["china", "flower"]
    assert 0 <= photos.images.min() and photos.images.max() <= 1


def test_unknown_name_and_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'.*digits"):
        datasets.load("mnist")
    with pytest.raises(ValueError, match="block_size must be an integer >= 8"):
        datasets.load_blockmnist(block_size=4)
    with pytest.raises(ValueError, match="digits must hold at least two"):
        datasets.load_blockmnist(digits=(3, 3))
    with pytest.raises(ValueError, match="noise must be a finite number >= 0"):
        datasets.load_additive(noise=-1)
    with pytest.raises(ValueError, match="test_fraction"):
        datasets.load_digits(test_fraction=1.5)


def test_digits_are_sklearn_digits_upsampled_and_split_by_seed():
    original = skd.load_digits()
    small = datasets.load_digits(size=8, seed=0)
    assert small.x_train.shape[1:] == (1, 8, 8)
    all_images = torch.cat([small.x_train, small.x_test])[:, 0]
    assert len(all_images) == 1797
    # every image is one of sklearn's, divided by 16 (bilinear resize to 8 is the identity)
    reference = torch.as_tensor(original.images, dtype=torch.float32) / 16
    flat_ref = {tuple(r.flatten().tolist()) for r in reference}
    assert all(tuple(x.flatten().tolist()) in flat_ref for x in all_images[:50])

    big = datasets.load_digits(size=32, seed=0)
    assert big.x_train.shape[1:] == (1, 32, 32)
    assert big.x_train.min() >= 0 and big.x_train.max() <= 1
    assert torch.equal(big.y_test, small.y_test)  # same seed, same split
    again = datasets.load_digits(size=32, seed=0)
    assert torch.equal(again.x_train, big.x_train) and torch.equal(again.y_train, big.y_train)
    other = datasets.load_digits(size=32, seed=1)
    assert not torch.equal(other.y_test, big.y_test)
    # stratified: the class shares of train and test agree within one sample per class
    counts_train = torch.bincount(big.y_train, minlength=10).float() / len(big.y_train)
    counts_test = torch.bincount(big.y_test, minlength=10).float() / len(big.y_test)
    assert (counts_train - counts_test).abs().max() < 0.01


def test_blockmnist_mask_marks_the_block_that_carries_the_label():
    b = 12
    data = datasets.load_blockmnist(n_train=200, n_test=100, block_size=b, digits=(3, 8), seed=3)
    assert data.x_train.shape == (200, 1, 2 * b, b) and data.masks_train.shape == (200, 2 * b, b)
    assert data.masks_test.dtype == torch.bool and data.class_names == ["3", "8"]
    sk = skd.load_digits()
    blocks = F.interpolate(torch.as_tensor(sk.images, dtype=torch.float32)[:, None] / 16,
                           size=(b, b), mode="bilinear", align_corners=False).clamp(0, 1)
    nulls = []
    for x, y, mask in zip(data.x_train, data.y_train, data.masks_train):
        top = bool(mask[0, 0])
        # the mask is exactly one whole block
        assert mask[:b].all() == top and (~mask[:b]).all() == (not top)
        assert mask[b:].all() == (not top)
        signal, null = (x[0, :b], x[0, b:]) if top else (x[0, b:], x[0, :b])
        # the signal block is an upsampled sklearn digit of the labelled class
        distances = (blocks[:, 0] - signal).abs().flatten(1).amax(1)
        assert distances.min() < 1e-6
        assert sk.target[int(distances.argmin())] == (3, 8)[int(y)]
        nulls.append(null)
    # the other block is the same null pattern in every image: it carries no label information
    assert all(torch.equal(null, nulls[0]) for null in nulls) and nulls[0].sum() > 0
    # position is independent of the label: every label appears at both positions
    for label in (0, 1):
        tops = data.masks_train[data.y_train == label][:, 0, 0]
        assert tops.any() and (~tops).any()


def test_blockmnist_splits_use_different_digit_images_and_are_seeded():
    data = datasets.load_blockmnist(block_size=8, seed=0)
    def signal_blocks(x, masks):
        return {tuple(xi[0][m].tolist()) for xi, m in zip(x, masks)}
    assert not signal_blocks(data.x_train, data.masks_train) & signal_blocks(data.x_test,
                                                                             data.masks_test)
    again = datasets.load_blockmnist(block_size=8, seed=0)
    assert torch.equal(again.x_test, data.x_test) and torch.equal(again.masks_test, data.masks_test)
    assert not torch.equal(datasets.load_blockmnist(block_size=8, seed=1).masks_test[:20],
                           data.masks_test[:20])


def test_suppressor_x2_is_unrelated_to_the_label_but_needed():
    data = datasets.load_suppressor(n_train=4000, n_test=100, noise=0.1, n_irrelevant=1, seed=0)
    x, y = data.x_train.numpy(), data.y_train.numpy()
    assert x.shape == (4000, 3) and data.feature_names[1] == "x2 (suppressor)"
    assert abs(np.corrcoef(x[:, 1], y)[0, 1]) < 0.05          # x2 alone says nothing
    assert abs(np.corrcoef(x[:, 0], y)[0, 1]) > 0.5           # x1 does
    assert (((x[:, 0] - x[:, 1]) > 0) == y).mean() > 0.99     # x1 - x2 separates the classes
    truth = data.true_attributions_test
    assert truth.shape == (100, 3) and (truth[:, 0] == 1).all() and (truth[:, 1:] == 0).all()


def test_additive_target_is_the_sum_of_the_true_attributions():
    data = datasets.load_additive(n_train=300, n_test=50, n_features=8, noise=0.0, seed=4)
    x, truth = data.x_test.double(), data.true_attributions_test.double()
    torch.testing.assert_close(truth.sum(1), data.y_test.double(), atol=1e-4, rtol=0)
    # the documented formula, written out here: w_i * g_i(x_i)
    shapes = {"linear": lambda v: v, "sine": lambda v: torch.sin(1.5 * v),
              "tanh": lambda v: torch.tanh(2 * v), "cubic": lambda v: v**3 / 4}
    weights = data.extras["weights"]
    expected = torch.stack([w * shapes[s](x[:, i]) for i, (w, s) in
                            enumerate(zip(weights, data.extras["shapes"]))], dim=1)
    torch.testing.assert_close(truth, expected, atol=1e-5, rtol=1e-5)
    assert weights[-1] == weights[-2] == 0 and all(w != 0 for w in weights[:6])
    assert data.task == "regression" and data.class_names is None
    noisy = datasets.load_additive(noise=0.5, seed=4)
    residual = noisy.y_train - noisy.true_attributions_train.sum(1)
    assert residual.std() == pytest.approx(0.5, rel=0.1)


@pytest.mark.parametrize("loader, n_features, n_classes", [
    (datasets.load_breast_cancer, 30, 2), (datasets.load_wine, 13, 3)])
def test_sklearn_tabular_sets_standardized_with_train_statistics(loader, n_features, n_classes):
    data = loader(seed=0)
    assert data.x_train.shape[1] == n_features and len(data.feature_names) == n_features
    assert data.n_classes == n_classes
    torch.testing.assert_close(data.x_train.mean(0), torch.zeros(n_features), atol=1e-5, rtol=0)
    torch.testing.assert_close(data.x_train.std(0, unbiased=False), torch.ones(n_features),
                               atol=1e-4, rtol=0)
    bunch = (skd.load_breast_cancer if n_features == 30 else skd.load_wine)()
    assert data.feature_names == list(bunch.feature_names)
    stats = data.extras["standardization"]
    raw = torch.as_tensor(np.asarray(stats["mean"])) + data.x_test.double() * torch.as_tensor(
        np.asarray(stats["scale"]))
    # un-standardized test rows are rows of the original table (float32 precision)
    distance = (raw[:20, None, :] - torch.as_tensor(bunch.data)[None]).abs() / (
        1 + torch.as_tensor(bunch.data).abs()[None])
    assert distance.amax(2).amin(1).max() < 1e-5
