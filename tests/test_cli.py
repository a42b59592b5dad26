"""The ``pellucid`` command: help texts, version, ``demo --quick`` end to end (report, CSV), and
``benchmark CONFIG`` with a TOML file."""
from __future__ import annotations

import re
import runpy
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import torch

import pellucid
from pellucid.benchmark.demo import demo_config
from pellucid.cli import main


class ImageSources(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.sources.append(attrs["src"])
        if tag == "a":
            self.links.append(attrs["href"])


@pytest.fixture(scope="module")
def zoo_cache(tmp_path_factory):
    """A fresh zoo cache shared by this module's tests (the BlockMNIST CNN is trained once)."""
    cache = tmp_path_factory.mktemp("zoo-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PELLUCID_CACHE", str(cache))
        yield cache


def test_help_names_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "pellucid demo" in text and "pellucid benchmark" in text and "report" in text

    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--out DIR" in text and "--quick" in text and "index.html" in text


def test_version_through_python_dash_m(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["pellucid", "--version"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("pellucid", run_name="__main__")
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"pellucid {pellucid.__version__}"


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "usage: pellucid" in capsys.readouterr().out


def test_quick_demo_writes_a_report_whose_images_exist(tmp_path, zoo_cache, capsys):
    out = tmp_path / "demo"
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
        assert torch.get_num_threads() == 2  # the demo runs on one thread, then gives it back
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    index = out / "index.html"
    assert f"report: {index.resolve()}" in printed
    assert "blockmnist" in printed and "Deletion ↓" in printed and "Insertion ↑" in printed

    page = ImageSources()
    page.feed(index.read_text(encoding="utf-8"))
    assert len(page.sources) >= 3  # method grid, deletion and insertion curves
    for source in page.sources:
        assert not Path(source).is_absolute() and (out / source).is_file(), source
    assert "results.csv" in page.links and "<script" not in index.read_text()

    config = demo_config(out, quick=True)
    results = pd.read_csv(out / "results.csv")
    expected = {(d.name, m.label, k.label) for d in config.datasets
                for m in config.methods_for(d.name) for k in config.metrics_for(d.name)}
    cells = list(zip(results.dataset, results.method, results.metric))
    assert len(cells) == len(set(cells)) == len(expected)
    assert set(cells) == expected
    assert results["mean"].notna().all()
    # every method family of pellucid.explain is in the demo
    families = {"Saliency", "IntegratedGradients", "Occlusion", "Rise", "SobolAttribution",
                "DeepLift", "HiResCAM"}
    assert families <= {m.name for m in config.methods}


def test_benchmark_command_runs_a_toml_config_and_resumes(tmp_path, zoo_cache, capsys,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)  # `out` is relative to the working directory
    config = tmp_path / "bench.toml"
    config.write_text('''
out = "results"
n_samples = 3
[[datasets]]
name = "blockmnist"
model = "blockmnist_cnn"
[[methods]]
name = "Saliency"
[[methods]]
name = "Random"
[[metrics]]
name = "PointingGame"
''')
    assert main(["benchmark", str(config), "--no-progress"]) == 0
    results = pd.read_csv(tmp_path / "results" / "results.csv")
    assert list(results.method) == ["Saliency", "Random"] and (results.n == 3).all()
    assert (tmp_path / "results" / "index.html").is_file()
    first = capsys.readouterr().out
    assert re.search(r"2 results in \d+ s", first)

    assert main(["benchmark", str(config), "--no-progress"]) == 0  # nothing left to compute
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "results" / "results.csv"), results)


def test_benchmark_command_reports_config_errors(tmp_path, capsys):
    assert main(["benchmark", str(tmp_path / "nope.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_ctrl_c_tells_how_to_resume(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("pellucid.benchmark.run_benchmark", interrupted)
    assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 130
    assert "run the same command again to resume" in capsys.readouterr().err


def test_an_output_folder_that_cannot_be_written_gets_one_line(tmp_path, capsys):
    a_file = tmp_path / "taken"
    a_file.write_text("not a folder")
    assert main(["demo", "--quick", "--out", str(a_file), "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("pellucid demo: cannot write the results:")
    assert len(error.strip().splitlines()) == 1 and "Traceback" not in error


def test_the_demo_report_has_a_concept_section_ranked_by_importance(tmp_path, zoo_cache):
    """The full demo adds CRAFT's concepts of one digit (the quick one skips them): the section
    and its gallery exist, and the bottleneck's and the concept metrics' numbers are in their
    ranges."""
    from pellucid.benchmark.concept_report import concept_section
    section = concept_section(tmp_path, digit=3, n_concepts=3)
    page = ImageSources()
    page.feed(section)
    assert page.sources == ["figures/concepts-digit3.png"]
    assert (tmp_path / page.sources[0]).is_file()
    values = dict(re.findall(r"<tr><td>([a-z ]+)</td><td>([-0-9.e]+)</td></tr>", section))
    assert set(values) == {"reconstruction error", "sparsity", "hoyer sparsity", "fidelity"}
    assert 0.0 <= float(values["fidelity"]) <= 1.0
    concept = dict(re.findall(r"<tr><td>(C-[A-Za-zµ]+) [↓↑]</td><td>([-0-9.e]+)</td></tr>",
                              section))
    assert set(concept) == {"C-Deletion", "C-Insertion", "C-µFidelity"}
    assert 0 <= float(concept["C-Deletion"]) <= 1 and 0 <= float(concept["C-Insertion"]) <= 1
    assert -1 <= float(concept["C-µFidelity"]) <= 1
