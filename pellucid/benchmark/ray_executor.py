"""The Ray executor of the benchmark (``run_benchmark(..., executor="ray")``): the cells of a run
as Ray tasks, on a laptop's cores or on a cluster.

- The heatmaps of one (dataset, method) are one task; each metric over them is a task that
  depends on it: the heatmaps go from one to the other through Ray's object store.
- Each dataset's model and explained inputs are put in the object store once per run, and every
  task of the dataset reads them from there.
- A task asks for its spec's ``resources`` (``num_cpus``, default 1, ``num_gpus``, ``memory``)
  and runs torch on that many threads. A metric is its own task, so a heavy one waits for the
  resources it declares without holding the others back.
- A task whose worker dies (killed, out of memory, a node lost) is retried up to
  :data:`MAX_RETRIES` times; an exception raised by a method or a metric is not (it would raise
  again) and stops the run, as locally.
- The driver is the only writer: workers return results, the driver saves each as it arrives
  (heatmaps, per-input scores, then the row, through :class:`~pellucid.benchmark.runner.Plan`),
  so the files, the resume and the progress bar are those of the local executor, and the driver
  holds one result at a time, never the run's heatmaps. At most twice as many (dataset, method)
  are in flight as the cluster has CPUs, so the object store holds that many heatmaps at most,
  however many cells the run has.
- Every task gets the benchmark's seed: the numbers do not depend on the executor or on the
  number of workers.

Ray is imported here only, when a run asks for it: ``import pellucid`` never imports it.
"""
from __future__ import annotations

import itertools
from typing import Any

import torch

from .runner import (Plan, PreparedDataset, build_metric, explain, load_cached, save_heatmaps,
                     score)

MAX_RETRIES = 3
WAIT_S = 0.5  # the driver wakes up at least this often, so Ctrl-C stops it promptly


def run_on_ray(plan: Plan, *, address: str | None = None, num_cpus: int | None = None,
               num_gpus: float | None = None) -> None:
    """Run the plan's unfinished cells as Ray tasks, saving each result as it arrives.

    Joins the Ray instance already initialized in this process, or the cluster at ``address``,
    or starts a local instance of ``num_cpus`` CPUs and ``num_gpus`` GPUs; leaves what it found
    running and stops (or leaves) what it started. Stopped by an exception or Ctrl-C, it
    cancels the tasks still pending."""
    ray = import_ray()
    started = connect(ray, address, num_cpus, num_gpus)
    tasks = Tasks()
    try:
        schedule(ray, plan, tasks)
        while tasks.pending:
            collect(ray, plan, tasks, timeout=WAIT_S)
    finally:
        for ref in tasks.pending:
            ray.cancel(ref)
        if started:
            ray.shutdown()


class Tasks:
    """The tasks in flight (what to do with each result) and, per (dataset, method), how many
    of its tasks are: the heatmaps of a method stay in the object store until its last metric
    is done, so the driver bounds how many methods are in flight."""

    def __init__(self):
        self.pending: dict[Any, tuple[str, Any, int]] = {}
        self.left: dict[int, int] = {}  # tasks in flight of each (dataset, method)

    def add(self, ref: Any, kind: str, cell: Any, group: int) -> None:
        self.pending[ref] = (kind, cell, group)
        self.left[group] = self.left.get(group, 0) + 1

    def pop(self, ref: Any) -> tuple[str, Any]:
        kind, cell, group = self.pending.pop(ref)
        self.left[group] -= 1
        if not self.left[group]:
            del self.left[group]
        return kind, cell


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError("executor='ray' needs Ray: pip install 'pellucid[ray]' (or "
                          "pip install 'ray>=2.9')") from None
    return ray


def connect(ray: Any, address: str | None, num_cpus: int | None, num_gpus: float | None
            ) -> bool:
    """Initialize Ray unless it already is; returns whether this call did."""
    if ray.is_initialized():
        if (address, num_cpus, num_gpus) != (None, None, None):
            raise ValueError("Ray is already initialized in this process: leave address, "
                             "num_cpus and num_gpus out to run on it")
        return False
    if address is not None:
        ray.init(address=address)
    else:
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False)
    return True


def schedule(ray: Any, plan: Plan, tasks: Tasks) -> None:
    """Submit the tasks of every unfinished cell, with at most twice as many methods in flight
    as the cluster has CPUs (the object store holds their heatmaps); the driver prepares the
    datasets (it writes their samples) and saves the results that come back meanwhile."""
    explain_task = ray.remote(max_retries=MAX_RETRIES)(run_explain)
    score_task = ray.remote(max_retries=MAX_RETRIES)(run_score)
    seed = plan.config.seed
    max_methods = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    groups = itertools.count()
    for spec, dataset_cells in plan.datasets_to_run():
        prepared = ray.put(plan.prepare(spec, dataset_cells))
        for group, method_cells in zip(groups, plan.methods_to_run(dataset_cells)):
            while len(tasks.left) >= max_methods:
                collect(ray, plan, tasks, timeout=WAIT_S)
            first = method_cells[0]
            saved = load_cached(first.heatmaps_path)
            if saved is None:
                heatmaps = explain_task.options(**options(first.method)).remote(
                    prepared, first.method, plan.methods[first.method.label], seed,
                    threads(first.method))
                tasks.add(heatmaps, "heatmaps", first, group)
            else:
                heatmaps = ray.put(saved)
                del saved
            for cell in method_cells:
                if cell.fingerprint not in plan.done:
                    ref = score_task.options(**options(cell.metric)).remote(
                        prepared, heatmaps, plan.metrics[cell.metric.label], cell.metric.params,
                        (plan.methods[cell.method.label], cell.method.params), seed,
                        threads(cell.metric))
                    tasks.add(ref, "scores", cell, group)
        collect(ray, plan, tasks, timeout=0)


def collect(ray: Any, plan: Plan, tasks: Tasks, timeout: float) -> None:
    """Save every result that is ready (waiting up to ``timeout`` s for the first one)."""
    if not tasks.pending:
        return
    refs = list(tasks.pending)
    ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
    if ready:
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
    for ref in ready:
        kind, cell = tasks.pop(ref)
        value = ray.get(ref)
        if kind == "heatmaps":
            save_heatmaps(cell.heatmaps_path, value)
        else:
            plan.record(cell, *value)
        del value


def options(spec: Any) -> dict[str, Any]:
    """Ray options of a method's or a metric's tasks: its resources (one CPU by default;
    ``memory`` in whole bytes)."""
    resources = {"num_cpus": 1, **(spec.resources or {})}
    if "memory" in resources:
        resources["memory"] = int(resources["memory"])
    return resources


def threads(spec: Any) -> int:
    return max(1, int(options(spec)["num_cpus"]))


def run_explain(prepared: PreparedDataset, method: Any, method_class: type, seed: int,
                n_threads: int) -> dict[str, Any]:
    """Task: the heatmaps of one (dataset, method), as its cache file holds them."""
    torch.set_num_threads(n_threads)
    return explain(method, method_class, prepared, seed)


def run_score(prepared: PreparedDataset, saved: dict[str, Any], metric_class: type,
              params: dict[str, Any], method: tuple[type, dict[str, Any]], seed: int,
              n_threads: int) -> tuple[Any, float, float]:
    """Task: one metric over the heatmaps of one (dataset, method): its result, the seconds it
    took and the explanation seconds per sample (``method``, ``(class, params)``, for the
    metrics that re-explain inputs)."""
    torch.set_num_threads(n_threads)
    metric = build_metric(metric_class, prepared.model, params, seed, method)
    result, seconds = score(metric, prepared, saved["heatmaps"])
    return result, seconds, saved["seconds_per_sample"]
