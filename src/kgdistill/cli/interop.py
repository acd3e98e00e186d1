"""``kgdistill import-pykeen DIR --dataset NAME --out RUN --trust-pickle``: a PyKEEN result folder as a run folder
(PyKEEN is imported only when the command runs; the work is :func:`kgdistill.interop.pykeen.import_pykeen`)."""

from __future__ import annotations

import json

import click

from kgdistill.cli._common import Args, print_metrics, verb


def cmd_import_pykeen(args: Args) -> int:
    from kgdistill.interop.pykeen import import_pykeen

    run = import_pykeen(args.pykeen_dir, args.dataset, args.out, data_dir=args.data_dir,
                        trust_pickle=args.trust_pickle)
    meta = run.path / "meta.json"
    info = json.loads(meta.read_text()).get("pykeen", {})
    missing = [f"{info[k]} {k.split('_')[1]}" for k in ("missing_entities", "missing_relations") if info.get(k)]
    print(f"imported PyKEEN {info.get('model_class')} ({run.model.interaction_name}, dim {run.model.dim}"
          f"{', inverse relations' if run.model.reciprocal else ''}) over {run.config.data.dataset}"
          + (f"; not in PyKEEN's training triples (zero rows): {', '.join(missing)}" if missing else ""))
    print_metrics(run.metrics, f"run folder: {run.path}")
    return 0


def register(root: click.Group) -> None:
    """Add ``import-pykeen``."""
    verb(root, "import-pykeen", [
        click.Argument(["pykeen_dir"], help="folder written by PyKEEN's PipelineResult.save_to_directory"),
        click.Option(["--dataset"], required=True, metavar="NAME",
                     help="kgdistill dataset (name or folder) whose ids the run uses; entities and relations are "
                          "mapped by label"),
        click.Option(["--data-dir"], default=None, metavar="DIR",
                     help="folder holding named datasets (default: $KGDISTILL_DATA)"),
        click.Option(["--out"], required=True, metavar="DIR", help="new run folder"),
        click.Option(["--trust-pickle"], is_flag=True,
                     help="load the folder's pickles (required: unpickling a file from an untrusted source can run "
                          "arbitrary code)")],
        help="a PyKEEN result folder (trained_model.pkl + training_triples/) as a run folder, e.g. a distillation "
             "teacher (extra: pykeen)")(cmd_import_pykeen)
