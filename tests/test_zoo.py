"""Model zoo: accuracy reached, cache hits without training, keys, determinism, no global RNG."""
import json
from pathlib import Path

import pytest
import torch

from pellucid import zoo
from pellucid._files import atomic_write


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PELLUCID_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def forbid_training(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("train_model was called although the model is cached")
    monkeypatch.setattr(zoo, "train_model", fail)


def test_blockmnist_cnn_above_95_percent_and_cached(cache, monkeypatch):
    model, info = zoo.get_model("blockmnist_cnn")
    assert not model.training and not info["from_cache"]
    assert info["dataset"] == "blockmnist" and info["target_layer"] == "relu2"
    data = zoo.load_dataset("blockmnist_cnn")
    with torch.no_grad():  # accuracy recomputed here, not read from info
        accuracy = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
    assert accuracy > 0.95 and accuracy == pytest.approx(info["test_accuracy"])
    files = sorted(p.name for p in (cache / "zoo").iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".pt")
    state = torch.load(cache / "zoo" / files[1], weights_only=True)
    assert set(state) == set(model.state_dict())
    stored = json.loads((cache / "zoo" / files[0]).read_text())
    assert stored["test_accuracy"] == info["test_accuracy"]

    forbid_training(monkeypatch)
    again, info_again = zoo.get_model("blockmnist_cnn")
    assert info_again["from_cache"] and info_again["test_accuracy"] == info["test_accuracy"]
    assert not again.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name])


def test_digits_cnn_above_90_percent():
    model, info = zoo.get_model("digits_cnn")
    data = zoo.load_dataset("digits_cnn")
    assert data.x_test.shape[1:] == (1, 32, 32)
    with torch.no_grad():
        accuracy = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
    assert accuracy > 0.90 and accuracy == pytest.approx(info["test_accuracy"])


def test_key_depends_on_hyperparameters_and_seed(cache, monkeypatch):
    _, first = zoo.get_model("wine_mlp", epochs=5)
    _, other_seed = zoo.get_model("wine_mlp", epochs=5, seed=1)
    _, other_epochs = zoo.get_model("wine_mlp", epochs=6)
    keys = {first["cache_key"], other_seed["cache_key"], other_epochs["cache_key"]}
    assert len(keys) == 3 and not any(i["from_cache"] for i in (first, other_seed, other_epochs))
    assert other_epochs["hyperparameters"]["epochs"] == 6 and other_seed["seed"] == 1
    forbid_training(monkeypatch)
    assert zoo.get_model("wine_mlp", epochs=5, seed=1)[1]["from_cache"]


def test_same_seed_same_weights_and_global_rng_untouched(tmp_path):
    state = torch.get_rng_state()
    a, _ = zoo.get_model("suppressor_linear", epochs=3, cache_dir=tmp_path / "a")
    b, _ = zoo.get_model("suppressor_linear", epochs=3, cache_dir=tmp_path / "b")
    c, _ = zoo.get_model("suppressor_linear", epochs=3, seed=5, cache_dir=tmp_path / "c")
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.fc.weight, b.fc.weight) and not torch.equal(a.fc.weight, c.fc.weight)


def test_regression_model_records_r2():
    model, info = zoo.get_model("additive_mlp", epochs=40)
    assert info["task"] == "regression" and "test_accuracy" not in info
    data = zoo.load_dataset("additive_mlp")
    with torch.no_grad():
        prediction = model(data.x_test)[:, 0]
    residual = ((prediction - data.y_test) ** 2).sum()
    r2 = 1 - residual / ((data.y_test - data.y_test.mean()) ** 2).sum()
    assert info["test_r2"] == pytest.approx(r2.item(), abs=1e-5) and r2 > 0.8


def test_unreadable_cache_file_is_retrained_with_a_warning(cache):
    _, info = zoo.get_model("wine_mlp", epochs=2)
    with open(info["path"], "wb") as handle:
        handle.write(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable cache file"):
        _, again = zoo.get_model("wine_mlp", epochs=2)
    assert not again["from_cache"]
    assert zoo.get_model("wine_mlp", epochs=2)[1]["from_cache"]


def test_errors_name_what_is_allowed():
    with pytest.raises(ValueError, match="unknown model 'resnet'.*blockmnist_cnn"):
        zoo.get_model("resnet")
    with pytest.raises(ValueError, match="unknown hyperparameter 'depth'.*epochs"):
        zoo.get_model("wine_mlp", depth=3)
    assert set(zoo.available_models()) >= {"digits_cnn", "blockmnist_cnn", "breast_cancer_mlp",
                                           "wine_mlp", "additive_mlp", "suppressor_linear"}


def test_atomic_write_leaves_the_whole_file_or_nothing(tmp_path):
    import numpy as np

    target = tmp_path / "new" / "scores.npz"
    atomic_write(target, lambda p: np.savez(p, scores=np.arange(3)))
    with np.load(target) as saved:  # np.savez added no second ".npz" to the temporary name
        assert saved["scores"].tolist() == [0, 1, 2]

    def interrupted(path):
        path.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "new" / "other.pt", interrupted)
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["scores.npz"]


def test_a_cache_file_that_is_json_but_not_an_object_is_retrained(tmp_path):
    _, info = zoo.get_model("suppressor_linear", cache_dir=tmp_path)
    json_path = Path(info["path"]).with_suffix(".json")
    json_path.write_text("[1, 2, 3]")
    with pytest.warns(UserWarning, match="not an object"):
        _, again = zoo.get_model("suppressor_linear", cache_dir=tmp_path)
    assert not again["from_cache"]


def test_a_read_only_cache_warns_and_returns_the_trained_model(tmp_path, monkeypatch):
    import pellucid.zoo as zoo_module

    def read_only(path, write):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(zoo_module, "atomic_write", read_only)
    with pytest.warns(UserWarning, match="could not cache"):
        model, info = zoo.get_model("suppressor_linear", cache_dir=tmp_path)
    assert not info["from_cache"] and not model.training


def test_fit_from_scratch_is_seeded_leaves_the_global_rng_and_learns():
    from torch import nn

    from pellucid.zoo import fit_from_scratch
    x = torch.rand(64, 3, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > x[:, 1]).long()
    state = torch.random.get_rng_state()
    models = [fit_from_scratch(lambda: nn.Linear(3, 2), x, y, epochs=e, lr=0.1, batch_size=b)
              for e, b in ((150, None), (150, None), (20, 16))]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(models[0].weight, models[1].weight) and not models[0].training
    for model in (models[0], models[2]):
        assert (model(x).argmax(1) == y).float().mean() > 0.9
