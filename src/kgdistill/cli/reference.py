"""``kgdistill reference list | show | run | check | from-run``: the shipped reference recipes with measured
metrics (:mod:`kgdistill.reference`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from kgdistill.cli._common import Args, Group, progress_option, verb


def _verdict_exit(name: str, verdict: Any) -> int:
    """Print the verdict; exit status 0 within the expectation, 1 outside it or not comparable."""
    for line in verdict.lines():
        print(line)
    if not verdict.comparable:
        print(f"reference {name}: not judged (another configuration)")
        return 1
    print(f"reference {name}: {'reproduced' if verdict.ok else 'NOT reproduced'}")
    return 0 if verdict.ok else 1


def cmd_reference(args: Args) -> int:
    from kgdistill import reference as ref
    from kgdistill.tables import format_table

    if args.action == "list":
        rows = []
        for name in ref.list_references():
            r = ref.load_reference(name)
            rows.append({"name": name, "kind": r.kind, "dataset": r.config.data.dataset,
                         "test MRR": "{:.4f} ± {:.4f}".format(*r.expected["mrr"]) if "mrr" in r.expected else "",
                         "description": r.description})
        print(format_table(rows, ["name", "kind", "dataset", "test MRR", "description"]))
        return 0
    if args.action == "from-run":
        data = ref.reference_from_run(args.run_dir, args.tolerance, description=args.description,
                                      measured=args.measured, tolerance_basis=args.tolerance_basis)
        print(f"wrote {ref.write_reference(data, args.target)}")
        return 0
    reference = ref.load_reference(args.name)
    if args.action == "show":
        assert reference.path is not None
        print(reference.path.read_text(encoding="utf-8"), end="")
        return 0
    if args.action == "check":
        return _verdict_exit(reference.name, ref.check_run(reference, args.run_dir))
    print(f"reference {reference.name}: {reference.description}\nmeasured: {reference.measured}")
    if getattr(reference.config.training, "retain_memory", False):  # process-wide (glibc): the CLI sets it
        from kgdistill.training.memory import retain_freed_memory

        retain_freed_memory()
    run, verdict = ref.run_reference(reference, args.out, device=args.device, data_dir=args.data_dir,
                                     resume=args.resume, progress=args.progress)
    print(f"run folder: {run.path}")
    return _verdict_exit(reference.name, verdict)


def _action(name: str) -> Callable[[Args], int]:
    def run(args: Args) -> int:
        args.action = name
        return cmd_reference(args)
    return run


def register(root: click.Group) -> None:
    """Add ``reference`` and its actions."""
    about = "shipped reference recipes with measured metrics: list, run, check"
    group = Group("reference", help=about, short_help=about)
    root.add_command(group)

    def name() -> click.Argument:
        return click.Argument(["name"], help="a shipped reference's name, or the path of a reference .yaml")

    verb(group, "list", [], help="the shipped references and their expected test MRR")(_action("list"))
    verb(group, "show", [name()],
         help="print a reference's YAML (config, expected metrics, how measured)")(_action("show"))
    verb(group, "run", [
        name(),
        click.Option(["--out"], required=True, metavar="DIR", help="run folder"),
        click.Option(["--device"], default="cpu", metavar="DEVICE", help="cpu | cuda | cuda:N (default: cpu)"),
        click.Option(["--data-dir"], default=None, metavar="DIR",
                     help="where the dataset lives (does not change the run)"),
        click.Option(["--resume"], is_flag=True, help="continue the run in --out from its last checkpoint"),
        progress_option()],
        help="train a reference's configuration, then check it")(_action("run"))
    verb(group, "check", [name(), click.Argument(["run_dir"], help="a finished run folder")],
         help="check a finished run folder against a reference")(_action("check"))
    verb(group, "from-run", [
        click.Argument(["run_dir"], help="a finished run folder"),
        click.Argument(["target"], help="the .yaml file to write"),
        click.Option(["--tolerance"], type=float, required=True, metavar="X",
                     help="allowed |difference| of every metric"),
        click.Option(["--description"], default="", metavar="TEXT", help="what the reference is"),
        click.Option(["--measured"], default="", metavar="TEXT",
                     help="where, when, on what machine and budget it was measured"),
        click.Option(["--tolerance-basis"], default="", metavar="TEXT",
                     help="where the tolerance comes from (e.g. 3 sd over 4 seeds)")],
        help="write a finished run folder as a reference .yaml")(_action("from-run"))
