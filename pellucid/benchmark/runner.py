"""Run datasets x methods x metrics, saving every finished cell so an interrupted run resumes.

Everything lands in ``config.out``:

- ``results.csv``: one row per (dataset, method, metric) cell, appended and flushed as soon as
  the cell is finished. A rerun reads it and skips the cells already there; a cell is identified
  by a fingerprint of everything that decides its value (the dataset, the model: a zoo model's
  hyperparameters or a module's weights, data given in Python, n_samples, seed, the method's and
  the metric's parameters), so changing the config recomputes only what changed.
- ``cache/<dataset>/samples-<fp>.pt``: the explained test inputs, their targets (the model's
  predicted classes), ground-truth masks if any, and the model's test accuracy.
- ``cache/<dataset>/<method>-<fp>.pt``: the heatmaps of one method, computed once and reused by
  every metric (and by the report), with the explanation time per sample.
- ``cache/<dataset>/<method>__<metric>-<fp>.npz``: per-sample scores (and curves) of a cell.

The table returned adds to each cell the bootstrap confidence interval of its mean
(``ci_low``, ``ci_high``, at ``config.level``), and ``table.attrs["pairwise"]`` holds the paired
tests between methods (:mod:`pellucid.benchmark.comparison`), both computed from the cached
per-input scores.

The cells run in this process (``executor="local"``) or as Ray tasks (``executor="ray"``,
:mod:`pellucid.benchmark.ray_executor`); either way this process is the only writer of
``out``, and the files, the fingerprints and so the resume are the same.

Concept extractors (method ``"Craft"``) and concept metrics (``"CDeletion"``, ...) make cells
too, paired only with each other (:mod:`pellucid.benchmark.concept_cells`).
"""
from __future__ import annotations

import csv
import difflib
import hashlib
import json
import os
import pickle
import re
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import datasets, zoo
from .._files import atomic_write
from .._validation import check_choice, check_positive_int
from .. import explain as explain_module
from .. import metrics as metrics_module
from .._batching import predict_batched
from ..models import as_model
from .baselines import BUILTIN_METHODS
from .comparison import cell_scores, pairwise_comparisons, with_confidence_intervals
from .concept_cells import (CONCEPT_METHODS, CONCEPT_METRICS, as_method_class,
                            check_every_spec_scored, pairs)
from .config import BenchmarkConfig, ComponentSpec, DatasetSpec, load_config

RESULT_COLUMNS = ["dataset", "model", "method", "metric", "mean", "std", "n",
                  "explain_s_per_sample", "metric_s", "higher_is_better", "fingerprint"]
RESULTS_FILE = "results.csv"
PREDICT_BATCH_SIZE = 256
EXECUTORS = ("local", "ray")


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
                  progress: bool = True, executor: str = "local", address: str | None = None,
                  num_cpus: int | None = None, num_gpus: float | None = None) -> pd.DataFrame:
    """Run every unfinished cell of ``config`` and return the results of all its cells.

    ``config``: a :class:`BenchmarkConfig`, a dict, or the path of a TOML file. ``out``
    overrides ``config.out``. ``executor``: ``"local"`` (in this process, one cell after the
    other) or ``"ray"`` (cells as Ray tasks, :mod:`pellucid.benchmark.ray_executor`): on a local
    Ray instance of ``num_cpus`` CPUs and ``num_gpus`` GPUs (default: the machine's), started
    and shut down here, or on the running cluster at ``address`` (``"auto"``, ``"ray://..."``).
    Both give the same table; a run started by one is resumed by the other. Returns a
    DataFrame with the columns of ``results.csv`` (:data:`RESULT_COLUMNS`) plus ``ci_low``
    and ``ci_high``, one row per cell, in config order; ``.attrs["pairwise"]`` is the
    DataFrame of paired tests (see the module docstring).
    """
    config = load_config(config)
    check_executor(executor, address, num_cpus, num_gpus)
    out_dir = Path(out) if out is not None else config.out
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / RESULTS_FILE
    finished = read_results(results_path)
    # a cell is done when its row is in the table and its per-input scores can be read
    cells = list(plan_cells(config, out_dir))
    done = set(finished["fingerprint"]) & set(cell_scores(cells))
    todo = [cell for cell in cells if cell.fingerprint not in done]
    methods = {m.label: as_method_class(resolve(m.name, explain_module,
                                                {**BUILTIN_METHODS, **CONCEPT_METHODS}, "method"))
               for m in config.methods}
    metrics = {m.label: check_metric_class(resolve(m.name, metrics_module, CONCEPT_METRICS,
                                                   "metric"))
               for m in config.metrics}
    for kind, specs, classes in (("method", config.methods, methods),
                                 ("metric", config.metrics, metrics)):
        for spec in specs:  # a typo fails now, before any cell runs, naming the spec
            check_param_names(kind, spec.label, classes[spec.label], spec.params)
    check_every_spec_scored(config.methods, config.metrics, cells)

    bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc="benchmark",
               disable=not progress, unit="cell")
    plan = Plan(config, cells, done, methods, metrics, results_path, bar)
    try:
        if executor == "ray":
            from .ray_executor import run_on_ray
            run_on_ray(plan, address=address, num_cpus=num_cpus, num_gpus=num_gpus)
        else:
            run_locally(plan)
    except (KeyboardInterrupt, Exception):
        bar.write(f"benchmark stopped; {len(cells) - len(todo) + plan.n_saved} of {len(cells)} "
                  f"cells are saved in {results_path}: run it again to resume")
        raise
    finally:
        bar.close()
    return with_statistics(select_results(read_results(results_path), cells), cells, config)


def check_executor(executor: str, address: str | None, num_cpus: int | None,
                   num_gpus: float | None) -> None:
    """The executor exists and gets only options it takes (before any work)."""
    check_choice("executor", executor, EXECUTORS)
    given = [name for name, value in (("address", address), ("num_cpus", num_cpus),
                                      ("num_gpus", num_gpus)) if value is not None]
    if executor == "local" and given:
        raise ValueError(f"{given} are options of executor='ray'; the local executor runs in "
                         "this process")
    if executor == "ray" and address is not None and given != ["address"]:
        raise ValueError("num_cpus and num_gpus size a local Ray instance; a cluster at "
                         "address= brings its own resources (declare a task's in the config)")
    if num_cpus is not None:
        check_positive_int("num_cpus", num_cpus)
    if num_gpus is not None and not (isinstance(num_gpus, (int, float)) and num_gpus >= 0):
        raise ValueError(f"num_gpus must be a number >= 0, got {num_gpus!r}")


@dataclass
class Plan:
    """What a run has left to do, and the driver's side of it: executors compute, the driver
    alone writes (the samples, the heatmaps, the per-input scores, then the row)."""

    config: BenchmarkConfig
    cells: list[Cell]
    done: set[str]
    methods: dict[str, type]
    metrics: dict[str, type]
    results_path: Path
    bar: Any
    n_saved: int = 0

    def datasets_to_run(self) -> Iterator[tuple[DatasetSpec, list[Cell]]]:
        """Each dataset with an unfinished cell or a cache file missing, with its cells."""
        for spec in self.config.datasets:
            cells = [c for c in self.cells if c.dataset is spec]
            if cells and not (all(c.fingerprint in self.done for c in cells)
                              and readable(cells[0].samples_path)
                              and all(readable(path) for path in  # each file read once
                                      dict.fromkeys(c.heatmaps_path for c in cells))):
                yield spec, cells

    def methods_to_run(self, dataset_cells: list[Cell]) -> Iterator[list[Cell]]:
        """The cells of each method of a dataset with an unfinished cell or no heatmaps file."""
        for method in self.config.methods:
            cells = [c for c in dataset_cells if c.method is method]
            if cells and not (all(c.fingerprint in self.done for c in cells)
                              and readable(cells[0].heatmaps_path)):
                yield cells

    def prepare(self, spec: DatasetSpec, cells: list[Cell]) -> PreparedDataset:
        prepared = prepare_dataset(spec, cells[0].samples_path, self.config)
        check_masks(spec, prepared, {c.metric.label: self.metrics[c.metric.label]
                                     for c in cells})
        return prepared

    def record(self, cell: Cell, result: Any, metric_seconds: float,
               explain_seconds: float) -> None:
        """Save a finished cell: its per-input scores, then its row; count it."""
        arrays = {"scores": result.scores}
        if result.curves is not None:
            arrays["curves"] = result.curves
        if result.fractions is not None:
            arrays["fractions"] = result.fractions
        atomic_write(cell.scores_path, lambda p: np.savez(p, **arrays))
        append_row(self.results_path, {
            "dataset": cell.dataset.name, "model": cell.dataset.model_label,
            "method": cell.method.label, "metric": cell.metric.label,
            "mean": result.mean, "std": result.std, "n": int(np.isfinite(result.scores).sum()),
            "explain_s_per_sample": explain_seconds, "metric_s": metric_seconds,
            "higher_is_better": bool(result.higher_is_better), "fingerprint": cell.fingerprint,
        })
        self.n_saved += 1
        self.bar.set_postfix_str(f"{cell.dataset.name} / {cell.method.label} / "
                                 f"{cell.metric.label}")
        self.bar.update()


def run_locally(plan: Plan) -> None:
    """The default executor: every cell in this process, one after the other."""
    seed = plan.config.seed
    for spec, dataset_cells in plan.datasets_to_run():
        prepared = plan.prepare(spec, dataset_cells)
        for method_cells in plan.methods_to_run(dataset_cells):
            first = method_cells[0]
            saved = load_cached(first.heatmaps_path)
            if saved is None:
                saved = explain(first.method, plan.methods[first.method.label], prepared, seed)
                save_heatmaps(first.heatmaps_path, saved)
            for cell in method_cells:
                if cell.fingerprint not in plan.done:
                    metric = build_metric(plan.metrics[cell.metric.label], prepared.model,
                                          cell.metric.params, seed,
                                          (plan.methods[cell.method.label], cell.method.params))
                    plan.record(cell, *score(metric, prepared, saved["heatmaps"]),
                                saved["seconds_per_sample"])


def with_statistics(table: pd.DataFrame, cells: list[Cell], config: BenchmarkConfig
                    ) -> pd.DataFrame:
    """The results with their confidence intervals and, in ``attrs["pairwise"]``, the paired
    tests between methods."""
    table = with_confidence_intervals(table, cells, level=config.level, seed=config.seed)
    table.attrs["pairwise"] = pairwise_comparisons(table, cells, test=config.paired_test,
                                                   level=config.level, alpha=config.alpha,
                                                   seed=config.seed)
    return table


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
        data_fp = fingerprint([dataset.name, model_key(dataset.model, config.seed),
                               data_key(dataset.data), config.n_samples, config.seed])
        for method in config.methods_for(dataset.name):
            method_fp = fingerprint([data_fp, spec_key(method)])
            for metric in filter(partial(pairs, method), config.metrics_for(dataset.name)):
                cell_fp = fingerprint([method_fp, spec_key(metric)])
                yield Cell(
                    dataset=dataset, method=method, metric=metric,
                    samples_path=folder / f"samples-{data_fp}.pt",
                    heatmaps_path=folder / f"{slug(method.label)}-{method_fp}.pt",
                    scores_path=folder / f"{slug(method.label)}__{slug(metric.label)}"
                                         f"-{cell_fp}.npz",
                    fingerprint=cell_fp)


def model_key(model: Any, seed: int) -> Any:
    """A zoo model by the zoo's own cache key (name, hyperparameters, seed); a torch module by
    its weights (retraining it invalidates the cache); any other model object by its repr."""
    if isinstance(model, str):
        _, dataset_params, params = zoo.resolve_params(model, {})
        return [model, zoo.cache_key(model, dataset_params, params, seed)]
    if isinstance(model, torch.nn.Module):
        return [type(model).__name__, model.state_dict()]
    return repr(model)


def data_key(data: Any) -> Any:
    """Data given in Python, by the content of its test split (``None``: loaded by name): its
    inputs, labels, and what the cells read as ``masks`` (the masks, or the true attributions
    of a tabular task; these are keyed only when present, so other data keep their keys)."""
    if data is None:
        return None
    key = [getattr(data, name, None) for name in ("x_test", "y_test", "masks_test")]
    truth = getattr(data, "true_attributions_test", None)
    return key if truth is None else [*key, truth]


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
    saved = load_cached(samples_path)
    model, data = load_model_and_data(spec, config.seed, need_data=saved is None)
    if data is None:
        return PreparedDataset(model, saved["inputs"], saved["targets"], saved["masks"])
    x_test = torch.as_tensor(np.asarray(data.x_test), dtype=torch.float32)
    y_test = torch.as_tensor(np.asarray(data.y_test)).long()
    masks = getattr(data, "masks_test", None)
    if masks is None:  # tabular truth: agreement metrics read it through masks= too
        masks = getattr(data, "true_attributions_test", None)
    predictions = predict_batched(as_model(model), x_test,
                                  batch_size=PREDICT_BATCH_SIZE).argmax(1)
    rng = np.random.default_rng(config.seed)
    n = min(config.n_samples, len(x_test))
    indices = torch.as_tensor(np.sort(rng.choice(len(x_test), size=n, replace=False)))
    saved = {
        "inputs": x_test[indices].clone(),
        "labels": y_test[indices].clone(),
        "targets": predictions[indices].clone(),
        "masks": None if masks is None else torch.as_tensor(np.asarray(masks))[indices].clone(),
        "indices": indices,
        "accuracy": float((predictions == y_test).float().mean()),
        "dataset": spec.name,
        "description": getattr(data, "description", ""),
        "feature_names": getattr(data, "feature_names", None),
        "model": spec.model_label,
    }
    atomic_write(samples_path, lambda p: torch.save(saved, p))
    return PreparedDataset(model, saved["inputs"], saved["targets"], saved["masks"])


def load_model_and_data(spec: DatasetSpec, seed: int, need_data: bool) -> tuple[Any, Any]:
    """The model and (when ``need_data``) the dataset of ``spec``. A zoo model (``model`` is a
    name) comes with the dataset it was trained on, so its test split is the one used."""
    if isinstance(spec.model, str):
        model, info = zoo.get_model(spec.model, seed=seed)
        if info["dataset"] != spec.name and spec.data is None:
            raise ValueError(f"zoo model {spec.model!r} is trained on {info['dataset']!r}, not "
                             f"on {spec.name!r}; name the dataset {info['dataset']!r}")
        default_data = partial(zoo.load_dataset, spec.model)
    else:
        model, default_data = spec.model, partial(datasets.load, spec.name)
    if not need_data:
        return model, None
    return model, spec.data if spec.data is not None else default_data()


# -- explain and score ----------------------------------------------------------------------
def explain(method: ComponentSpec, method_class: type, prepared: PreparedDataset, seed: int
            ) -> dict[str, Any]:
    """The heatmaps of a method (what its cache file holds), with the seconds per sample. The
    explainer gets the benchmark's seed whatever process runs it: a cell's numbers never
    depend on where it ran."""
    explainer = method_class(prepared.model, **runner_kwargs(method.params, seed))
    start = time.perf_counter()
    heatmaps = explainer.explain(prepared.inputs, prepared.targets)
    seconds = (time.perf_counter() - start) / len(prepared.inputs)
    return {"heatmaps": heatmaps, "seconds_per_sample": seconds, "method": method.label}


def save_heatmaps(path: Path, saved: dict[str, Any]) -> None:
    atomic_write(path, lambda p: torch.save(saved, p))


def score(metric: Any, prepared: PreparedDataset, heatmaps: torch.Tensor) -> tuple[Any, float]:
    """The metric's result on the heatmaps, and the seconds it took."""
    start = time.perf_counter()
    masks = prepared.masks if "masks" in metric.requires else None
    result = metric(prepared.inputs, heatmaps, prepared.targets, masks=masks)
    return result, time.perf_counter() - start


def check_metric_class(metric_class: type) -> type:
    """The benchmark scores cached heatmaps: a metric must follow the metric contract,
    ``metric(inputs, heatmaps, targets, masks=...)`` (:class:`pellucid.metrics.Metric`)."""
    if not (isinstance(metric_class, type) and issubclass(metric_class, metrics_module.Metric)):
        name = getattr(metric_class, "__name__", repr(metric_class))
        raise TypeError(f"{name} cannot be a benchmark metric: the benchmark scores cached "
                        "heatmaps, so a metric must be a pellucid.metrics.Metric (Deletion, "
                        "Insertion, MuFidelity, Road, PointingGame, ...); run the procedures "
                        "Roar/Kar/ModelRandomization directly")
    return metric_class


def check_param_names(kind: str, label: str, cls: type, params: dict[str, Any]) -> None:
    """Every key of a spec's ``params`` must be a hyperparameter of its class."""
    accepted = cls._param_names()
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        close = {name: difflib.get_close_matches(name, accepted, n=1) for name in unknown}
        hints = "; ".join(f"{name!r}: did you mean {match[0]!r}?" for name, match in
                          close.items() if match)
        raise ValueError(f"{kind} {label!r} ({cls.__name__}) has no parameter {unknown}"
                         f"{'; ' + hints if hints else ''}; it takes {accepted}")


def check_masks(spec: DatasetSpec, prepared: PreparedDataset, metrics: dict[str, type]) -> None:
    """Localization metrics need ground-truth masks; say so before any explanation runs."""
    needing = [label for label, cls in metrics.items() if "masks" in cls.requires]
    if needing and prepared.masks is None:
        raise ValueError(f"{needing} need ground-truth masks and dataset {spec.name!r} has none;"
                         " restrict them with datasets=[...] to datasets that have masks")


def build_metric(metric_class: type, model: Any, params: dict[str, Any], seed: int,
                 method: tuple[type, dict[str, Any]] | None = None) -> Any:
    """A metric that ``requires`` the model gets it, the benchmark's seed and no inner progress
    bar; one that requires the explainer (robustness, RandomLogit) also the cell's ``method``,
    ``(class, params)``, built as the cell's heatmaps were; any other metric only its
    parameters."""
    if "model" not in metric_class.requires:
        return metric_class(**params)
    if "explainer" in metric_class.requires:
        if method is None:
            raise ValueError(f"{metric_class.__name__} re-explains inputs with the cell's "
                             "method: pass method=(class, params)")
        method_class, method_params = method
        params = {"explainer": method_class,
                  "explainer_kwargs": runner_kwargs(method_params, seed), **params}
    return metric_class(model, **runner_kwargs(params, seed))


def runner_kwargs(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """The keyword arguments of a runner the benchmark builds (a method, or a metric that
    ``requires`` the model): the benchmark's seed and no inner progress bar, unless ``params``
    say otherwise."""
    return {"seed": seed, "progress": False, **params}


def resolve(name: Any, module: Any, builtins: dict[str, type], kind: str) -> type:
    """The class a spec names: a class as is, else a builtin, else ``module.<name>``."""
    if not isinstance(name, str):
        return name
    if name in builtins:
        return builtins[name]
    if name not in module.__all__:
        available = sorted({*builtins, *module.__all__} - {"Explainer", "WhiteBoxExplainer",
                                                           "Metric", "MetricResult"})
        raise ValueError(f"unknown {kind} {name!r}; available: {available}")
    return getattr(module, name)


# -- files ----------------------------------------------------------------------------------
def load_cached(path: Path) -> dict | None:
    """A cached ``torch.save`` dict, or ``None`` when it is absent or cannot be read (damaged
    outside pellucid, whose writes are atomic): a warning says so and it is computed again."""
    if not path.exists():
        return None
    try:
        saved = torch.load(path, weights_only=True)
        if not isinstance(saved, dict):
            raise ValueError(f"holds a {type(saved).__name__}, not a dict")
        return saved
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as error:
        warnings.warn(f"ignoring unreadable cache file {path} ({error}); computing it again",
                      RuntimeWarning, stacklevel=2)
        return None


def readable(path: Path) -> bool:
    """Whether a cache file is there and can be read (the report needs it)."""
    return load_cached(path) is not None


def read_results(path: Path) -> pd.DataFrame:
    """The rows already in ``results.csv`` (an empty table if there is none).

    A row is appended in one write ending with a newline, so a write cut short (a kill, a full
    disk) leaves a last line without one: that torn tail is cut off, with a warning, and its
    cell is computed again. Any other damaged line raises: rows are never skipped silently."""
    if not path.exists() or not repair_torn_tail(path):
        return pd.DataFrame(columns=RESULT_COLUMNS)
    with path.open(newline="") as f:
        header, *rows = list(csv.reader(f))
    if header != RESULT_COLUMNS:
        raise ValueError(f"{path} has columns {header}, expected {RESULT_COLUMNS}; it was not "
                         "written by this version of pellucid: choose another out")
    for line, row in enumerate(rows, start=2):
        if len(row) != len(RESULT_COLUMNS):
            raise ValueError(f"{path}, line {line}, is damaged ({len(row)} fields instead of "
                             f"{len(RESULT_COLUMNS)}); delete that line and run again to "
                             "recompute its cell")
    return pd.read_csv(path)


def repair_torn_tail(path: Path) -> bool:
    """Cut a last line that has no newline (an interrupted append) off ``path``; returns
    whether a header remains (False: the file held no complete line and is removed)."""
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return True
    keep = data.rfind(b"\n") + 1
    warnings.warn(f"{path}: its last line was cut short (an interrupted write); it is removed "
                  "and its cell will be computed again", RuntimeWarning, stacklevel=3)
    if keep == 0:
        path.unlink()
        return False
    with path.open("r+b") as f:
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return True


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
