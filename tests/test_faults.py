"""No finished result is lost and none is counted twice when a results write is cut short: a
torn last line (a kill or a full disk in the middle of an append) is cut off and its cell
computed again; any other damage raises instead of being skipped (issue 20)."""
import errno

import pandas as pd
import pytest

import pellucid.benchmark.runner as runner
from pellucid.benchmark import RESULT_COLUMNS, run_benchmark
from test_benchmark import make_config

TIMES = ["explain_s_per_sample", "metric_s"]  # wall-clock: differ from run to run


def same_results(again: pd.DataFrame, complete: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(again.drop(columns=TIMES), complete.drop(columns=TIMES),
                                  check_dtype=False)


def test_a_torn_last_row_is_cut_off_and_its_cell_computed_again(tmp_path):
    complete = run_benchmark(make_config(tmp_path / "whole"), progress=False)
    run_benchmark(make_config(tmp_path / "torn"), progress=False)
    path = tmp_path / "torn" / "results.csv"
    path.write_bytes(path.read_bytes()[:-60])  # the last row loses its end
    with pytest.warns(RuntimeWarning, match="cut short"):
        again = run_benchmark(make_config(tmp_path / "torn"), progress=False)
    same_results(again, complete)
    on_disk = pd.read_csv(path)  # readable again, one row per cell
    assert len(on_disk) == 6 and on_disk["fingerprint"].is_unique


def test_a_full_disk_during_an_append_loses_nothing(tmp_path, monkeypatch):
    complete = run_benchmark(make_config(tmp_path / "whole"), progress=False)
    original, calls = runner.append_row, []

    def append_until_the_disk_is_full(path, row):
        calls.append(row)
        if len(calls) < 4:
            return original(path, row)
        with path.open("a") as f:  # half a line fits, then the disk is full
            f.write(",".join(str(row[c]) for c in RESULT_COLUMNS)[:25])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runner, "append_row", append_until_the_disk_is_full)
    with pytest.raises(OSError, match="No space left"):
        run_benchmark(make_config(tmp_path / "full"), progress=False)
    monkeypatch.setattr(runner, "append_row", original)
    with pytest.warns(RuntimeWarning, match="cut short"):
        again = run_benchmark(make_config(tmp_path / "full"), progress=False)
    same_results(again, complete)
    assert pd.read_csv(tmp_path / "full" / "results.csv")["fingerprint"].is_unique


def test_a_damaged_line_in_the_middle_is_reported_not_skipped(tmp_path):
    run_benchmark(make_config(tmp_path), progress=False)
    path = tmp_path / "results.csv"
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = lines[2].replace(",", ";", 3)
    path.write_text("".join(lines))
    with pytest.raises(ValueError, match="line 3, is damaged"):
        run_benchmark(make_config(tmp_path), progress=False)


def test_a_file_holding_only_a_torn_header_starts_over(tmp_path):
    complete = run_benchmark(make_config(tmp_path / "whole"), progress=False)
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "results.csv").write_text("dataset,mod")
    with pytest.warns(RuntimeWarning, match="cut short"):
        again = run_benchmark(make_config(tmp_path / "fresh"), progress=False)
    same_results(again, complete)


@pytest.mark.parametrize("damaged", ["samples-*.pt", "input-*.pt", "input__mean-*.npz"])
def test_a_damaged_cache_file_is_computed_again(tmp_path, damaged):
    """Samples, heatmaps or per-input scores damaged outside pellucid (its own writes are
    atomic): the rerun warns, recomputes what the file held, and gives the same results and
    a report."""
    from pellucid.benchmark import write_report
    complete = run_benchmark(make_config(tmp_path / "whole"), progress=False)
    config = make_config(tmp_path / "damaged")
    run_benchmark(config, progress=False)
    (path,) = (tmp_path / "damaged" / "cache").rglob(damaged)
    path.write_bytes(b"not what was saved")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        again = run_benchmark(config, progress=False)
    same_results(again, complete)
    assert write_report(config).is_file()


CHILD = """
import os, resource, signal, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
import pellucid.benchmark.runner as runner
from test_benchmark import make_config
mode, out = sys.argv[1], Path(sys.argv[2])
original, rows = runner.append_row, []

def append_then_fail(path, row):
    rows.append(row)
    if len(rows) == 3 and mode == "kill":
        with path.open("a") as f:  # half of the third row is on disk when the process dies
            f.write(",".join(str(v) for v in row.values())[:20])
            f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    if len(rows) == 3 and mode == "fsize":  # the file may not grow by more than 20 bytes
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        limit = path.stat().st_size + 20
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    return original(path, row)

runner.append_row = append_then_fail
if mode == "fsize-cache":  # no file may exceed 600 bytes: the first cache write fails
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (600, resource.RLIM_INFINITY))
runner.run_benchmark(make_config(out), progress=False)
"""


@pytest.mark.parametrize("mode", ["kill", "fsize", "fsize-cache"])
def test_a_killed_or_size_limited_run_resumes_to_the_same_results(tmp_path, mode):
    """A real SIGKILL in the middle of a results append, a real RLIMIT_FSIZE that stops the
    results file growing mid-row (EFBIG), and one that makes the first cache write fail: the
    next run gives the results of an uninterrupted one."""
    import subprocess
    import sys
    from pathlib import Path
    complete = run_benchmark(make_config(tmp_path / "whole"), progress=False)
    tests = str(Path(__file__).parent)
    child = subprocess.run([sys.executable, "-c", CHILD.format(tests=tests), mode,
                            str(tmp_path / "cut")], capture_output=True, text=True, timeout=120)
    assert child.returncode != 0  # killed, or stopped by the full "disk"
    if mode != "kill":  # torch.save's zip writer says so in its own words: OSError either way
        assert "File too large" in child.stderr or (
            "OSError: could not write" in child.stderr)
    if mode == "fsize-cache":  # atomic writes: no cache file, no row, nothing torn
        assert not list((tmp_path / "cut").rglob("*.pt")) and not list(
            (tmp_path / "cut").rglob("*.tmp*"))
        again = run_benchmark(make_config(tmp_path / "cut"), progress=False)
    else:
        with pytest.warns(RuntimeWarning, match="cut short"):
            again = run_benchmark(make_config(tmp_path / "cut"), progress=False)
    same_results(again, complete)
    assert pd.read_csv(tmp_path / "cut" / "results.csv")["fingerprint"].is_unique
