"""One markdown table from every method folder of a ``distill_kge.py`` output (runs of several invocations).

    python benchmarks/collect_distill_table.py runs/bench-distill-s3/wn18rr-complex-slcwa

Reads ``teacher/metrics.json`` and each ``*/summary.json`` (one per method or variant, in folder order: the
teacher first, then the methods as they ran); the per-method wall seconds come from ``summary.json``. Prints the
table with MRR, Hits@1/3/10, parameters (total and non-zero), bytes, queries/s, train seconds and the chain total.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kgdistill.tables import format_table

COLUMNS = ["row", "dim", "MRR", "H@1", "H@3", "H@10", "params", "nonzero", "bytes", "queries/s", "train s",
           "chain train s", "epochs"]


def teacher_row(folder: Path) -> dict:
    """The teacher's row from its run folder; queries/s (and bytes, without weights) from ``table.json`` beside it."""
    m = json.loads((folder / "metrics.json").read_text())
    table = folder.parent / "table.json"
    measured = json.loads(table.read_text())["rows"][0] if table.exists() else {}
    m.setdefault("queries_per_second", measured.get("queries/s"))
    weights = folder / "model.safetensors"  # absent where only the JSON files of a run were copied back
    test = m["test"]["both"]
    model = json.loads((folder / "model.json").read_text())
    return {"row": "teacher", "dim": model.get("dim", model.get("config", {}).get("dim")), "MRR": test["mrr"],
            "H@1": test["hits@1"], "H@3": test["hits@3"], "H@10": test["hits@10"],
            "params": m.get("num_parameters"), "nonzero": m.get("num_parameters"),
            "bytes": weights.stat().st_size if weights.exists() else measured.get("bytes"),
            "queries/s": m.get("queries_per_second"),
            "train s": m.get("train_seconds"), "epochs": m.get("epochs_done", m.get("epochs"))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path)
    args = p.parse_args()
    rows = [teacher_row(args.folder / "teacher")]
    summaries = sorted(args.folder.glob("*/summary.json"), key=lambda s: s.stat().st_mtime)
    for path in summaries:
        summary = json.loads(path.read_text())
        variant = path.parent.name
        for r in summary["rows"]:
            if variant != summary["method"] and "(" not in r["row"]:
                r["row"] = f"{r['row']} [{variant}]"
            rows.append(r)
    print(format_table(rows, COLUMNS))


if __name__ == "__main__":
    main()
