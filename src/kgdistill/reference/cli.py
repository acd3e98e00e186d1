"""``kgdistill reference list | show | run | check | from-run`` (a plugin of :mod:`kgdistill.cli`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

Handler = Callable[[argparse.Namespace], int]


def _verdict_exit(name: str, verdict: Any) -> int:
    """Print the verdict; exit status 0 within the expectation, 1 outside it or not comparable."""
    for line in verdict.lines():
        print(line)
    if not verdict.comparable:
        print(f"reference {name}: not judged (another configuration)")
        return 1
    print(f"reference {name}: {'reproduced' if verdict.ok else 'NOT reproduced'}")
    return 0 if verdict.ok else 1


def cmd_reference(args: argparse.Namespace) -> int:
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


def register(sub: Any, command: Callable[[str], Callable[[Handler], Handler]]) -> None:
    """Add ``reference`` to the ``kgdistill`` parser."""
    p = sub.add_parser("reference", help="shipped reference recipes with measured metrics: list, run, check")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="the shipped references and their expected test MRR")
    s = actions.add_parser("show", help="print a reference's YAML (config, expected metrics, how measured)")
    s.add_argument("name", help="a shipped reference's name, or the path of a reference .yaml")
    r = actions.add_parser("run", help="train a reference's configuration, then check it")
    r.add_argument("name", help="a shipped reference's name, or the path of a reference .yaml")
    r.add_argument("--out", required=True, help="run folder")
    r.add_argument("--device", default="cpu")
    r.add_argument("--data-dir", default=None, help="where the dataset lives (does not change the run)")
    r.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    from kgdistill.cli import add_progress_flag

    add_progress_flag(r)
    c = actions.add_parser("check", help="check a finished run folder against a reference")
    c.add_argument("name", help="a shipped reference's name, or the path of a reference .yaml")
    c.add_argument("run_dir")
    f = actions.add_parser("from-run", help="write a finished run folder as a reference .yaml")
    f.add_argument("run_dir")
    f.add_argument("target", help="the .yaml file to write")
    f.add_argument("--tolerance", type=float, required=True, help="allowed |difference| of every metric")
    f.add_argument("--description", default="")
    f.add_argument("--measured", default="", help="where, when, on what machine and budget it was measured")
    f.add_argument("--tolerance-basis", default="", help="where the tolerance comes from (e.g. 3 sd over 4 seeds)")
    command("reference")(cmd_reference)
