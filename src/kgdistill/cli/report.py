"""``kgdistill compare`` and ``kgdistill report``: one table of runs with plots, or one HTML page."""

from __future__ import annotations

from typing import Any

import click

from kgdistill.cli._common import Args, verb
from kgdistill.errors import KGDistillError


def _rows(args: Args) -> list[dict[str, Any]]:
    import torch

    from kgdistill.report.collect import collect_runs

    if args.threads:
        torch.set_num_threads(args.threads)
    return collect_runs(list(args.run_dirs), split=args.split, measure=not args.no_qps, rounds=args.qps_rounds)


def _plots_available() -> None:
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        raise KGDistillError("plots need the report extra (matplotlib): pip install 'kgdistill[report]'") from None


def cmd_compare(args: Args) -> int:
    from kgdistill.report.output import compare

    if not args.no_plots:
        _plots_available()
    result = compare(_rows(args), args.out, plots=not args.no_plots)
    print(result.markdown)
    if result.files:
        print("\nwrote " + ", ".join(str(p) for p in result.files.values()))
    return 0


def cmd_report(args: Args) -> int:
    from kgdistill.report.output import write_html

    _plots_available()
    path = write_html(_rows(args), args.out, title=args.title)
    print(f"wrote {path}")
    return 0


def _common() -> list[click.Parameter]:
    return [click.Argument(["run_dirs"], nargs=-1, required=True, metavar="RUN_DIR...", help="run folders (a "
                           "distillation's output folder: its stages)"),
            click.Option(["--split"], default="test", metavar="SPLIT",
                         help="metrics of this split (default: test; falls back to valid)"),
            click.Option(["--no-qps"], is_flag=True,
                         help="do not measure queries/s: show the figures stored in metrics.json, marked (stored)"),
            click.Option(["--qps-rounds"], type=click.IntRange(min=1), default=5, metavar="N",
                         help="queries/s of every row measured afresh in N rounds over all rows; the table shows the "
                              "median and the min–max (default: 5)"),
            click.Option(["--threads"], type=int, default=1, metavar="N",
                         help="torch CPU threads for the queries/s measurement (default: 1)")]


def register(root: click.Group) -> None:
    """Add ``compare`` and ``report``."""
    verb(root, "compare", [
        *_common(),
        click.Option(["-o", "--out"], default="compare", metavar="DIR",
                     help="folder for compare.{md,csv,json} and the plots (default: compare)"),
        click.Option(["--no-plots"], is_flag=True, help="the table only")],
        help="one table of runs (Markdown, CSV, JSON) and plots (PNG)")(cmd_compare)
    verb(root, "report", [
        *_common(),
        click.Option(["-o", "--out"], default="report", metavar="DIR",
                     help="folder for index.html (and the PNG / table files; default: report)"),
        click.Option(["--title"], default="kgdistill report", metavar="TEXT",
                     help="the page's title (default: kgdistill report)")],
        help="one HTML page with the table of runs and the plots")(cmd_report)
