"""Mean and spread over seeds of ``text_pmd.py`` results: one row per (graph, model), every seed's MRR listed.

    python benchmarks/collect_text_seeds.py OUT_DIR [OUT_DIR ...]

Reads every ``results.json`` under the given folders (runs of ``text_pmd.py`` with different ``--seed``, possibly
split across processes that reuse one teacher through ``--teacher``). A (graph, model, seed) seen twice (the
teacher recorded by each process that reused it) counts once. The graph is the dataset name, plus the subgraph size
and its seed where ``--subgraph`` was used, so runs on different graphs are never averaged together.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from kgdistill.tables import format_table


def graph_of(args: dict) -> str:
    if not args.get("subgraph"):
        return str(args["dataset"])
    seed = args.get("subgraph_seed")
    return f"{args['dataset']}-sub{args['subgraph']} (seed {args['seed'] if seed is None else seed})"


def collect(folders: list[Path]) -> dict[tuple[str, str], dict[int, float]]:
    """``{(graph, model): {seed: test MRR}}`` from every ``results.json`` under ``folders``."""
    found: dict[tuple[str, str], dict[int, float]] = {}
    for folder in folders:
        for path in sorted(folder.rglob("results.json")):
            data = json.loads(path.read_text())
            if "results" not in data or "args" not in data:
                continue
            graph, seed = graph_of(data["args"]), int(data["args"]["seed"])
            for row in data["results"]:
                found.setdefault((graph, row["model"]), {})[seed] = float(row["mrr"])
    return found


def rows_of(found: dict[tuple[str, str], dict[int, float]]) -> list[dict]:
    rows = []
    for (graph, model), by_seed in found.items():
        values = [by_seed[s] for s in sorted(by_seed)]
        rows.append({"graph": graph, "model": model, "seeds": len(values), "mean MRR": statistics.fmean(values),
                     "sd": statistics.stdev(values) if len(values) > 1 else float("nan"),
                     "per seed": ", ".join(f"{s}: {by_seed[s]:.4f}" for s in sorted(by_seed))})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", type=Path)
    args = p.parse_args()
    print(format_table(rows_of(collect(args.folders)), ["graph", "model", "seeds", "mean MRR", "sd", "per seed"]))


if __name__ == "__main__":
    main()
