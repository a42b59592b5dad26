"""Run datasets x methods x metrics, saving every finished cell so an interrupted run resumes.

Everything lands in ``config.out``:

- ``results.csv``: one row per (dataset, method, metric) cell, appended and flushed as soon as
  the cell is finished. A rerun reads it and skips the cells already there; a cell is identified
  by a fingerprint of everything that decides its value (dataset, model, n_samples, seed, method
  and metric parameters), so changing the config recomputes only what changed.
- ``cache/<dataset>/samples-<fp>.pt``: the explained test inputs, their targets (the model's
  predicted classes), ground-truth masks if any, and the model's test accuracy.
- ``cache/<dataset>/<method>-<fp>.pt``: the heatmaps of one method, computed once and reused by
  every metric (and by the report), with the explanation time per sample.
- ``cache/<dataset>/<method>__<metric>-<fp>.npz``: per-sample scores (and curves) of a cell.
"""
from __future__ import annotations

import csv
import hashlib
import inspect
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import explain as explain_module
from .. import metrics as metrics_module
from .._batching import predict_batched
from ..metrics.base import MetricResult
from ..models import as_model
from .baselines import BUILTIN_METHODS
from .config import BenchmarkConfig, ComponentSpec, DatasetSpec, load_config

RESULT_COLUMNS = ["dataset", "model", "method", "metric", "mean", "std", "n",
                  "explain_s_per_sample", "metric_s", "higher_is_better", "fingerprint"]
RESULTS_FILE = "results.csv"
PREDICT_BATCH_SIZE = 256


@dataclass
class Cell:
    """One (dataset, method, metric) combination and the cache files it uses."""

    dataset: DatasetSpec
    method: ComponentSpec
    metric: ComponentSpec
    samples_path: Path
    heatmaps_path: Path
    scores_path: Path
    fingerprint: str


def run_benchmark(config: BenchmarkConfig | dict | str | Path, *, out: str | Path | None = None,
                  progress: bool = True) -> pd.DataFrame:
    """Run every unfinished cell of ``config`` and return the results of all its cells.

    ``config``: a :class:`BenchmarkConfig`, a dict, or the path of a TOML file. ``out``
    overrides ``config.out``. Returns a DataFrame with the columns of ``results.csv``
    (:data:`RESULT_COLUMNS`), one row per cell, in config order.
    """
    config = load_config(config)
    out_dir = Path(out) if out is not None else config.out
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / RESULTS_FILE
    finished = read_results(results_path)
    done = set(finished["fingerprint"])
    cells = list(plan_cells(config, out_dir))
    todo = [cell for cell in cells if cell.fingerprint not in done]

    bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc="benchmark",
               disable=not progress, unit="cell")
    n_new = 0
    try:
        for spec in config.datasets:
            dataset_cells = [c for c in cells if c.dataset is spec]
            if all(c.fingerprint in done and c.heatmaps_path.exists() for c in dataset_cells):
                continue
            prepared = prepare_dataset(spec, dataset_cells[0].samples_path, config)
            for method in config.methods:
                method_cells = [c for c in dataset_cells if c.method is method]
                if all(c.fingerprint in done and c.heatmaps_path.exists() for c in method_cells):
                    continue
                heatmaps, seconds = explained(method_cells[0], prepared, config.seed)
                for cell in method_cells:
                    if cell.fingerprint in done:
                        continue
                    bar.set_postfix_str(f"{spec.name} / {method.label} / {cell.metric.label}")
                    append_row(results_path, score_cell(cell, prepared, heatmaps, seconds))
                    n_new += 1
                    bar.update()
    except (KeyboardInterrupt, Exception):
        bar.write(f"benchmark stopped; {len(cells) - len(todo) + n_new} of {len(cells)} "
                  f"cells are saved in {results_path}: run it again to resume")
        raise
    finally:
        bar.close()
    return select_results(read_results(results_path), cells)


def select_results(table: pd.DataFrame, cells: list[Cell]) -> pd.DataFrame:
    """The rows of ``table`` that belong to ``cells`` (the latest row of each), in cell order."""
    order = {cell.fingerprint: i for i, cell in enumerate(cells)}
    table = table[table["fingerprint"].isin(order)].drop_duplicates("fingerprint", keep="last")
    return table.sort_values("fingerprint", key=lambda s: s.map(order)).reset_index(drop=True)


# -- plan -----------------------------------------------------------------------------------
def plan_cells(config: BenchmarkConfig, out_dir: Path) -> Iterator[Cell]:
    """Every cell of the config with its fingerprint and cache paths."""
    for dataset in config.datasets:
        folder = out_dir / "cache" / slug(dataset.name)
        data_fp = fingerprint([dataset.name, dataset.model_label, config.n_samples, config.seed])
        for method in config.methods_for(dataset.name):
            method_fp = fingerprint([data_fp, spec_key(method)])
            for metric in config.metrics_for(dataset.name):
                cell_fp = fingerprint([method_fp, spec_key(metric)])
                yield Cell(
                    dataset=dataset, method=method, metric=metric,
                    samples_path=folder / f"samples-{data_fp}.pt",
                    heatmaps_path=folder / f"{slug(method.label)}-{method_fp}.pt",
                    scores_path=folder / f"{slug(method.label)}__{slug(metric.label)}"
                                         f"-{cell_fp}.npz",
                    fingerprint=cell_fp)


def spec_key(spec: ComponentSpec) -> list:
    name = spec.name
    if not isinstance(name, str):
        name = f"{name.__module__}.{name.__qualname__}"
    return [name, spec.label, spec.params]


def fingerprint(value: Any) -> str:
    """Short stable hash of a JSON-able value (tensors and arrays hashed by content)."""
    text = json.dumps(value, sort_keys=True, default=_jsonable)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _jsonable(value: Any) -> Any:
    if torch.is_tensor(value):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return [str(value.dtype), value.shape, hashlib.sha1(value.tobytes()).hexdigest()]
    return repr(value)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


# -- data -----------------------------------------------------------------------------------
@dataclass
class PreparedDataset:
    """The model and the test samples that every method of a dataset explains."""

    model: Any
    inputs: torch.Tensor
    targets: torch.Tensor
    masks: torch.Tensor | None


def prepare_dataset(spec: DatasetSpec, samples_path: Path, config: BenchmarkConfig
                    ) -> PreparedDataset:
    """Load the model and pick ``n_samples`` test inputs (seeded); cache them on disk."""
    model = load_model(spec, config.seed)
    if samples_path.exists():
        saved = torch.load(samples_path, weights_only=True)
        return PreparedDataset(model, saved["inputs"], saved["targets"], saved["masks"])
    data = spec.data if spec.data is not None else load_dataset(spec.name)
    x_test = torch.as_tensor(np.asarray(data.x_test), dtype=torch.float32)
    y_test = torch.as_tensor(np.asarray(data.y_test)).long()
    masks = getattr(data, "masks_test", None)
    wrapped = as_model(model)
    predictions = predict_batched(wrapped, x_test, batch_size=PREDICT_BATCH_SIZE).argmax(1)
    accuracy = float((predictions == y_test).float().mean())
    rng = np.random.default_rng(config.seed)
    n = min(config.n_samples, len(x_test))
    indices = torch.as_tensor(np.sort(rng.choice(len(x_test), size=n, replace=False)))
    saved = {
        "inputs": x_test[indices].clone(),
        "labels": y_test[indices].clone(),
        "targets": predictions[indices].clone(),
        "masks": None if masks is None else torch.as_tensor(np.asarray(masks))[indices].clone(),
        "indices": indices,
        "accuracy": accuracy,
        "dataset": spec.name,
        "model": spec.model_label,
    }
    atomic_save(saved, samples_path)
    return PreparedDataset(model, saved["inputs"], saved["targets"], saved["masks"])


def load_dataset(name: str) -> Any:
    from .. import datasets

    return datasets.load(name)


def load_model(spec: DatasetSpec, seed: int) -> Any:
    if not isinstance(spec.model, str):
        return spec.model
    from .. import zoo

    model, _ = zoo.get_model(spec.model, seed=seed)
    return model


# -- explain and score ----------------------------------------------------------------------
def explained(cell: Cell, prepared: PreparedDataset, seed: int) -> tuple[torch.Tensor, float]:
    """Heatmaps of the cell's method (cached on disk) and the explanation seconds per sample."""
    if cell.heatmaps_path.exists():
        saved = torch.load(cell.heatmaps_path, weights_only=True)
        return saved["heatmaps"], saved["seconds_per_sample"]
    method_class = resolve(cell.method.name, explain_module, BUILTIN_METHODS, "method")
    params = {"seed": seed, "progress": False, **cell.method.params}
    explainer = method_class(prepared.model, **params)
    start = time.perf_counter()
    heatmaps = explainer.explain(prepared.inputs, prepared.targets)
    seconds = (time.perf_counter() - start) / len(prepared.inputs)
    atomic_save({"heatmaps": heatmaps, "seconds_per_sample": seconds,
                 "method": cell.method.label}, cell.heatmaps_path)
    return heatmaps, seconds


def score_cell(cell: Cell, prepared: PreparedDataset, heatmaps: torch.Tensor,
               explain_seconds: float) -> dict[str, Any]:
    """Run the cell's metric on the cached heatmaps; save per-sample scores; return the row."""
    metric_class = resolve(cell.metric.name, metrics_module, {}, "metric")
    metric = metric_class(prepared.model, **cell.metric.params)
    start = time.perf_counter()
    result = call_metric(metric, prepared, heatmaps)
    seconds = time.perf_counter() - start
    if not isinstance(result, MetricResult):
        raise TypeError(f"metric {cell.metric.label} returned {type(result).__name__}; "
                        "a metric must return a pellucid.metrics.MetricResult")
    arrays = {"scores": result.scores}
    if result.curves is not None:
        arrays["curves"] = result.curves
    if result.fractions is not None:
        arrays["fractions"] = result.fractions
    atomic_savez(arrays, cell.scores_path)
    return {
        "dataset": cell.dataset.name, "model": cell.dataset.model_label,
        "method": cell.method.label, "metric": cell.metric.label,
        "mean": result.mean, "std": result.std, "n": int(np.isfinite(result.scores).sum()),
        "explain_s_per_sample": explain_seconds, "metric_s": seconds,
        "higher_is_better": bool(result.higher_is_better), "fingerprint": cell.fingerprint,
    }


def call_metric(metric: Any, prepared: PreparedDataset, heatmaps: torch.Tensor) -> MetricResult:
    """``metric(inputs, heatmaps, targets)``, plus ``masks=`` for metrics that take them."""
    if "masks" in inspect.signature(metric.__call__).parameters:
        if prepared.masks is None:
            raise ValueError(f"{type(metric).__name__} needs ground-truth masks; this dataset "
                             "has none (give it a masks_test, or drop the metric)")
        return metric(prepared.inputs, heatmaps, prepared.targets, masks=prepared.masks)
    return metric(prepared.inputs, heatmaps, prepared.targets)


def resolve(name: Any, module: Any, builtins: dict[str, type], kind: str) -> type:
    """The class a spec names: a class as is, else a builtin, else ``module.<name>``."""
    if not isinstance(name, str):
        return name
    if name in builtins:
        return builtins[name]
    if name not in module.__all__:
        available = sorted({*builtins, *module.__all__} - {"Explainer", "WhiteBoxExplainer",
                                                           "MetricResult"})
        raise ValueError(f"unknown {kind} {name!r}; available: {available}")
    return getattr(module, name)


# -- files ----------------------------------------------------------------------------------
def read_results(path: Path) -> pd.DataFrame:
    """The rows already in ``results.csv`` (an empty table if there is none)."""
    if not path.exists():
        return pd.DataFrame(columns=RESULT_COLUMNS)
    table = pd.read_csv(path, on_bad_lines="skip")
    if list(table.columns) != RESULT_COLUMNS:
        raise ValueError(f"{path} has columns {list(table.columns)}, expected {RESULT_COLUMNS};"
                         " it was not written by this version of pellucid: choose another out")
    return table


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one result row (with the header if the file is new) and flush it to disk."""
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)
        f.flush()
        os.fsync(f.fileno())


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file so an interruption never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_savez(arrays: dict[str, np.ndarray], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
