"""Run a benchmark on Ray: the same table as the local executor, its cells spread over workers.

Without an address, a local Ray instance is started on this machine's cores and shut down at the
end; with one (``auto`` on a node of a cluster started by ``ray start --head``, or
``ray://HOST:10001``), the run joins that cluster. Stop it at any time (Ctrl-C): running it
again resumes, with either executor. Needs ``pip install 'pellucid[ray]'``.

    python examples/benchmark_on_ray.py [OUT_DIR] [ADDRESS]
"""
import sys

from pellucid.benchmark import (BenchmarkConfig, DatasetSpec, MethodSpec, MetricSpec,
                                run_benchmark)

out = sys.argv[1] if len(sys.argv) > 1 else "benchmark-on-ray"
address = sys.argv[2] if len(sys.argv) > 2 else None
config = BenchmarkConfig(
    datasets=[DatasetSpec("blockmnist", model="blockmnist_cnn")],
    methods=[
        MethodSpec("Saliency"),
        MethodSpec("IntegratedGradients", {"steps": 32}),
        # what one task of RISE asks of the cluster (one CPU unless said otherwise)
        MethodSpec("Rise", {"nb_samples": 1000, "grid_size": 4}, label="RISE",
                   resources={"num_cpus": 1}),
        MethodSpec("Random"),
    ],
    metrics=[MetricSpec("Deletion"), MetricSpec("Insertion"), MetricSpec("PointingGame")],
    n_samples=16,
    seed=0,
    out=out,
)

# a local Ray instance of 2 CPUs, or the cluster at `address` (which brings its own resources)
options = {"address": address} if address else {"num_cpus": 2}
results = run_benchmark(config, executor="ray", **options)
table = results.pivot(index="method", columns="metric", values="mean")
print(table.loc[[m.label for m in config.methods]].round(3).to_string())
