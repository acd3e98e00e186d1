"""``kgdistill datasets``, ``info`` and ``demo``: the datasets at hand and the quick start."""

from __future__ import annotations

from pathlib import Path

import click

from kgdistill.cli._common import Args, progress_option, retain_freed_memory, verb
from kgdistill.tables import format_table


def cmd_datasets(args: Args) -> int:
    from kgdistill.data.datasets import list_datasets

    rows = list_datasets(args.data_dir)
    print(format_table(rows, ["name", "kind", "entities", "relations", "train", "valid", "test", "text", "location"]))
    return 0


def cmd_info(args: Args) -> int:
    from kgdistill.data.datasets import get_spec, load_dataset, resolve_dataset_path, verify_folder

    ds = load_dataset(args.dataset, data_dir=args.data_dir)
    stats = ds.statistics()
    print(format_table([{"statistic": k, "value": v} for k, v in stats.items()]))
    for kind, labels in ds.only_in_evaluation().items():
        if labels:
            shown = ", ".join(labels[:10]) + (f" and {len(labels) - 10} more" if len(labels) > 10 else "")
            print(f"{kind} only in valid/test (never in train): {shown}")
    if args.verify:
        folder = resolve_dataset_path(args.dataset, args.data_dir)
        result = verify_folder(get_spec(args.dataset), folder)  # type: ignore[arg-type]
        print(format_table([{"file": f, "sha256": s} for f, s in result.items()]))
        if any(s not in ("ok", "absent") for s in result.values()):
            return 1
    return 0


def cmd_demo(args: Args) -> int:
    from kgdistill.demo import run_demo

    retain_freed_memory()  # every demo run keeps the default training.retain_memory
    run_demo(Path(args.out), epochs=args.epochs, dataset=args.dataset, progress=args.progress)
    return 0


def data_dir_option() -> click.Option:
    return click.Option(["--data-dir"], default=None, metavar="DIR",
                        help="folder holding named datasets (default: $KGDISTILL_DATA)")


def register(root: click.Group) -> None:
    """Add ``datasets``, ``info`` and ``demo``."""
    verb(root, "datasets", [data_dir_option()], help="list bundled and named datasets")(cmd_datasets)
    verb(root, "info", [
        click.Argument(["dataset"], help="a dataset name or folder"), data_dir_option(),
        click.Option(["--verify"], is_flag=True, help="check the sha256 of the files")],
        help="statistics of a dataset (name or folder)")(cmd_info)
    verb(root, "demo", [
        click.Option(["--out"], default="runs/demo", metavar="DIR", help="output folder (default: runs/demo)"),
        click.Option(["--dataset"], default="kinship", metavar="NAME", help="bundled dataset (default: kinship)"),
        click.Option(["--epochs"], type=int, default=None, metavar="N",
                     help="override the demo's epochs (smaller = faster)"),
        progress_option(default=False)],
        help="the quick start: teacher → distilled student → table on bundled data")(cmd_demo)
