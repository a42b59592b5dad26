"""Tiny models trained on the fly on :mod:`pellucid.datasets` and cached on disk.

``model, info = get_model("blockmnist_cnn")`` trains a small CNN in seconds on a CPU the first
time (Adam, fixed seed, no change to the global RNG state or thread settings) and stores its
weights (``torch.save(state_dict)``) and ``info`` (JSON) in the cache directory: ``cache_dir``,
else the ``PELLUCID_CACHE`` environment variable, else ``~/.cache/pellucid``. The file name is
keyed by the model name, every hyperparameter and the seed, so another setting never reads a
stale file. Later calls load the weights with ``torch.load(weights_only=True)``.

``info`` holds the dataset name and parameters (``pellucid.datasets.load(info["dataset"],
**info["dataset_params"])`` gives the data back; :func:`load_dataset` does it by model name),
the hyperparameters, the seed, ``test_accuracy`` (classifiers) or ``test_r2`` (regressors),
``train_seconds``, ``target_layer`` (the last conv feature map of CNNs, for CAM methods) and
``from_cache``.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ._files import atomic_write
from .datasets import Dataset, load

CACHE_FORMAT = 1


def build_cnn(input_shape: tuple[int, ...], n_outputs: int, channels: int) -> nn.Module:
    """conv-relu-pool, conv-relu-pool, flatten, linear. Module names:
    ``conv1 relu1 pool1 conv2 relu2 pool2 flatten fc`` (``relu2`` is the last feature map at
    half the input resolution: the natural CAM layer)."""
    c, h, w = input_shape
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(c, channels, 3, padding=1), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(channels, 2 * channels, 3, padding=1), relu2=nn.ReLU(),
        pool2=nn.MaxPool2d(2), flatten=nn.Flatten(),
        fc=nn.Linear(2 * channels * (h // 4) * (w // 4), n_outputs),
    ))


def build_mlp(input_shape: tuple[int, ...], n_outputs: int, hidden: int) -> nn.Module:
    """linear-relu-linear-relu-linear. Module names: ``fc1 relu1 fc2 relu2 fc3``."""
    return nn.Sequential(OrderedDict(
        fc1=nn.Linear(input_shape[0], hidden), relu1=nn.ReLU(),
        fc2=nn.Linear(hidden, hidden), relu2=nn.ReLU(), fc3=nn.Linear(hidden, n_outputs),
    ))


def build_linear(input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    """One linear layer (logistic regression), module name ``fc``."""
    return nn.Sequential(OrderedDict(fc=nn.Linear(input_shape[0], n_outputs)))


@dataclass(frozen=True)
class ModelSpec:
    """A zoo entry: the dataset it is trained on, its builder and default hyperparameters
    (architecture keywords of ``build`` plus ``epochs lr batch_size weight_decay``)."""

    dataset: str
    dataset_params: dict
    build: Callable[..., nn.Module]
    defaults: dict
    target_layer: str | None = None


TRAINING_KEYS = ("epochs", "lr", "batch_size", "weight_decay")

ZOO: dict[str, ModelSpec] = {
    "digits_cnn": ModelSpec("digits", {"size": 32}, build_cnn,
                            {"channels": 8, "epochs": 10, "lr": 3e-3, "batch_size": 32,
                             "weight_decay": 0.0}, target_layer="relu2"),
    "blockmnist_cnn": ModelSpec("blockmnist", {"block_size": 14}, build_cnn,
                                {"channels": 8, "epochs": 10, "lr": 3e-3, "batch_size": 32,
                                 "weight_decay": 0.0}, target_layer="relu2"),
    "breast_cancer_mlp": ModelSpec("breast_cancer", {}, build_mlp,
                                   {"hidden": 32, "epochs": 40, "lr": 3e-3, "batch_size": 32,
                                    "weight_decay": 1e-4}),
    "wine_mlp": ModelSpec("wine", {}, build_mlp,
                          {"hidden": 32, "epochs": 60, "lr": 3e-3, "batch_size": 16,
                           "weight_decay": 1e-4}),
    "additive_mlp": ModelSpec("additive", {"n_features": 8}, build_mlp,
                              {"hidden": 64, "epochs": 150, "lr": 3e-3, "batch_size": 64,
                               "weight_decay": 0.0}),
    "suppressor_linear": ModelSpec("suppressor", {}, build_linear,
                                   {"epochs": 60, "lr": 5e-2, "batch_size": 64,
                                    "weight_decay": 0.0}),
    "chaos_regression_mlp": ModelSpec("chaos_regression",
                                      {"n_train": 3000, "n_features": 20, "snr": 4.0},
                                      build_mlp,
                                      {"hidden": 64, "epochs": 40, "lr": 3e-3, "batch_size": 64,
                                       "weight_decay": 1e-4}),
    "chaos_images_cnn": ModelSpec("chaos_images", {}, build_cnn,
                                  {"channels": 8, "epochs": 15, "lr": 3e-3, "batch_size": 32,
                                   "weight_decay": 0.0}, target_layer="relu2"),
    "bam_object_cnn": ModelSpec("bam", {"label": "object", "n_train": 2000}, build_cnn,
                                {"channels": 16, "epochs": 20, "lr": 3e-3, "batch_size": 32,
                                 "weight_decay": 0.0}, target_layer="relu2"),
    "bam_scene_cnn": ModelSpec("bam", {"label": "scene"}, build_cnn,
                               {"channels": 16, "epochs": 10, "lr": 3e-3, "batch_size": 32,
                                "weight_decay": 0.0}, target_layer="relu2"),
}


def available_models() -> list[str]:
    return sorted(ZOO)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$PELLUCID_CACHE``, else ``~/.cache/pellucid``."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("PELLUCID_CACHE"):
        return Path(os.environ["PELLUCID_CACHE"])
    return Path.home() / ".cache" / "pellucid"


def resolve_params(name: str, hyper: dict) -> tuple[ModelSpec, dict, dict]:
    """The spec, the dataset parameters and the model/training hyperparameters of ``name``
    after applying ``hyper`` (dataset keywords, ``data_seed`` and the spec's defaults)."""
    if name not in ZOO:
        raise ValueError(f"unknown model {name!r}; choose one of {available_models()}")
    spec = ZOO[name]
    dataset_params = {**spec.dataset_params, "seed": 0}
    params = dict(spec.defaults)
    allowed = sorted(set(params) | set(spec.dataset_params) | {"data_seed"})
    for key, value in hyper.items():
        if key == "data_seed":
            dataset_params["seed"] = value
        elif key in spec.dataset_params:
            dataset_params[key] = value
        elif key in params:
            params[key] = value
        else:
            raise ValueError(f"unknown hyperparameter {key!r} for {name!r}; allowed: {allowed}")
    return spec, dataset_params, params


def load_dataset(name: str, **hyper: Any) -> Dataset:
    """The dataset the zoo model ``name`` is trained on (same keywords as :func:`get_model`)."""
    spec, dataset_params, _ = resolve_params(name, hyper)
    return load(spec.dataset, **dataset_params)


def cache_key(name: str, dataset_params: dict, params: dict, seed: int) -> str:
    blob = json.dumps({"name": name, "dataset": dataset_params, "params": params, "seed": seed,
                       "format": CACHE_FORMAT, "torch": torch.__version__.split("+")[0]},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_model(spec: ModelSpec, dataset: Dataset, params: dict, seed: int) -> nn.Module:
    """The untrained model, initialized with ``seed`` (the global RNG state is restored)."""
    n_outputs = dataset.n_classes if dataset.task == "classification" else 1
    architecture = {k: v for k, v in params.items() if k not in TRAINING_KEYS}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return spec.build(dataset.input_shape, n_outputs, **architecture)


def train_model(model: nn.Module, dataset: Dataset, *, epochs: int, lr: float,
                batch_size: int, weight_decay: float, seed: int) -> None:
    """Adam on cross-entropy (classification) or mean squared error (regression), shuffled
    mini-batches from a private generator seeded with ``seed``. Leaves the model in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    regression = dataset.task == "regression"
    loss_fn = nn.MSELoss() if regression else nn.CrossEntropyLoss()
    x, y = dataset.x_train, dataset.y_train
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            batch = order[start:start + batch_size]
            output = model(x[batch])
            loss = loss_fn(output[:, 0] if regression else output, y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()


def fit_from_scratch(build: Callable[[], nn.Module], x: Any, y: Any, *, epochs: int,
                     lr: float, batch_size: int | None = None, weight_decay: float = 0.0,
                     regression: bool = False, seed: int | None = 0) -> nn.Module:
    """``build()`` with torch seeded by ``seed`` (None: a fresh seed), then Adam on
    cross-entropy (``regression``: the mean squared error of its single output) for ``epochs``
    passes over mini-batches of ``batch_size`` in a new random order each (None: one
    full-batch step per epoch). The global RNG is left as it was; returns the model in eval
    mode. A ready trainer for the small models of ROAR/KAR's ``train_fn``, tests and examples
    (:func:`train_model` trains the zoo's models from a :class:`Dataset`)."""
    x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(y))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed) if seed is not None else torch.seed()
        model = build()
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        for _ in range(epochs):
            batches = ([slice(None)] if batch_size is None else
                       torch.randperm(len(x)).split(batch_size))
            for batch in batches:
                optimizer.zero_grad()
                out = model(x[batch])
                loss = (nn.functional.mse_loss(out[:, 0], y[batch].float()) if regression
                        else nn.functional.cross_entropy(out, y[batch].long()))
                loss.backward()
                optimizer.step()
    return model.eval()


def evaluate(model: nn.Module, dataset: Dataset) -> dict[str, float]:
    """``test_accuracy`` (and ``train_accuracy``) for classifiers, ``test_r2`` for regressors."""
    with torch.inference_mode():
        test_out, train_out = model(dataset.x_test), model(dataset.x_train)
    if dataset.task == "regression":
        residual = ((test_out[:, 0] - dataset.y_test) ** 2).sum()
        total = ((dataset.y_test - dataset.y_test.mean()) ** 2).sum()
        return {"test_r2": float(1 - residual / total)}
    return {"test_accuracy": float((test_out.argmax(1) == dataset.y_test).float().mean()),
            "train_accuracy": float((train_out.argmax(1) == dataset.y_train).float().mean())}


def get_model(name: str, *, seed: int = 0, cache_dir: str | os.PathLike | None = None,
              retrain: bool = False, **hyper: Any) -> tuple[nn.Module, dict[str, Any]]:
    """A trained zoo model in eval mode and its ``info`` (see the module docstring).

    Args:
        name: one of :func:`available_models`.
        seed: seeds the weight initialization and the mini-batch order.
        cache_dir: where weights are cached (default ``$PELLUCID_CACHE`` or ``~/.cache/pellucid``).
        retrain: train again even if a cached file exists (and overwrite it).
        **hyper: overrides of the defaults in ``ZOO[name]`` (architecture, ``epochs``, ``lr``,
            ``batch_size``, ``weight_decay``), of the dataset's keywords (``size``,
            ``block_size``, ...) and ``data_seed`` (the dataset's seed).
    """
    spec, dataset_params, params = resolve_params(name, hyper)
    key = cache_key(name, dataset_params, params, seed)
    folder = cache_root(cache_dir) / "zoo"
    weights_path, info_path = folder / f"{name}-{key}.pt", folder / f"{name}-{key}.json"
    dataset = load(spec.dataset, **dataset_params)
    model = build_model(spec, dataset, params, seed)
    if not retrain and weights_path.exists() and info_path.exists():
        try:
            model.load_state_dict(torch.load(weights_path, weights_only=True))
            info = json.loads(info_path.read_text())
            if not isinstance(info, dict):
                raise ValueError(f"{info_path} holds a {type(info).__name__}, not an object")
            return model.eval(), {**info, "path": str(weights_path), "from_cache": True}
        except (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError) as error:
            warnings.warn(f"ignoring unreadable cache file {weights_path} ({error}); retraining")
            model = build_model(spec, dataset, params, seed)
    start = time.perf_counter()
    train_model(model, dataset, seed=seed, **{k: params[k] for k in TRAINING_KEYS})
    info = {"name": name, "dataset": spec.dataset, "dataset_params": dataset_params,
            "hyperparameters": params, "seed": seed, "task": dataset.task,
            "train_seconds": round(time.perf_counter() - start, 3),
            **evaluate(model, dataset), "target_layer": spec.target_layer,
            "cache_key": key, "path": str(weights_path)}
    try:
        atomic_write(weights_path, lambda p: torch.save(model.state_dict(), p))
        atomic_write(info_path, lambda p: p.write_text(json.dumps(info, indent=2)))
    except OSError as error:  # read-only or full cache: the trained model is still good
        warnings.warn(f"could not cache {name} in {folder} ({error}); it will be trained again "
                      "next time (set $PELLUCID_CACHE to a writable folder)")
    return model.eval(), {**info, "from_cache": False}
