"""Benchmark attribution methods: datasets x methods x metrics, a resumable results table and
an HTML report.

    from pellucid.benchmark import run_benchmark, write_report
    results = run_benchmark("examples/benchmark.toml")     # pandas DataFrame, one row per cell
    write_report("examples/benchmark.toml")                # benchmark-results/index.html
"""
from .baselines import RandomAttribution
from .config import BenchmarkConfig, DatasetSpec, MethodSpec, MetricSpec, load_config
from .report import write_report
from .runner import RESULT_COLUMNS, run_benchmark

__all__ = ["BenchmarkConfig", "DatasetSpec", "MethodSpec", "MetricSpec", "RandomAttribution",
           "RESULT_COLUMNS", "load_config", "run_benchmark", "write_report"]
