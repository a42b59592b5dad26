"""The ``pellucid`` command: ``pellucid demo`` and ``pellucid benchmark CONFIG``."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from . import __version__

DESCRIPTION = """\
pellucid explains the predictions of image and tabular models (saliency maps from gradients,
occlusion, RISE, Sobol, DeepLIFT, Grad-CAM, ...) and measures how faithful those explanations
are (deletion, insertion, MuFidelity, pointing game, ...).

Start here:
  pellucid demo                 trains two tiny models (seconds), explains a few images with
                                every family of methods, scores them, and writes an HTML
                                report to ./pellucid-demo/index.html
  pellucid benchmark FILE.toml  runs your own comparison (see examples/benchmark.toml)

Add --help after a command for its options."""

DEMO_HELP = """\
Train (or load from the cache) two tiny CNNs, one on handwritten digits and one on BlockMNIST
(images whose label depends only on a digit block, so we know where the evidence is), explain a
few test images with gradient, occlusion, RISE, Sobol, DeepLIFT and CAM (HiResCAM) methods and
a random control, score every heatmap with deletion, insertion, MuFidelity and the pointing game,
print a summary table and write an HTML report (open index.html in a browser). Takes well
under a minute on a laptop CPU (about 25 s on two cores, training included); --quick about 8 s.
Models are cached in ~/.cache/pellucid (or $PELLUCID_CACHE)."""

BENCHMARK_HELP = """\
Run the datasets x methods x metrics described in a TOML file (see examples/benchmark.toml),
write results.csv row by row and an HTML report. Interrupt it at any time (Ctrl-C): running the
same command again resumes and never recomputes a finished cell. --executor ray runs the cells as
Ray tasks, on a local Ray instance or (--address) a cluster: the same results, and either
executor resumes the other's run."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pellucid", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"pellucid {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    demo = commands.add_parser(
        "demo", help="explain a few images with every method family and write an HTML report",
        description=DEMO_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("--out", type=Path, default=Path("pellucid-demo"), metavar="DIR",
                      help="folder for the report, results.csv and caches "
                           "(default: ./pellucid-demo)")
    demo.add_argument("--quick", action="store_true",
                      help="one dataset, fewer images and random draws (a few seconds)")
    demo.add_argument("--no-progress", dest="progress", action="store_false",
                      help="hide the progress bar")
    add_executor_options(demo)
    demo.set_defaults(run=run_demo)

    bench = commands.add_parser(
        "benchmark", help="run a comparison described in a TOML file",
        description=BENCHMARK_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("config", type=Path, metavar="CONFIG",
                       help="TOML file with datasets, methods and metrics")
    bench.add_argument("--out", type=Path, default=None, metavar="DIR",
                       help="output folder (default: `out` in the config file)")
    bench.add_argument("--no-progress", dest="progress", action="store_false",
                       help="hide the progress bar")
    add_executor_options(bench)
    bench.set_defaults(run=run_config)
    return parser


def add_executor_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "executor", "where the cells run (pip install 'pellucid[ray]' for Ray)")
    group.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="local: in this process (default); ray: as Ray tasks")
    group.add_argument("--address", default=None, metavar="ADDR",
                       help="join the Ray cluster at ADDR ('auto', or ray://HOST:10001) "
                            "instead of starting a local Ray instance")
    group.add_argument("--num-cpus", type=int, default=None, metavar="N",
                       help="CPUs of the local Ray instance (default: all)")
    group.add_argument("--num-gpus", type=float, default=None, metavar="G",
                       help="GPUs of the local Ray instance (default: all)")


def executor_options(args: argparse.Namespace) -> dict:
    return {"executor": args.executor, "address": args.address, "num_cpus": args.num_cpus,
            "num_gpus": args.num_gpus}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, ImportError) as error:
        print(f"pellucid {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # --out is a file, unwritable, or the disk is full
        print(f"pellucid {args.command}: cannot write the results: {error}; finished cells are "
              "kept, run the same command again once the output folder is writable",
              file=sys.stderr)
        return 1


def run_demo(args: argparse.Namespace) -> int:
    from .benchmark.demo import demo_config

    # The demo's models are tiny: torch's intra-op threads cost more than they save there
    # (measured on 2 cores: 29 s with one thread, 106 s with two), so use one, then restore.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_and_report(demo_config(args.out, quick=args.quick), None, args.progress,
                              title="pellucid demo", executor=executor_options(args),
                              concepts=not args.quick)
    finally:
        torch.set_num_threads(threads)


def run_config(args: argparse.Namespace) -> int:
    from .benchmark import load_config

    return run_and_report(load_config(args.config), args.out, args.progress,
                          title=f"pellucid benchmark: {args.config.stem}",
                          executor=executor_options(args))


def run_and_report(config, out: Path | None, progress: bool, title: str,
                   executor: dict | None = None, concepts: bool = False) -> int:
    """Run the benchmark and write its report (``concepts``: with the demo's concept section,
    CRAFT on the digits CNN)."""
    from .benchmark import run_benchmark, write_report

    start = time.perf_counter()
    results = run_benchmark(config, out=out, progress=progress, **(executor or {}))
    extra = []
    if concepts:
        from .benchmark.concept_report import concept_section
        extra.append(concept_section(out if out is not None else config.out, seed=config.seed))
    report = write_report(config, out=out, title=title, results=results, extra_sections=extra)
    print(summary_text(results))
    print(f"\n{len(results)} results in {time.perf_counter() - start:.0f} s; "
          f"report: {report.resolve()}")
    return 0


def summary_text(results: pd.DataFrame) -> str:
    """One methods x metrics table per dataset: mean [confidence interval], arrows giving each
    metric's direction."""
    blocks = []
    for dataset, table in results.groupby("dataset", sort=False):
        arrows = table.groupby("metric", sort=False)["higher_is_better"].first()
        cells = table.assign(text=[f"{m:.3f} [{low:.3f}, {high:.3f}]" for m, low, high in
                                   zip(table["mean"], table["ci_low"], table["ci_high"])])
        texts = cells.pivot(index="method", columns="metric", values="text")
        texts = texts.loc[list(dict.fromkeys(table["method"])), list(arrows.index)]
        texts.columns = [f"{m} {'↑' if up else '↓'}" for m, up in arrows.items()]
        blocks.append(f"\n{dataset}\n{texts.to_string()}")
    return "\n".join(blocks)


if __name__ == "__main__":
    sys.exit(main())
