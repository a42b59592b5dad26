"""Batching, baselines, validation: the helpers every method relies on."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from pellucid._baselines import make_baseline
from pellucid._imaging import gaussian_blur
from pellucid._batching import iter_slices, score_generated
from pellucid._scorer import Scorer
from pellucid._validation import check_class_indices, check_heatmaps, check_inputs
from pellucid.models import as_model


def test_iter_slices_cover_range_exactly_once():
    covered = [i for s in iter_slices(23, 5) for i in range(23)[s]]
    assert covered == list(range(23))


def test_score_generated_never_builds_more_than_batch_size():
    sizes = []

    def make_inputs(s):
        sizes.append(s.stop - s.start)
        return torch.ones(s.stop - s.start, 3), torch.arange(s.start, s.stop) // 10

    x = torch.ones(10, 3)
    scorer = Scorer.bind(as_model(lambda a: a.sum(1)), 0, x, probabilities=False,
                         forward_kwargs=None, batch_size=16)
    out = score_generated(scorer, 100, make_inputs, batch_size=16)
    assert max(sizes) == 16 and sum(sizes) == 100
    torch.testing.assert_close(out, torch.full((100, 1), 3.0))


def test_gaussian_blur_is_the_rise_reference_blur():
    """RISE's gkern: scipy's sigma-5 Gaussian filter of an 11 x 11 Dirac, applied per channel
    with zero padding 5; written out here with scipy.ndimage.convolve."""
    dirac = np.zeros((11, 11))
    dirac[5, 5] = 1
    kernel = ndimage.gaussian_filter(dirac, 5)
    image = torch.rand(1, 2, 20, 17, generator=torch.Generator().manual_seed(0))
    ours = gaussian_blur(image, kernel_size=11, sigma=5.0)
    for c in range(2):
        ref = ndimage.convolve(image[0, c].numpy().astype(np.float64), kernel, mode="constant")
        np.testing.assert_allclose(ours[0, c].numpy(), ref, atol=1e-6)


def test_gaussian_blur_keeps_a_constant_interior_constant():
    image = torch.full((1, 1, 40, 40), 0.7)
    assert torch.allclose(gaussian_blur(image)[0, 0, 10:30, 10:30], torch.tensor(0.7), atol=1e-6)


@pytest.mark.parametrize("baseline", [0.0, 0.5, "mean", "blur"])
def test_make_baseline_shapes_and_values(baseline):
    x = torch.rand(2, 3, 12, 12)
    b = make_baseline(baseline, x)
    assert b.shape == x.shape
    if baseline == "mean":
        torch.testing.assert_close(b[:, :, 0, 0], x.mean(dim=(2, 3)))
    elif isinstance(baseline, float):
        assert torch.all(b == baseline)


def test_make_baseline_tensor_must_broadcast():
    with pytest.raises(ValueError, match="does not broadcast"):
        make_baseline(torch.zeros(5), torch.rand(2, 3))


@pytest.mark.parametrize("baseline", [0.5, "mean", "blur", torch.zeros(3, 1, 1),
                                      np.zeros((3, 1, 1))])
def test_make_baseline_is_on_the_device_of_the_inputs(baseline):
    x = torch.rand(2, 3, 12, 12, device="meta")  # a device other than the baseline's
    assert make_baseline(baseline, x).device == x.device


def test_tabular_blur_baseline_is_rejected():
    with pytest.raises(ValueError, match="needs images"):
        make_baseline("blur", torch.rand(2, 3))


@pytest.mark.parametrize("bad, message", [
    (torch.rand(3, 16, 16), "rank 3"),
    (torch.full((2, 4), float("nan")), "NaN/inf"),
    (torch.empty(0, 4), "no sample"),
    ("not an array", "torch.Tensor or numpy array"),
])
def test_check_inputs_messages(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        check_inputs(bad)


def test_check_inputs_accepts_numpy_without_copying_semantics_change():
    array = np.ones((2, 4), dtype=np.float64)
    x = check_inputs(array)
    assert x.dtype == torch.float32 and array.dtype == np.float64


@pytest.mark.parametrize("targets, message", [
    (5, r"\[0, 3\)"), ([0, 1], "expected 3, got 2"), ([0.5, 1.0, 2.0], "integers"),
    (True, "bool"), (np.zeros((3, 2), int), r"must have shape \(3,\)"),
])
def test_check_class_indices_messages(targets, message):
    with pytest.raises((ValueError, TypeError), match=message):
        check_class_indices("targets", targets, 3, 3)
    assert check_class_indices("targets", [[0, 2]] * 3, 3, 3, allow_columns=True).shape == (3, 2)


def test_check_heatmaps_shape_message():
    with pytest.raises(ValueError, match=r"\(2, 8, 8\).*got \(2, 7, 8\)"):
        check_heatmaps(torch.zeros(2, 7, 8), torch.zeros(2, 3, 8, 8))
