"""Benchmark three attribution methods (and a random control) on BlockMNIST, from Python.

BlockMNIST images hold a digit block and a null block; the label depends only on the digit, so
the pointing game checks whether each heatmap points at the real evidence. Runs in seconds on a
CPU (the tiny CNN is trained once and cached). The same benchmark as a TOML file:
examples/benchmark.toml, run by `pellucid benchmark examples/benchmark.toml`.

    python examples/benchmark_three_methods.py [OUT_DIR]
"""
import sys

from pellucid.benchmark import (BenchmarkConfig, DatasetSpec, MethodSpec, MetricSpec,
                                run_benchmark, write_report)

out = sys.argv[1] if len(sys.argv) > 1 else "benchmark-three-methods"
config = BenchmarkConfig(
    datasets=[DatasetSpec("blockmnist", model="blockmnist_cnn")],
    methods=[
        MethodSpec("Saliency"),
        MethodSpec("IntegratedGradients", {"steps": 32}),
        MethodSpec("Rise", {"nb_samples": 1000, "grid_size": 4}, label="RISE"),
        MethodSpec("Random"),  # uniform random heatmaps: the chance level
    ],
    metrics=[MetricSpec("Deletion"), MetricSpec("Insertion"), MetricSpec("PointingGame")],
    n_samples=16,
    seed=0,
    out=out,
)

# One row per (dataset, method, metric); rerunning skips the cells already in results.csv.
results = run_benchmark(config)
table = results.pivot(index="method", columns="metric", values="mean")
print(table.loc[[m.label for m in config.methods]].round(3).to_string())
print("report:", write_report(config, title="Three methods on BlockMNIST"))
