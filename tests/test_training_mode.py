"""A model left in training mode: pellucid warns, never changes the mode, and puts back the
batch-norm running statistics that its forward passes update (state_dict unchanged)."""
import pytest
import torch
from torch import nn

from pellucid.explain import GradCAM
from pellucid.metrics import Deletion
from test_contract import EXPLAINERS, VIT_ONLY, make


def batchnorm_cnn_in_training_mode() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5),
    ).train()


def snapshot(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(before: dict, model: nn.Module) -> None:
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), f"{key} changed"
    assert model.training


@pytest.mark.parametrize("name", [name for name in EXPLAINERS if name not in VIT_ONLY])
def test_explainers_leave_batchnorm_statistics_as_they_were(name):
    """(The ViT attention explainers need attention layers: their batch-norm ViT is in
    tests/test_attention.py.)"""
    model, x = batchnorm_cnn_in_training_mode(), torch.rand(4, 3, 16, 16)
    before = snapshot(model)
    with pytest.warns(UserWarning, match="training mode"):
        if name == "Eva":  # batch statistics mix the boxes: no bound; refused, by name
            with pytest.raises(NotImplementedError, match="eval mode"):
                make(name, model, x).explain(x, 1)
        else:
            make(name, model, x).explain(x, 1)
    assert_unchanged(before, model)


def test_cam_and_metrics_leave_batchnorm_statistics_as_they_were():
    model, x = batchnorm_cnn_in_training_mode(), torch.rand(4, 3, 16, 16)
    before = snapshot(model)
    with pytest.warns(UserWarning, match="training mode"):
        heatmaps = GradCAM(model, progress=False)(x, 1)
        Deletion(model, progress=False)(x, heatmaps, 1)
    assert_unchanged(before, model)


@pytest.mark.filterwarnings("ignore:.*training mode")
def test_statistics_are_put_back_after_an_exception():
    model = batchnorm_cnn_in_training_mode()
    before = snapshot(model)
    explainer = make("Saliency", model)
    # both errors come after a forward pass (the number of classes is read from the model)
    with pytest.raises(ValueError, match="expected 2, got 3"):
        explainer.explain(torch.rand(2, 3, 16, 16), [0, 1, 2])
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        explainer.explain(torch.rand(2, 3, 16, 16), 9)
    assert_unchanged(before, model)


def test_the_training_mode_warning_comes_once_per_model():
    import warnings
    model = batchnorm_cnn_in_training_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            make("Saliency", model).explain(torch.rand(2, 3, 16, 16), 1)
        make("Saliency", batchnorm_cnn_in_training_mode()).explain(torch.rand(2, 3, 16, 16), 1)
    assert sum("training mode" in str(w.message) for w in caught) == 2


@pytest.mark.filterwarnings("ignore:.*training mode")
def test_craft_leaves_batchnorm_statistics_as_they_were():
    from pellucid.explain import Craft
    model = batchnorm_cnn_in_training_mode()  # g = conv-bn-relu (non-negative), h = the rest
    before = snapshot(model)
    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    craft = Craft(model, target_layer=3, n_concepts=3, nb_design=4, progress=False)
    craft.fit(images, targets=1)
    craft.transform(images)
    craft.concept_maps(images)
    craft.estimate_importance(images, targets=1)
    assert_unchanged(before, model)
