"""kgdistill's side of the PyKEEN comparison at two commits, side by side: TransE on WN18RR (dim 256, batch 1024,
64 negatives, Adam; ``benchmarks/pykeen_kgdistill.py`` of each tree), training seconds per epoch and the full filtered
test evaluation, each a fresh process with one thread, the two trees alternating A B B A per round. PyKEEN's side
does not change between two kgdistill commits, so the ratio of the two trees is the change of the comparison's ratio.

    git worktree add /tmp/before <commit>
    python benchmarks/before_after.py /tmp/before . --rounds 3 --epochs 2 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before", help="work tree of the earlier commit")
    p.add_argument("after", help="work tree of the later commit")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--out", default=None, help="write the raw figures and the summary as JSON here")
    a = p.parse_args(argv)
    trees = {"before": Path(a.before).resolve(), "after": Path(a.after).resolve()}
    keys = ("epoch_seconds", "epoch_cpu_seconds", "eval_seconds", "eval_cpu_seconds")
    raw: dict[str, dict[str, list]] = {k: {m: [] for m in (*keys, "mrr")} for k in trees}
    for rnd in range(a.rounds):
        for name in (list(trees) if rnd % 2 == 0 else list(reversed(trees))):
            tree = trees[name]
            env = dict(os.environ, PYTHONPATH=str(tree / "src"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
            script = str(tree / "benchmarks" / "pykeen_kgdistill.py")
            common = [a.python, script, "--data-dir", a.data_dir, "--model", "TransE"]
            with tempfile.TemporaryDirectory() as tmp:
                subprocess.run([*common, "--epochs", str(a.epochs), "--save", f"{tmp}/m", "--json-out",
                                f"{tmp}/t.json"], env=env, check=True, stdout=subprocess.DEVNULL)
                subprocess.run([*common, "--load", f"{tmp}/m", "--evaluate", "--json-out", f"{tmp}/e.json"],
                               env=env, check=True, stdout=subprocess.DEVNULL)
                t = json.loads(Path(f"{tmp}/t.json").read_text())
                e = json.loads(Path(f"{tmp}/e.json").read_text())
            r = raw[name]
            r["epoch_seconds"] += t["epoch_seconds"]
            r["epoch_cpu_seconds"] += t["epoch_cpu_seconds"]
            r["eval_seconds"].append(e["eval_seconds"])
            r["eval_cpu_seconds"].append(e["eval_cpu_seconds"])
            r["mrr"].append(e["metrics"]["both"]["mrr"])
            print(name, rnd, json.dumps({k: r[k][-1] for k in (*keys, "mrr")}), flush=True)
    summary = {k: {m: statistics.median(raw[k][m]) for m in keys} for k in trees}
    ratio = {m: summary["after"][m] / summary["before"][m] for m in keys}
    print("| figure (median) | before | after | after / before |\n|---|--:|--:|--:|")
    for m in keys:
        print(f"| {m} | {summary['before'][m]:.2f} | {summary['after'][m]:.2f} | {ratio[m]:.3f} |")
    print("test MRR equal:", raw["before"]["mrr"][0] == raw["after"]["mrr"][0], raw["before"]["mrr"][0])
    if a.out:
        Path(a.out).write_text(json.dumps({"raw": raw, "summary": summary, "ratio": ratio}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
