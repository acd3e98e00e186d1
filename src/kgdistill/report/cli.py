"""Subcommands ``compare`` and ``report`` (added to ``kgdistill`` by :func:`kgdistill.cli._plugin_parsers`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from kgdistill.errors import KGDistillError

Handler = Callable[[argparse.Namespace], int]


def _rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    from kgdistill.report.collect import collect_runs

    if args.threads:
        torch.set_num_threads(args.threads)
    return collect_runs(args.run_dirs, split=args.split, measure=not args.no_qps)


def _plots_available() -> None:
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        raise KGDistillError("plots need the report extra (matplotlib): pip install 'kgdistill[report]'") from None


def cmd_compare(args: argparse.Namespace) -> int:
    from kgdistill.report.output import compare

    if not args.no_plots:
        _plots_available()
    result = compare(_rows(args), args.out, plots=not args.no_plots)
    print(result.markdown)
    if result.files:
        print("\nwrote " + ", ".join(str(p) for p in result.files.values()))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from kgdistill.report.output import write_html

    _plots_available()
    path = write_html(_rows(args), args.out, title=args.title)
    print(f"wrote {path}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--split", default="test", help="metrics of this split (default: test; falls back to valid)")
    p.add_argument("--no-qps", action="store_true", help="do not measure queries/s (unless metrics.json has it)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for the queries/s measurement")


def register(sub: Any, command: Callable[[str], Callable[[Handler], Handler]]) -> None:
    """Add ``compare`` and ``report`` to the ``kgdistill`` parser."""
    c = sub.add_parser("compare", help="one table of runs (Markdown, CSV, JSON) and plots (PNG)")
    _common(c)
    c.add_argument("-o", "--out", default="compare", help="folder for compare.{md,csv,json} and the plots")
    c.add_argument("--no-plots", action="store_true")
    command("compare")(cmd_compare)

    r = sub.add_parser("report", help="one HTML page with the table of runs and the plots")
    _common(r)
    r.add_argument("-o", "--out", default="report", help="folder for index.html (and the PNG / table files)")
    r.add_argument("--title", default="kgdistill report")
    command("report")(cmd_report)
