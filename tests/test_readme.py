"""The README's Python snippets run as written (the first one's names feed the later ones)."""
import re
from pathlib import Path

import matplotlib

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_snippets_run(tmp_path, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.setenv("PELLUCID_CACHE", str(tmp_path))
    blocks = python_blocks()
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    assert namespace["heatmaps"].shape == namespace["x"].shape[:1] + namespace["x"].shape[2:]
    assert 0.0 <= namespace["result"].mean <= 1.0
