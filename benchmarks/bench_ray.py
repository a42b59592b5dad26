"""The Ray executor (issue 17): speed-up, per-task overhead, extrapolation and driver memory.

1. Ray's overhead per task, from empty tasks: the round trip of one task at a time, and the
   cost per task when 2000 are in flight (what a run pays per task once workers are busy).
2. The demo benchmark (63 cells: 2 datasets x 9 methods x 3-4 metrics) run by the local
   executor, then by Ray with 1 and with 2 workers (each on a fresh output folder, Ray started
   and its workers warmed beforehand: the start-up is printed apart), and whether the tables
   are the same.
3. The expected speed-up at 2, 8, 32 and 128 workers: the run's measured serial part (all but
   the cells: preparing the datasets, saving, statistics) plus a list schedule of the run's tasks
   (the measured cost of each heatmap and metric task plus the per-task overhead, each metric
   after its heatmaps, first come first served, as Ray runs them) on W workers. Printed for the
   demo (the 2-worker line checks the model against the measurement) and for a ResNet-50 /
   ImageNet plan: the same methods and metrics on 1000 images at 224 x 224 (RISE at 4000 masks),
   every cost scaled by the FLOPs of a forward pass (ResNet-50: 4.1 GMACs) and the number of
   images, preparing by predicting the 50 000 validation images.
4. The driver's memory (in a fresh process each) for a plan of 8 and of 64 cells whose heatmaps
   are 8 MiB per method: its peak RSS, and the peaks of the private part (its own heap: flat
   when the driver does not keep the heatmaps) and of the shared part (libraries and the pages
   of Ray's object store it has mapped while fetching results).

Run: ``python benchmarks/bench_ray.py [--skip-memory | --memory-only]`` (a few minutes on 2
cores; the speed-up needs a machine nobody else is using).
"""
from __future__ import annotations

import argparse
import heapq
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import ray
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pellucid import zoo
from pellucid.benchmark import BenchmarkConfig, DatasetSpec, MethodSpec, run_benchmark
from pellucid.benchmark.demo import demo_config
from pellucid.benchmark.runner import prepare_dataset

RESNET50_FLOPS = 2 * 4.1e9  # multiply-adds x 2, as FlopCounterMode counts
IMAGENET = {"n_samples": 1000, "n_test": 50_000, "rise_masks": 4000 / 2000}
WORKERS = (2, 8, 32, 128)
TIMES = ["explain_s_per_sample", "metric_s"]


@ray.remote
def empty() -> None:
    return None


@ray.remote
def warm() -> int:
    import pellucid.benchmark.ray_executor  # noqa: F401  (what the tasks import)
    time.sleep(0.5)  # keep this worker busy so that the next warm() starts another
    return 0


def start_ray(num_cpus: int) -> float:
    start = time.perf_counter()
    ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="ERROR")
    ray.get([warm.remote() for _ in range(num_cpus)])
    return time.perf_counter() - start


def task_overhead() -> tuple[float, float]:
    """Seconds per empty task: one at a time (round trip), and 2000 in flight."""
    ray.get([empty.remote() for _ in range(200)])
    start = time.perf_counter()
    for _ in range(200):
        ray.get(empty.remote())
    round_trip = (time.perf_counter() - start) / 200
    start = time.perf_counter()
    ray.get([empty.remote() for _ in range(2000)])
    return round_trip, (time.perf_counter() - start) / 2000


def timed_run(out: Path, **executor) -> tuple[pd.DataFrame, float]:
    start = time.perf_counter()
    table = run_benchmark(demo_config(out), progress=False, **executor)
    return table, time.perf_counter() - start


def tasks_of(table: pd.DataFrame, n_samples: int) -> list[tuple[float, list[float]]]:
    """(heatmaps seconds, [metric seconds]) of every (dataset, method), in submission order."""
    tasks = []
    for _, group in table.groupby(["dataset", "method"], sort=False):
        tasks.append((float(group["explain_s_per_sample"].iloc[0]) * n_samples,
                      list(group["metric_s"].astype(float))))
    return tasks


def makespan(tasks: list[tuple[float, list[float]]], workers: int, overhead: float) -> float:
    """List schedule on ``workers``: a free worker starts the first submitted task that is
    ready (a metric once its heatmaps are done); each costs its seconds plus ``overhead``."""
    free = [0.0] * workers  # when each worker is free, as a heap
    pending = [(0.0, i, h, i) for i, (h, _) in enumerate(tasks)]  # ready at, order, cost, heatmaps
    order, end = len(tasks), 0.0
    while pending:
        now = heapq.heappop(free)
        ready = [t for t in pending if t[0] <= now]
        task = min(ready, key=lambda t: t[1]) if ready else min(pending)
        pending.remove(task)
        done = max(now, task[0]) + task[2] + overhead
        heapq.heappush(free, done)
        end = max(end, done)
        if task[3] is not None:  # its metrics can start now
            for seconds in tasks[task[3]][1]:
                pending.append((done, order, seconds, None))
                order += 1
    return end


def split(tasks: list[tuple[float, list[float]]], parts: int) -> list[tuple[float, list[float]]]:
    """The same work with every heatmaps task and its metrics split into ``parts`` tasks of
    1 / parts of the inputs each (a what-if: the executor runs one task per (dataset, method))."""
    return [(h / parts, [m / parts for m in metrics]) for h, metrics in tasks
            for _ in range(parts)]


def flops(model: nn.Module, inputs: torch.Tensor) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(inputs[:1])
    return float(counter.get_total_flops())


def resnet_plan(table: pd.DataFrame, config, basis: str, prepare_s: float, flops_of: float,
                n_test: int) -> tuple[list, float]:
    """The tasks and preparation of dataset ``basis`` of the demo, scaled to ResNet-50 on
    ImageNet: by FLOPs per forward pass and by the number of images (explained; predicted when
    preparing)."""
    scale = RESNET50_FLOPS / flops_of * IMAGENET["n_samples"] / config.n_samples
    tasks = []
    for method, group in table[table["dataset"] == basis].groupby("method", sort=False):
        rise = IMAGENET["rise_masks"] if method == "RISE" else 1.0
        tasks.append((float(group["explain_s_per_sample"].iloc[0]) * config.n_samples
                      * scale * rise,
                      [s * scale for s, metric in zip(group["metric_s"], group["metric"])
                       if metric != "PointingGame"]))  # ImageNet has no masks
    return tasks, prepare_s * RESNET50_FLOPS / flops_of * IMAGENET["n_test"] / n_test


def extrapolate(name: str, tasks, serial: float, overhead: float, measured: dict) -> None:
    work = sum(h + sum(m) for h, m in tasks)
    local = serial + work
    print(f"\n{name}: {len(tasks)} heatmap tasks, {sum(len(m) for _, m in tasks)} metric "
          f"tasks, {work:.4g} s of cells, {serial:.4g} s serial (driver)")
    print(f"  {'workers':>8} {'expected s':>12} {'speed-up':>9}   measured")
    print(f"  {'local':>8} {local:12.4g} {1.0:9.2f}   {measured.get('local', '')}")
    for workers in (1, *WORKERS):
        seconds = serial + makespan(tasks, workers, overhead)
        print(f"  {workers:>8} {seconds:12.4g} {local / seconds:9.2f}   "
              f"{measured.get(workers, '')}")
    longest = max(h + max(m, default=0.0) for h, m in tasks)
    print(f"  bound: (serial + cells) / (serial + longest heatmaps + metric task) = "
          f"{local / (serial + longest):.1f}x")


# -- memory ---------------------------------------------------------------------------------
def memory_child(n_methods: int, out: str) -> None:
    """Run a plan of ``n_methods`` x 2 cells on Ray, print the driver's peak RSS (MiB)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Linear(16, 3)).eval()
    g = torch.Generator().manual_seed(0)
    data = SimpleNamespace(x_test=torch.rand(512, 1, 64, 64, generator=g),
                           y_test=torch.zeros(512, dtype=torch.long))
    config = BenchmarkConfig(
        datasets=[DatasetSpec("noise", model=model, data=data)],
        methods=[MethodSpec("Random", label=f"random-{k}") for k in range(n_methods)],
        metrics=[{"name": "Deletion", "params": {"step": 1024}},
                 {"name": "Insertion", "params": {"step": 1024}}],
        n_samples=512, seed=0, out=out)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    peaks, running = {"private": 0.0, "shared": 0.0}, threading.Event()

    def sample() -> None:  # the kernel keeps the peak of the RSS only: sample the split
        while not running.wait(0.02):
            usage = memory_split()
            for key in peaks:
                peaks[key] = max(peaks[key], usage[key])

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        run_benchmark(config, executor="ray", progress=False)
    finally:
        running.set()
        sampler.join()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, peaks["private"],
          peaks["shared"])


def memory_split() -> dict[str, float]:
    """MiB of this process's memory that is its own (heap, stacks) and shared (libraries,
    Ray's object store mapped in), from /proc/self/smaps_rollup."""
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = float(value) / 1024
    return {"private": fields["Private_Clean"] + fields["Private_Dirty"],
            "shared": fields["Shared_Clean"] + fields["Shared_Dirty"]}


def driver_memory() -> None:
    print("\ndriver memory, fresh process each (heatmaps 512 x 64 x 64 float32 = 8 MiB per "
          "method); peak RSS, and the peaks of its private and shared parts (sampled):")
    for n_methods in (4, 32):
        with tempfile.TemporaryDirectory() as out:
            child = subprocess.run([sys.executable, __file__, "--memory-child", str(n_methods),
                                    out], capture_output=True, text=True, check=True)
        rss, private, shared = map(float, child.stdout.split()[-3:])
        print(f"  {n_methods * 2:>3} cells: RSS {rss:5.0f} MiB, private {private:5.0f} MiB, "
              f"shared {shared:5.0f} MiB   (all heatmaps together: {n_methods * 8} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--memory-child", nargs=2, metavar=("N_METHODS", "OUT"))
    args = parser.parse_args()
    if args.memory_child:
        return memory_child(int(args.memory_child[0]), args.memory_child[1])
    if args.memory_only:
        return driver_memory()
    torch.set_num_threads(1)  # as `pellucid demo`: tiny models, one thread per process
    config = demo_config("unused")
    for spec in config.datasets:  # train (or load) the zoo models before anything is timed
        zoo.get_model(spec.model, seed=config.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepare_s, flops_of, n_test = {}, {}, {}
        for spec in config.datasets:
            start = time.perf_counter()
            prepared = prepare_dataset(spec, tmp / f"{spec.name}.pt", config)
            prepare_s[spec.name] = time.perf_counter() - start
            flops_of[spec.name] = flops(prepared.model, prepared.inputs)
            n_test[spec.name] = len(zoo.load_dataset(spec.model).x_test)
        local, local_s = timed_run(tmp / "local")
        runs = {}
        for workers in (1, 2):
            startup = start_ray(workers)
            if workers == 2:
                round_trip, per_task = task_overhead()
            runs[workers] = timed_run(tmp / f"ray{workers}", executor="ray")
            ray.shutdown()
            print(f"Ray with {workers} worker(s): start-up and warm-up {startup:.1f} s, "
                  f"run {runs[workers][1]:.1f} s")
    same = all(local.drop(columns=TIMES).equals(t.drop(columns=TIMES)) for t, _ in
               runs.values())
    print(f"\nempty Ray task: {round_trip * 1e3:.2f} ms round trip, {per_task * 1e3:.3f} ms per "
          "task with 2000 in flight")
    print(f"demo, {len(local)} cells: local {local_s:.1f} s, Ray 1 worker {runs[1][1]:.1f} s, "
          f"2 workers {runs[2][1]:.1f} s: speed-up 2 vs 1 workers "
          f"{runs[1][1] / runs[2][1]:.2f}x, 2 workers vs local {local_s / runs[2][1]:.2f}x; "
          f"tables identical to local (but the timings): {same}")
    tasks = tasks_of(local, config.n_samples)
    serial = local_s - sum(h + sum(m) for h, m in tasks)
    extrapolate("demo", tasks, serial, per_task,
                {"local": f"{local_s:.1f}", 1: f"{runs[1][1]:.1f}", 2: f"{runs[2][1]:.1f}"})
    basis = "blockmnist"
    r50_tasks, r50_prepare = resnet_plan(local, config, basis, prepare_s[basis],
                                         flops_of[basis], n_test[basis])
    print(f"\nFLOPs per forward pass: {flops_of} (ResNet-50: {RESNET50_FLOPS:.3g}); the "
          f"ResNet-50 plan scales the {basis} cells")
    r50_serial = r50_prepare + serial - sum(prepare_s.values())
    extrapolate("ResNet-50 / ImageNet plan (scaled by FLOPs; seconds at the demo's cost per "
                "FLOP, which tiny models make an upper bound: read the speed-ups)", r50_tasks,
                r50_serial, per_task, {})
    parts = IMAGENET["n_samples"] // 50
    extrapolate(f"what if: the same plan in tasks of 50 inputs ({parts} per method; not what "
                "the executor does)", split(r50_tasks, parts), r50_serial, per_task, {})
    if not args.skip_memory:
        driver_memory()


if __name__ == "__main__":
    main()
