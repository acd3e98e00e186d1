"""Mean and spread over seeds of ``text_pmd.py`` results: one row per (graph, model), every seed's MRR listed.

    python benchmarks/collect_text_seeds.py OUT_DIR [OUT_DIR ...] [--order PMD3,patient-L3,logit-L3,none-L3]

Reads every ``results.json`` under the given folders (runs of ``text_pmd.py`` with different ``--seed``, possibly
split across processes that reuse one teacher through ``--teacher``). A run folder recorded twice (a teacher reused
by several processes or seeds) counts once, under the seed of the first ``results.json`` that names it: pass the
folder that trained the teacher first. The graph is the dataset name, plus the subgraph size and its seed where
``--subgraph`` was used, so runs on different graphs are never averaged together.

``--order A,B,C`` checks a claimed ordering A ≥ B ≥ C on every graph: on the means over seeds, and paired, seed by
seed (the rows of one seed share the teacher, the data order and the initial student), as the mean difference of
each adjacent pair with its standard error and the number of seeds where it holds. Only seeds with every named row
enter the paired figures.

A folder given as ``LABEL=FOLDER`` names its rows ``LABEL:model``, so that runs of another setting with the same
model names pair with the plain ones (``runs/i15-umls-total split=runs/i15-umls-split --order
split:PMD3,patient-L3``; ``runs/i15-umls-final uniform=runs/i15-umls-hrkd-uniform --order hrkd-L3,uniform:hrkd-L3``).
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


def labelled(arg: str) -> tuple[str, Path]:
    """``LABEL=FOLDER`` → ``("LABEL", FOLDER)``; a plain folder → ``("", FOLDER)``."""
    label, sep, folder = arg.partition("=")
    return (label, Path(folder)) if sep else ("", Path(arg))


def collect(folders: list[Path | tuple[str, Path]]) -> dict[tuple[str, str], dict[int, float]]:
    """``{(graph, model): {seed: test MRR}}`` from every ``results.json`` under ``folders`` (a ``(label, folder)``
    pair names its rows ``label:model``)."""
    found: dict[tuple[str, str], dict[int, float]] = {}
    seen_runs: set[str] = set()
    for item in folders:
        label, folder = item if isinstance(item, tuple) else ("", item)
        for path in sorted(folder.rglob("results.json")):
            data = json.loads(path.read_text())
            if "results" not in data or "args" not in data:
                continue
            graph, seed = graph_of(data["args"]), int(data["args"]["seed"])
            for row in data["results"]:
                run = row.get("run")
                if run is not None:
                    if run in seen_runs:
                        continue
                    seen_runs.add(run)
                model = f"{label}:{row['model']}" if label else row["model"]
                by_seed = found.setdefault((graph, model), {})
                if seed in by_seed:
                    raise SystemExit(f"{path}: a second {model} at seed {seed} on {graph} (another run: "
                                     f"{run}); pass the folders of one setting only")
                by_seed[seed] = float(row["mrr"])
    return found


def rows_of(found: dict[tuple[str, str], dict[int, float]]) -> list[dict]:
    rows = []
    for (graph, model), by_seed in found.items():
        values = [by_seed[s] for s in sorted(by_seed)]
        rows.append({"graph": graph, "model": model, "seeds": len(values), "mean MRR": statistics.fmean(values),
                     "sd": statistics.stdev(values) if len(values) > 1 else float("nan"),
                     "per seed": ", ".join(f"{s}: {by_seed[s]:.4f}" for s in sorted(by_seed))})
    return rows


def order_rows(found: dict[tuple[str, str], dict[int, float]], order: list[str]) -> list[dict]:
    """One row per (graph, adjacent pair ``a ≥ b`` of ``order``): mean difference over the seeds that have both
    (paired), its standard error, and in how many of those seeds ``a ≥ b`` holds."""
    rows = []
    for graph in sorted({g for g, _ in found}):
        runs = [found.get((graph, model), {}) for model in order]
        seeds = sorted(set.intersection(*(set(r) for r in runs)))
        for (a, run_a), (b, run_b) in zip(zip(order, runs), zip(order[1:], runs[1:])):
            diffs = [run_a[s] - run_b[s] for s in seeds]
            mean = statistics.fmean(diffs) if diffs else float("nan")
            se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
            rows.append({"graph": graph, "claim": f"{a} ≥ {b}", "seeds": len(diffs), "mean diff": mean,
                         "se": se, "holds in": f"{sum(d >= 0 for d in diffs)}/{len(diffs)}",
                         "on means": "yes" if diffs and mean >= 0 else "no"})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", type=labelled, help="FOLDER or LABEL=FOLDER")
    p.add_argument("--order", default="", help="comma-separated model names claimed in decreasing MRR")
    args = p.parse_args()
    found = collect(args.folders)
    print(format_table(rows_of(found), ["graph", "model", "seeds", "mean MRR", "sd", "per seed"]))
    if args.order:
        print()
        print(format_table(order_rows(found, args.order.split(",")),
                           ["graph", "claim", "seeds", "mean diff", "se", "holds in", "on means"]))


if __name__ == "__main__":
    main()
