"""Output selectors end to end: segmentation, regression, several classes at once, class
differences, tuple/dict outputs, callables; each against an analytic answer or an identity."""
import numpy as np
import pytest
import torch
from torch import nn

from conftest import small_cnn
from pellucid.explain import (DeepLift, GradCAM, IntegratedGradients, Occlusion, Rise,
                              SobolAttribution)
from pellucid.metrics import Deletion
from pellucid.selectors import (ClassDifference, ClassScore, OutputElement, RegressionOutput,
                                SegmentationScore, as_selector)


def tiny_segmenter(classes=3):
    """conv3x3 (3 -> 4) - ReLU - conv1x1 (4 -> classes): logits (N, classes, H, W)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(4, classes, 1)).eval()


def region_mask(height=12, width=12):
    mask = torch.zeros(height, width)
    mask[2:7, 3:9] = 1
    return mask


def segmentation_score(model, x, class_index, mask):
    with torch.no_grad():
        return (model(x)[:, class_index] * mask).sum((1, 2))


def test_segmentation_with_integrated_gradients_sums_to_the_region_score():
    model, mask = tiny_segmenter(), region_mask()
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    selector = SegmentationScore(class_index=1, mask=mask)
    heatmaps = IntegratedGradients(model, steps=128, progress=False)(x, selector)
    expected = (segmentation_score(model, x, 1, mask)
                - segmentation_score(model, torch.zeros_like(x), 1, mask))
    torch.testing.assert_close(heatmaps.sum((1, 2)), expected, rtol=5e-3, atol=1e-4)
    # the 3x3 receptive field: pixels two or more away from the region get nothing
    far = torch.ones(12, 12, dtype=torch.bool)
    far[1:8, 2:10] = False
    assert heatmaps[:, far].abs().max() == 0


def test_segmentation_with_gradcam_is_the_formula_written_out():
    """Grad-CAM of the ReLU layer for sum_{mask} y_c: the gradient at every position is
    W2[c] * mask, so w_k = W2[c, k] * mean(mask) and the map is ReLU(sum_k w_k A_k)."""
    model, mask = tiny_segmenter(), region_mask()
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    cams = GradCAM(model, target_layer="1", normalize=False, progress=False)(
        x, SegmentationScore(2, mask))
    with torch.no_grad():
        activations = model[1](model[0](x))
    weights = model[2].weight[2, :, 0, 0] * mask.mean()
    expected = torch.relu(torch.einsum("k,nkhw->nhw", weights, activations))
    torch.testing.assert_close(cams, expected.detach(), rtol=1e-5, atol=1e-6)


def test_segmentation_with_rise_on_the_predicted_region():
    """With mask=None the region is where the model predicts the class on the original input.
    The score is the sum of the region's 25 bright pixels, so RISE's expected saliency is
    p * 25 everywhere plus up to (1 - p) inside the region (less with smooth masks): inside it
    must stand clearly above far from it (measured: 3.0 above at 1000 masks)."""
    model = tiny_segmenter(classes=2)
    with torch.no_grad():  # class 1 wins where the input's first channel is bright
        model[0].weight.zero_()
        model[0].bias.zero_()
        model[0].weight[0, 0, 1, 1] = 1.0
        model[2].weight.zero_()
        model[2].bias.copy_(torch.tensor([0.5, 0.0]))
        model[2].weight[1, 0] = 1.0
    x = torch.zeros(1, 3, 12, 12)
    x[0, 0, 1:6, 1:6] = 1.0  # the predicted class-1 region
    selector = SegmentationScore(class_index=1)
    bound = selector.bind(_context(model, x))
    torch.testing.assert_close(bound._bound[1][0], (x[0, 0] > 0.5).float())
    saliency = Rise(model, nb_samples=1000, grid_size=4, probabilities=False, seed=0,
                    progress=False)(x, selector)
    assert saliency[0, 1:6, 1:6].mean() > saliency[0, 8:, 8:].mean() + 1.5


def _context(model, x):
    from pellucid.selectors import BindContext
    with torch.no_grad():
        return BindContext(len(x), model(x[:1]),
                           lambda reduce: reduce(model(x), torch.arange(len(x))))


def test_segmentation_mask_of_the_wrong_shape_raises_before_the_explanation():
    model = tiny_segmenter()
    x = torch.rand(2, 3, 12, 12)
    with pytest.raises(ValueError, match=r"mask must have shape \(12, 12\)"):
        Rise(model, nb_samples=10, probabilities=False, progress=False)(
            x, SegmentationScore(0, torch.ones(5, 5)))
    with pytest.raises(ValueError, match=r"SegmentationScore needs outputs \(N, K, H, W\)"):
        Rise(small_cnn(), nb_samples=10, progress=False)(torch.rand(2, 3, 16, 16),
                                                         SegmentationScore(0))


class RegressionMLP(nn.Module):
    """Returns (N,): one regression output per input."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, x):
        return self.net(x)[:, 0]


def test_regression_output_with_occlusion_is_the_drop_of_each_feature():
    model = RegressionMLP().eval()
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(4))
    heatmaps = Occlusion(model, baseline=0.0, progress=False)(x, RegressionOutput())
    with torch.no_grad():
        expected = torch.stack([model(x) - model(x * (torch.arange(5) != i)) for i in range(5)],
                               dim=1)
    torch.testing.assert_close(heatmaps, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(Occlusion(model, progress=False)(x), heatmaps)  # the default
    with pytest.raises(ValueError, match=r"output has shape \(1,\).*probabilities=False"):
        Occlusion(model, probabilities=True, progress=False)(x, RegressionOutput())


def test_regression_output_with_integrated_gradients_is_complete():
    model = RegressionMLP().eval()
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(5))
    heatmaps = IntegratedGradients(model, steps=64, progress=False)(x, RegressionOutput(0))
    with torch.no_grad():
        expected = model(x) - model(torch.zeros_like(x))
    torch.testing.assert_close(heatmaps.sum(1), expected, rtol=2e-3, atol=1e-5)
    with pytest.raises(ValueError, match=r"RegressionOutput index must be class indices in "
                                         r"\[0, 1\)"):
        IntegratedGradients(model, progress=False)(x, RegressionOutput(1))


def test_all_ten_classes_from_one_rise_call_cost_the_passes_of_one():
    model = small_cnn(n_classes=10)
    rows = []
    model.register_forward_pre_hook(lambda module, args: rows.append(len(args[0])))
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    rise = Rise(model, nb_samples=200, grid_size=4, batch_size=50, progress=False)
    every_class = rise(x, np.tile(np.arange(10), (3, 1)))
    passes_for_ten, rows_for_ten = len(rows), sum(rows)
    rows.clear()
    single = [rise(x, k) for k in range(10)]
    assert every_class.shape == (3, 10, 16, 16)
    # the same forward passes (and rows) as one class: the first input's shape check + masks
    assert (passes_for_ten, rows_for_ten) == (len(rows) // 10, sum(rows) // 10)
    assert rows_for_ten == 1 + 3 * 200
    for k in range(10):
        torch.testing.assert_close(every_class[:, k], single[k], rtol=1e-5, atol=1e-7)


def test_several_classes_per_input_for_sobol_and_their_indices():
    model = small_cnn()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    sobol = SobolAttribution(model, nb_design=8, grid_size=4, progress=False)
    targets = np.array([[0, 4], [3, 1]])
    indices = sobol.indices(x, targets)
    assert indices.total.shape == (2, 2, 4, 4)
    for j in range(2):
        torch.testing.assert_close(indices.total[:, j], sobol.indices(x, targets[:, j]).total,
                                   rtol=1e-4, atol=1e-6)


def test_class_difference_is_the_difference_of_two_class_scores():
    model = small_cnn()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    explainer = IntegratedGradients(model, steps=16, progress=False)
    difference = explainer(x, ClassDifference(positive=3, negative=[0, 1]))
    torch.testing.assert_close(difference, explainer(x, 3) - explainer(x, [0, 1]),
                               rtol=1e-4, atol=1e-6)


class Structured(nn.Module):
    """``small_cnn`` whose logits come back through ``arrange`` (a dict, a tuple, ...), as
    detection and multi-task models return them."""

    def __init__(self, arrange):
        super().__init__()
        self.body, self.arrange = small_cnn(), arrange

    def forward(self, x):
        return self.arrange(self.body(x))


def test_output_element_reads_one_element_of_a_dict_output():
    model = Structured(lambda logits: {"logits": logits,
                                       "confidence": logits.max(1).values}).eval()
    body = model.body
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    explainer = IntegratedGradients(model, steps=16, progress=False)
    torch.testing.assert_close(explainer(x, OutputElement("logits", 2)),
                               IntegratedGradients(body, steps=16, progress=False)(x, 2))
    torch.testing.assert_close(explainer(x, OutputElement("logits")),  # the predicted class
                               IntegratedGradients(body, steps=16, progress=False)(x))
    confidence = explainer(x, OutputElement("confidence", RegressionOutput()))
    assert confidence.shape == (2, 16, 16)
    with pytest.raises(ValueError, match="no element 'boxes'"):
        explainer(x, OutputElement("boxes"))
    with pytest.warns(UserWarning, match=r"first element \('logits'\).*OutputElement"):
        first = explainer(x, 0)  # a plain target reads the first element
    torch.testing.assert_close(first, explainer(x, OutputElement("logits", 0)))


def test_a_tuple_output_is_read_by_every_kind_of_method():
    """Black-box (RISE), gradient (IG) and DeepLIFT passes all read the first element of a
    tuple output, the same as a model returning that element alone."""
    model = Structured(lambda logits: (logits, 2 * logits)).eval()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(12))
    for make in (lambda m: Rise(m, nb_samples=16, probabilities=False, progress=False),
                 lambda m: IntegratedGradients(m, steps=8, progress=False),
                 lambda m: DeepLift(m, progress=False)):
        with pytest.warns(UserWarning, match="first element"):
            heatmaps = make(model)(x, 1)
        torch.testing.assert_close(heatmaps, make(model.body)(x, 1))


def test_a_callable_and_metrics_read_the_same_selector():
    model = small_cnn()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(10))
    heatmaps = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(11))
    deletion = Deletion(model, step=32, probabilities=False, progress=False)
    by_function = deletion(x, heatmaps, lambda outputs: outputs[:, 1] - outputs[:, 2])
    by_selector = deletion(x, heatmaps, ClassDifference(1, 2))
    np.testing.assert_allclose(by_function.curves, by_selector.curves, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        logits = model(x)
    np.testing.assert_allclose(by_selector.curves[:, 0], (logits[:, 1] - logits[:, 2]).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_as_selector_and_the_user_selector_is_never_changed():
    user = ClassScore([0, 1])
    Rise(small_cnn(), nb_samples=8, progress=False)(torch.rand(2, 3, 16, 16), user)
    assert user._bound is None  # binding returned a new object
    assert as_selector(user) is user and isinstance(as_selector(None), ClassScore)
    with pytest.raises(TypeError, match="targets must be None, an int"):
        as_selector(1.5)


def test_a_binary_segmentation_region_is_where_the_logit_is_positive():
    """One output channel: mask=None is the region the model predicts as foreground (logit > 0),
    the same as passing that mask."""
    model = nn.Conv2d(3, 1, 1).eval()
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(-1.5)
    x = torch.zeros(2, 3, 6, 6)
    x[:, :, :2, :2] = 1.0  # foreground: logit 1.5 there, -1.5 elsewhere
    explainer = Occlusion(model, patch_size=1, progress=False)
    predicted = explainer(x, SegmentationScore(0))
    torch.testing.assert_close(predicted, explainer(x, SegmentationScore(0, (x[0, 0] > 0))))
    assert predicted[:, 2:, :].abs().max() == 0 and predicted[:, :2, :2].min() > 0


def test_named_tuples_and_unbatched_elements_in_the_outputs():
    """A namedtuple output with a scalar auxiliary loss and a None (as Inception returns): every
    kind of method reads the chosen element; the rest is carried along untouched."""
    from collections import namedtuple

    Output = namedtuple("Output", "logits aux_loss extra")

    model = Structured(lambda logits: Output(logits, logits.mean(), None)).eval()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(13))
    for make in (lambda m: Rise(m, nb_samples=16, progress=False),
                 lambda m: IntegratedGradients(m, steps=8, progress=False),
                 lambda m: DeepLift(m, progress=False)):
        torch.testing.assert_close(make(model)(x, OutputElement("logits")),
                                   make(model.body)(x))
