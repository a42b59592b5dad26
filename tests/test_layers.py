"""The layers of docs/design.md, read from the source: explain/ and metrics/ never import each
other (nor procedures/ or benchmark/); benchmark/ imports no private module of another package
(only public modules and the core's)."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pellucid"


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the pellucid modules a file imports (relative imports resolved)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith("pellucid")}


def files(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


@pytest.mark.parametrize("folder, forbidden", [
    ("explain", ("pellucid.metrics", "pellucid.procedures", "pellucid.benchmark")),
    ("metrics", ("pellucid.explain", "pellucid.procedures", "pellucid.benchmark")),
])
def test_methods_and_metrics_do_not_import_each_other(folder, forbidden):
    for path in files(folder):
        bad = {name for name in imported_modules(path) if name.startswith(forbidden)}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_the_core_imports_no_package_above_it():
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name in ("__init__.py", "cli.py", "zoo.py"):
            continue  # the package entry points
        above = ("pellucid.explain", "pellucid.metrics", "pellucid.procedures",
                 "pellucid.benchmark", "pellucid.plots")
        bad = {name for name in imported_modules(path) if name.startswith(above)}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_benchmark_imports_no_private_module_of_another_package():
    for path in files("benchmark"):
        for name in imported_modules(path):
            parts = name.split(".")
            private = [p for p in parts[2:] if p.startswith("_") and not p.startswith("__")]
            if len(parts) > 1 and parts[1] in ("explain", "metrics", "procedures", "plots",
                                               "datasets"):
                assert not private, f"{path.relative_to(PACKAGE)} imports {name}"


def test_the_import_reader_resolves_relative_imports():
    """The import reader sees relative and absolute imports (so the checks above can fail)."""
    folder = PACKAGE / "explain" / "cam"
    names = imported_modules(folder / "base.py")
    assert "pellucid._scorer" in names and "pellucid.explain.base" in names
