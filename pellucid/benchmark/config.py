"""What a benchmark runs: a :class:`BenchmarkConfig` read from a TOML file or a Python dict.

A TOML config (see ``examples/benchmark.toml``)::

    out = "benchmark-results"     # results.csv, cached heatmaps and index.html go here
    n_samples = 16                # test images explained per dataset
    seed = 0
    level = 0.95                  # optional: confidence level of the intervals
    paired_test = "wilcoxon"      # optional: or "ttest", between methods on the same inputs

    [[datasets]]
    name = "blockmnist"           # pellucid.datasets.load_blockmnist
    model = "blockmnist_cnn"      # pellucid.zoo.get_model("blockmnist_cnn", seed=seed)

    [[methods]]
    name = "Rise"                 # a class of pellucid.explain, or "Random"
    label = "RISE (1000 masks)"   # optional; the name shown in tables (default: name)
    params = { nb_samples = 1000, grid_size = 4 }
    resources = { num_cpus = 2 }  # optional: what one of its Ray tasks asks for (--executor ray)

    [[metrics]]
    name = "Deletion"             # a class of pellucid.metrics
    params = { step = 10 }

    [[metrics]]
    name = "PointingGame"
    datasets = ["blockmnist"]     # optional: only where there are ground-truth masks

From Python, ``name`` may also be the class itself, and a dataset may carry its data and model
directly (``DatasetSpec(name="mine", data=my_dataset, model=my_module)``), where ``data`` is any
object with ``x_test``, ``y_test`` and optionally ``masks_test``.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .._validation import check_choice, check_positive_int, check_probability, check_seed

PAIRED_TESTS = ("wilcoxon", "ttest")
RESOURCES = ("num_cpus", "num_gpus", "memory")  # of one Ray task


def _display_name(name: Any) -> str:
    return name if isinstance(name, str) else getattr(name, "__name__", repr(name))


@dataclass
class ComponentSpec:
    """A method or a metric: its class (or class name), keyword arguments, display label and
    the datasets it runs on (``None``: all; e.g. a localization metric only where there are
    ground-truth masks). ``resources``: what one of its tasks asks of a Ray cluster,
    ``{num_cpus = 1, num_gpus = 0, memory = bytes}`` (default one CPU; the local executor
    ignores it; never part of a cell's fingerprint)."""

    name: Any
    params: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    datasets: list[str] | None = None
    resources: dict[str, float] | None = None

    def __post_init__(self):
        if not isinstance(self.name, (str, type)):
            raise TypeError(f"name must be a class name or a class, got {self.name!r}")
        if not isinstance(self.params, dict):
            raise TypeError(f"params of {_display_name(self.name)} must be a table/dict of "
                            f"keyword arguments, got {type(self.params).__name__}")
        if self.label is None:
            self.label = _display_name(self.name)
        if self.datasets is not None:
            names = self.datasets
            self.datasets = [names] if isinstance(names, str) else list(names)
        if self.resources is not None:
            self.resources = _check_resources(self.label, self.resources)

    def applies_to(self, dataset: str) -> bool:
        return self.datasets is None or dataset in self.datasets


class MethodSpec(ComponentSpec):
    """An attribution method: ``name`` is a class of :mod:`pellucid.explain` (or ``"Random"``);
    or a concept extractor, ``"Craft"``, scored by the concept metrics only
    (:mod:`pellucid.benchmark.concept_cells`)."""


class MetricSpec(ComponentSpec):
    """A metric: ``name`` is a class of :mod:`pellucid.metrics` (a
    :class:`~pellucid.metrics.Metric`); what it ``requires`` decides how it is built and called:
    the model (Deletion, Insertion, MuFidelity, Road, ...) or ground-truth masks (PointingGame,
    RelevanceMass, ...); or a concept metric (``"CDeletion"``, ``"CInsertion"``,
    ``"CMuFidelity"``, ``"ConceptReconstruction"``, ``"BottleneckFidelity"``) of the concept
    methods."""


@dataclass
class DatasetSpec:
    """A dataset and the model explained on it.

    ``name``: the dataset, unless ``data`` is given (then only a label): for a zoo model the data
    it was trained on (:func:`pellucid.zoo.load_dataset`, which must be called ``name``), else
    ``pellucid.datasets.load(name)``.
    ``model``: a :mod:`pellucid.zoo` model name (default ``"<name>_cnn"``) or a model object.
    ``data``: optional object with ``x_test``, ``y_test`` and optionally ``masks_test``.
    """

    name: str
    model: Any = None
    data: Any = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a dataset needs a non-empty name, got {self.name!r}")
        if self.model is None:
            self.model = f"{self.name}_cnn"

    @property
    def model_label(self) -> str:
        return self.model if isinstance(self.model, str) else type(self.model).__name__


@dataclass
class BenchmarkConfig:
    """Datasets x methods x metrics, on ``n_samples`` test inputs per dataset, seeded.

    ``level``: confidence level of the intervals (0.95); ``paired_test``: ``"wilcoxon"`` (the
    signed-rank test, no normality assumed) or ``"ttest"`` (paired t-test) between methods;
    ``alpha``: significance level after Holm's correction (0.05). They change the statistics
    only, never a cell.
    """

    datasets: list[DatasetSpec]
    methods: list[MethodSpec]
    metrics: list[MetricSpec]
    n_samples: int = 16
    seed: int = 0
    out: Path = Path("pellucid-benchmark")
    level: float = 0.95
    paired_test: str = "wilcoxon"
    alpha: float = 0.05

    def __post_init__(self):
        self.datasets = [_as_spec(DatasetSpec, d, "datasets") for d in self.datasets]
        self.methods = [_as_spec(MethodSpec, m, "methods") for m in self.methods]
        self.metrics = [_as_spec(MetricSpec, m, "metrics") for m in self.metrics]
        for key in ("datasets", "methods", "metrics"):
            items = getattr(self, key)
            if not items:
                raise ValueError(f"a benchmark needs at least one entry in {key!r}")
            names = [item.name if key == "datasets" else item.label for item in items]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"{key} must have distinct names/labels; repeated: {duplicates}"
                                 " (give each one a different 'label')")
        dataset_names = {d.name for d in self.datasets}
        for spec in [*self.methods, *self.metrics]:
            unknown = sorted(set(spec.datasets or ()) - dataset_names)
            if unknown:
                raise ValueError(f"{spec.label} is restricted to datasets {unknown} that are not "
                                 f"in the config's datasets {sorted(dataset_names)}")
        self.n_samples = check_positive_int("n_samples", self.n_samples)
        self.seed = check_seed(self.seed)
        if self.seed is None:
            raise ValueError("a benchmark needs an integer seed so that a rerun resumes it")
        self.out = Path(self.out)
        self.level = check_probability("level", self.level)
        self.alpha = check_probability("alpha", self.alpha)
        self.paired_test = check_choice("paired_test", self.paired_test, PAIRED_TESTS)

    def methods_for(self, dataset: str) -> list[MethodSpec]:
        return [m for m in self.methods if m.applies_to(dataset)]

    def metrics_for(self, dataset: str) -> list[MetricSpec]:
        return [m for m in self.metrics if m.applies_to(dataset)]

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> BenchmarkConfig:
        """Build from a dict shaped like the TOML file (see the module docstring)."""
        if not isinstance(config, dict):
            raise TypeError(f"a benchmark config must be a dict, got {type(config).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown benchmark config keys {unknown}; expected some of "
                             f"{sorted(known)}")
        missing = sorted({"datasets", "methods", "metrics"} - set(config))
        if missing:
            raise ValueError(f"benchmark config is missing {missing}")
        return cls(**config)

    @classmethod
    def from_toml(cls, path: str | Path) -> BenchmarkConfig:
        """Read a TOML file (a relative ``out`` is relative to the working directory)."""
        path = Path(path)
        try:
            with path.open("rb") as f:
                config = tomllib.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"benchmark config {str(path)!r} does not exist") from None
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path} is not valid TOML: {error}") from None
        return cls.from_dict(config)


def load_config(config: BenchmarkConfig | dict | str | Path) -> BenchmarkConfig:
    """A config as it comes: already built, a dict, or the path of a TOML file."""
    if isinstance(config, BenchmarkConfig):
        return config
    if isinstance(config, dict):
        return BenchmarkConfig.from_dict(config)
    if isinstance(config, (str, Path)):
        return BenchmarkConfig.from_toml(config)
    raise TypeError("expected a BenchmarkConfig, a dict or the path of a TOML file; "
                    f"got {type(config).__name__}")


def _check_resources(label: str, resources: Any) -> dict[str, float]:
    if not isinstance(resources, dict):
        raise TypeError(f"resources of {label} must be a table/dict, got "
                        f"{type(resources).__name__}")
    unknown = sorted(set(resources) - set(RESOURCES))
    if unknown:
        raise ValueError(f"resources of {label} has unknown keys {unknown}; expected some of "
                         f"{list(RESOURCES)}")
    for key, value in resources.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"resources of {label}: {key} must be a number >= 0, got {value!r}")
    return dict(resources)


def _as_spec(spec_type: type, item: Any, key: str):
    if isinstance(item, spec_type):
        return item
    if isinstance(item, (str, type)):
        return spec_type(name=item)
    if isinstance(item, dict):
        allowed = {f.name for f in fields(spec_type)}
        unknown = sorted(set(item) - allowed)
        if unknown:
            raise ValueError(f"unknown keys {unknown} in an entry of {key!r}; expected some of "
                             f"{sorted(allowed)} (keyword arguments go in 'params')")
        if "name" not in item:
            raise ValueError(f"every entry of {key!r} needs a 'name', got {item!r}")
        return spec_type(**item)
    raise TypeError(f"entries of {key!r} must be a name, a class, a dict or a "
                    f"{spec_type.__name__}; got {type(item).__name__}")
