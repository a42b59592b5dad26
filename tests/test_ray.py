"""The Ray executor (issue 17): the same table as the local executor whatever the number of
workers, a resume across executors, a worker SIGKILLed mid-task and a driver stopped by SIGINT
lose no cell and count none twice, and ``import pellucid`` never imports Ray. One local Ray
instance (2 CPUs) serves the whole file."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pellucid import cli
from pellucid.benchmark import (BenchmarkConfig, DatasetSpec, MethodSpec, MetricSpec,
                                run_benchmark)
from pellucid.metrics import RelevanceMass
from test_benchmark import CountingExplainer, MeanHeatmap, make_config, tiny_cnn, tiny_data

TESTS = str(Path(__file__).resolve().parent)
TIMES = ["explain_s_per_sample", "metric_s"]  # wall-clock: differ from run to run


@pytest.fixture(scope="module")
def ray_instance():
    """A local Ray instance whose workers can import this folder's modules (the test classes
    are pickled by reference): the raylet, which starts them, inherits PYTHONPATH."""
    ray = pytest.importorskip("ray")
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [TESTS, before]))
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def reset_counters():
    CountingExplainer.calls = MeanHeatmap.calls = Logged.calls = 0
    MeanHeatmap.interrupt_on = Logged.interrupt_on = None


def kill_once(marker: str, spare_pid: int) -> None:
    """SIGKILL this process the first time (``marker`` absent), unless it is ``spare_pid``
    (the test process itself)."""
    if marker and os.getpid() != spare_pid and not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)


class Logged(MeanHeatmap):
    """MeanHeatmap that appends the Ray job running it (or "local") to the file ``log``,
    sleeps ``pause`` s, and with a ``kill`` marker kills its own worker the first time."""

    def __init__(self, model, *, log: str = "", pause: float = 0.0, kill: str = "",
                 spare_pid: int = 0, offset: float = 0.0, **common):
        super().__init__(model, offset=offset, **common)
        self.log, self.pause, self.kill, self.spare_pid = log, pause, kill, spare_pid

    def _score(self, inputs, heatmaps, scorer):
        kill_once(self.kill, self.spare_pid)
        if self.log:
            with open(self.log, "a") as f:
                f.write(f"{job_id()} {os.getpid()} {torch.get_num_threads()} {cpus()}\n")
        time.sleep(self.pause)
        return super()._score(inputs, heatmaps, scorer)


class KillOnceExplainer(CountingExplainer):
    def __init__(self, model, *, kill: str = "", spare_pid: int = 0, scale: float = 1.0,
                 **common):
        super().__init__(model, scale=scale, **common)
        self.kill, self.spare_pid = kill, spare_pid

    def _explain(self, x, scorer):
        kill_once(self.kill, self.spare_pid)
        return super()._explain(x, scorer)


def job_id() -> str:
    ray = sys.modules.get("ray")
    return ray.get_runtime_context().get_job_id() if ray and ray.is_initialized() else "local"


def cpus() -> float:
    """The CPUs Ray gave the task running this (0 outside a task)."""
    ray = sys.modules.get("ray")
    if not (ray and ray.is_initialized()) or ray.get_runtime_context().worker.mode != (
            ray.WORKER_MODE):
        return 0.0
    return ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)


def logged_config(out, log, pause: float = 0.0, **overrides) -> BenchmarkConfig:
    """3 methods x 4 metrics, every metric call logged."""
    metrics = [MetricSpec(Logged, {"log": str(log), "pause": pause, "offset": float(k)},
                          label=f"mean+{k}") for k in range(4)]
    return make_config(out, metrics=metrics, **overrides)


def logged_calls(log: Path, job: str) -> int:
    """Metric calls of Ray job ``job`` made by its workers (not by this process)."""
    calls = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    return sum(j == job and pid != str(os.getpid()) for j, pid, *_ in calls)


def same_table(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.drop(columns=TIMES), b.drop(columns=TIMES),
                                  check_exact=True)
    pd.testing.assert_frame_equal(a.attrs["pairwise"], b.attrs["pairwise"], check_exact=True)


def same_scores(out_a: Path, out_b: Path) -> None:
    files = sorted(p.name for p in (out_a / "cache").rglob("*.npz"))
    assert files == sorted(p.name for p in (out_b / "cache").rglob("*.npz")) and files
    for a in (out_a / "cache").rglob("*.npz"):
        b = out_b / a.relative_to(out_a)
        with np.load(a) as x, np.load(b) as y:
            assert x.files == y.files
            for name in x.files:
                np.testing.assert_array_equal(x[name], y[name])


def two_dataset_config(out, resources=None) -> BenchmarkConfig:
    def spec(kind, *args, **kwargs):
        return kind(*args, **kwargs, resources=resources)
    return BenchmarkConfig(
        datasets=[DatasetSpec("with_masks", model=tiny_cnn(), data=tiny_data()),
                  DatasetSpec("no_masks", model=tiny_cnn(seed=1), data=tiny_data(masks=False))],
        methods=[spec(MethodSpec, CountingExplainer, label="input"),
                 spec(MethodSpec, CountingExplainer, {"scale": 2.0}, label="double"),
                 spec(MethodSpec, "Random"), spec(MethodSpec, "Saliency")],
        metrics=[spec(MetricSpec, MeanHeatmap, label="mean"),
                 spec(MetricSpec, "Deletion", {"step": 8}),
                 spec(MetricSpec, RelevanceMass, datasets=["with_masks"]),
                 spec(MetricSpec, "SensitivityMax", {"nb_samples": 2}, datasets=["no_masks"])],
        n_samples=5, seed=0, out=out)


def test_importing_pellucid_never_imports_ray():
    code = ("import sys, pellucid, pellucid.benchmark, pellucid.cli\n"
            "from pellucid.benchmark import run_benchmark\n"
            "import pellucid.benchmark.runner\n"
            "assert 'ray' not in sys.modules, sorted(m for m in sys.modules if 'ray' in m)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_ray_gives_the_same_table_as_local_whatever_the_number_of_workers(ray_instance,
                                                                          tmp_path):
    local = run_benchmark(two_dataset_config(tmp_path / "local"), progress=False)
    assert len(local) == 4 * 3 + 4 * 3  # SensitivityMax re-explains with the cell's method
    two_workers = run_benchmark(two_dataset_config(tmp_path / "ray"), executor="ray",
                                progress=False)
    same_table(two_workers, local)
    same_scores(tmp_path / "ray", tmp_path / "local")
    # every task asks for both CPUs: one task at a time; resources are not in the fingerprint
    one_worker = run_benchmark(two_dataset_config(tmp_path / "one", {"num_cpus": 2}),
                               executor="ray", progress=False)
    same_table(one_worker, local)
    same_scores(tmp_path / "one", tmp_path / "local")
    on_disk = pd.read_csv(tmp_path / "ray" / "results.csv")
    assert len(on_disk) == len(local) and on_disk["fingerprint"].is_unique


def test_a_run_started_locally_is_finished_on_ray_and_the_other_way(ray_instance, tmp_path):
    log = tmp_path / "calls.log"
    complete = run_benchmark(logged_config(tmp_path / "whole", log), progress=False)
    Logged.calls, Logged.interrupt_on = 0, 5  # Ctrl-C during the 5th local cell
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(logged_config(tmp_path / "cut", log), progress=False)
    Logged.interrupt_on = None
    assert len(pd.read_csv(tmp_path / "cut" / "results.csv")) == 4
    finished = run_benchmark(logged_config(tmp_path / "cut", log), executor="ray",
                             progress=False)
    assert logged_calls(log, job_id()) == 12 - 4  # only the unfinished cells ran on Ray
    same_table(finished, complete)

    Logged.calls = CountingExplainer.calls = 0
    again = run_benchmark(logged_config(tmp_path / "cut", log), progress=False)
    assert Logged.calls == 0 and CountingExplainer.calls == 0  # nothing left, locally
    same_table(again, complete)


def test_a_worker_killed_mid_task_is_retried_and_every_cell_saved_once(ray_instance, tmp_path):
    """The first explanation task and the first metric task SIGKILL their own worker."""
    markers = [tmp_path / "explainer-killed", tmp_path / "metric-killed"]

    def config(out):
        kill = {"kill": str(markers[0]), "spare_pid": os.getpid()}
        return make_config(out, methods=[MethodSpec(KillOnceExplainer, kill, label="input"),
                                         MethodSpec(CountingExplainer, {"scale": 2.0},
                                                    label="double"), MethodSpec("Random")],
                           metrics=[MetricSpec(Logged, {"kill": str(markers[1]),
                                                        "spare_pid": os.getpid()},
                                               label="mean"),
                                    MetricSpec(MeanHeatmap, {"offset": 1.0}, label="mean+1")])

    complete = run_benchmark(config(tmp_path / "local"), progress=False)  # kills nothing here
    assert not any(m.exists() for m in markers)
    results = run_benchmark(config(tmp_path / "ray"), executor="ray", progress=False)
    assert all(m.exists() for m in markers)  # both workers were killed mid-task
    same_table(results, complete)
    on_disk = pd.read_csv(tmp_path / "ray" / "results.csv")  # parses: no torn row
    assert len(on_disk) == 6 and on_disk["fingerprint"].is_unique


DRIVER = """
import sys
sys.path.insert(0, {tests!r})
from pellucid.benchmark import run_benchmark
from test_ray import logged_config
run_benchmark(logged_config(sys.argv[1], sys.argv[2], pause=0.5), executor="ray",
              address=sys.argv[3], progress=False)
"""


def test_a_driver_stopped_by_sigint_resumes_without_recomputing_finished_cells(ray_instance,
                                                                              tmp_path):
    """A driver joined to the running instance (address=...) gets SIGINT once 3 cells are
    saved; the rerun computes only the cells that were not."""
    out, log = tmp_path / "out", tmp_path / "calls.log"
    address = ray_instance.get_runtime_context().gcs_address
    child = subprocess.Popen([sys.executable, "-c", DRIVER.format(tests=TESTS), str(out),
                              str(log), address], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    results = out / "results.csv"
    deadline = time.monotonic() + 120
    while not (results.exists() and results.read_text().count("\n") >= 1 + 3):
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=120)
    assert child.returncode != 0 and "KeyboardInterrupt" in stderr, stderr
    assert "benchmark stopped" in stdout
    saved = pd.read_csv(results)
    assert 3 <= len(saved) < 12

    resumed = run_benchmark(logged_config(out, log, pause=0.5), executor="ray", progress=False)
    assert logged_calls(log, job_id()) == 12 - len(saved)
    on_disk = pd.read_csv(results)
    assert len(on_disk) == 12 and on_disk["fingerprint"].is_unique
    pd.testing.assert_frame_equal(on_disk.iloc[:len(saved)], saved)  # kept as they were
    complete = run_benchmark(logged_config(tmp_path / "local", tmp_path / "local.log"),
                             progress=False)
    pd.testing.assert_frame_equal(resumed.drop(columns=TIMES + ["fingerprint"]),
                                  complete.drop(columns=TIMES + ["fingerprint"]),
                                  check_exact=True)


def test_a_task_gets_the_resources_its_spec_declares(ray_instance, tmp_path):
    from pellucid.benchmark.ray_executor import options
    log = tmp_path / "calls.log"
    metric = MetricSpec(Logged, {"log": str(log)}, resources={"num_cpus": 2, "memory": 1e8})
    assert options(metric) == {"num_cpus": 2, "memory": 100_000_000}
    assert options(MethodSpec("Saliency")) == {"num_cpus": 1}
    run_benchmark(make_config(tmp_path, methods=["Random"], metrics=[metric]), executor="ray",
                  progress=False)
    (line,) = log.read_text().splitlines()
    assert line.split()[2:] == ["2", "2.0"]  # torch threads, CPUs assigned by Ray


def test_the_methods_in_flight_are_bounded(ray_instance, tmp_path, monkeypatch):
    """The object store holds the heatmaps of the methods in flight: at most twice the CPUs."""
    from pellucid.benchmark import ray_executor
    most, add = [], ray_executor.Tasks.add

    def add_and_count(self, *args):
        add(self, *args)
        most.append(len(self.left))

    monkeypatch.setattr(ray_executor.Tasks, "add", add_and_count)
    methods = [MethodSpec("Random", label=f"random-{k}") for k in range(10)]
    results = run_benchmark(make_config(tmp_path, methods=methods), executor="ray",
                            progress=False)
    assert len(results) == 10 * 2 and max(most) == 2 * 2


@pytest.mark.parametrize("options, message", [
    ({"executor": "spark"}, "executor must be one of"),
    ({"address": "auto"}, r"\['address'\] are options of executor='ray'"),
    ({"executor": "local", "num_cpus": 2}, r"\['num_cpus'\] are options of executor='ray'"),
    ({"executor": "ray", "address": "auto", "num_gpus": 1}, "a cluster at address= brings"),
    ({"executor": "ray", "num_cpus": 0}, "num_cpus must be an integer >= 1"),
    ({"executor": "ray", "num_gpus": -1}, "num_gpus must be a number >= 0"),
])
def test_bad_executor_options_are_refused_before_any_work(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        run_benchmark(make_config(tmp_path), progress=False, **options)
    assert not (tmp_path / "results.csv").exists() and CountingExplainer.calls == 0


def test_sizing_the_ray_instance_already_running_is_refused(ray_instance, tmp_path):
    with pytest.raises(ValueError, match="Ray is already initialized"):
        run_benchmark(make_config(tmp_path), executor="ray", num_cpus=2, progress=False)
    assert not (tmp_path / "results.csv").exists()


@pytest.mark.parametrize("resources, message", [
    ({"cpus": 1}, r"unknown keys \['cpus'\]"),
    ({"num_gpus": -0.5}, "num_gpus must be a number >= 0"),
    ({"memory": "2GB"}, "memory must be a number >= 0"),
])
def test_bad_resources_are_refused(resources, message):
    with pytest.raises(ValueError, match=message):
        MethodSpec("Saliency", resources=resources)


def test_cli_passes_the_executor_options(monkeypatch, tmp_path):
    import pellucid.benchmark as benchmark
    seen = {}

    def fake_run(config, **kwargs):
        seen.update(kwargs)
        raise KeyboardInterrupt  # stop before the report

    monkeypatch.setattr(benchmark, "run_benchmark", fake_run)
    toml = Path(TESTS).parent / "examples" / "benchmark.toml"
    argv = ["benchmark", str(toml), "--executor", "ray", "--address", "ray://head:10001",
            "--no-progress"]
    assert cli.main(argv) == 130
    assert seen == {"out": None, "progress": False, "executor": "ray",
                    "address": "ray://head:10001", "num_cpus": None, "num_gpus": None}
    assert cli.main(["benchmark", str(toml), "--executor", "ray", "--num-cpus", "2",
                     "--num-gpus", "0.5"]) == 130
    assert (seen["num_cpus"], seen["num_gpus"], seen["address"]) == (2, 0.5, None)
    assert cli.main(["demo", "--out", str(tmp_path), "--executor", "ray"]) == 130
    assert seen["executor"] == "ray"
