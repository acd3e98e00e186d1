"""``kgdistill import-pykeen DIR --dataset NAME --out RUN --trust-pickle``: a PyKEEN result folder as a run folder.

Picked up by :func:`kgdistill.cli._plugin_parsers`; PyKEEN is imported only when the command runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def cmd_import_pykeen(args: argparse.Namespace) -> int:
    from kgdistill.cli import print_metrics
    from kgdistill.interop.pykeen import import_pykeen

    run = import_pykeen(args.pykeen_dir, args.dataset, args.out, data_dir=args.data_dir, trust_pickle=args.trust_pickle)
    meta = run.path / "meta.json"
    import json

    info = json.loads(meta.read_text()).get("pykeen", {})
    missing = [f"{info[k]} {k.split('_')[1]}" for k in ("missing_entities", "missing_relations") if info.get(k)]
    print(f"imported PyKEEN {info.get('model_class')} ({run.model.interaction_name}, dim {run.model.dim}"
          f"{', inverse relations' if run.model.reciprocal else ''}) over {run.config.data.dataset}"
          + (f"; not in PyKEEN's training triples (zero rows): {', '.join(missing)}" if missing else ""))
    print_metrics(run.metrics, f"run folder: {run.path}")
    return 0


def register(sub: Any, command: Callable[[str], Callable[[Callable[[argparse.Namespace], int]], Any]]) -> None:
    p = sub.add_parser("import-pykeen", help="a PyKEEN result folder (trained_model.pkl + training_triples/) as a "
                                             "run folder, e.g. a distillation teacher (extra: pykeen)")
    p.add_argument("pykeen_dir", help="folder written by PyKEEN's PipelineResult.save_to_directory")
    p.add_argument("--dataset", required=True, help="kgdistill dataset (name or folder) whose ids the run uses; "
                                                    "entities and relations are mapped by label")
    p.add_argument("--data-dir", default=None, help="folder holding named datasets (default: $KGDISTILL_DATA)")
    p.add_argument("--out", required=True, help="new run folder")
    p.add_argument("--trust-pickle", action="store_true", help="load the folder's pickles (required: unpickling a "
                   "file from an untrusted source can run arbitrary code)")
    command("import-pykeen")(cmd_import_pykeen)
