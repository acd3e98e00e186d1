"""Multi-teacher KD against single-teacher KD, same student, same budget, several student seeds.

    python benchmarks/multi_teacher_kd.py --teacher RUN --more RUN_A --more RUN_A,RUN_B --dims 32 --epochs 30 \
        --seeds 1,2,3 --out runs/bench-multi-teacher

Rows: KD from ``--teacher`` alone, then KD from ``--teacher`` plus each ``--more`` set (comma-separated run
folders, the teachers added to the main one). Every row trains the same student (the main teacher's model at
``--dims``) with the main teacher's recipe for ``--epochs`` (``kgdistill.distill.api.distill('kd', ...)``); test MRR
per seed, mean and sample sd, and the paired difference to the single-teacher row. Results: ``<out>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from kgdistill.distill import distill
from kgdistill.tables import format_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True)
    p.add_argument("--more", action="append", default=[], help="comma-separated extra teacher run folders (a row)")
    p.add_argument("--dims", type=int, default=32)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/bench-multi-teacher")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    plans = [("KD, 1 teacher", [])] + [(f"KD, 1 + {len(m.split(','))} teachers ({m})", m.split(",")) for m in args.more]
    results: dict[str, dict[int, float]] = {}
    seconds: dict[str, list[float]] = {}
    for i, (name, more) in enumerate(plans):
        for seed in seeds:
            start = time.perf_counter()
            report = distill("kd", args.teacher, Path(args.out) / f"row{i}-s{seed}", dims=[args.dims],
                             epochs=args.epochs, eval_every=args.eval_every, patience=0, seed=seed,
                             more_teachers=more, with_teacher_row=False, device=args.device, resume=True)
            results.setdefault(name, {})[seed] = float(report.rows[-1]["MRR"])
            seconds.setdefault(name, []).append(time.perf_counter() - start)
            print(name, seed, round(results[name][seed], 4), flush=True)
    base = results[plans[0][0]]
    rows = []
    for name, by_seed in results.items():
        values = [by_seed[s] for s in seeds]
        diffs = [by_seed[s] - base[s] for s in seeds]
        rows.append({"row": name, "mean MRR": statistics.fmean(values),
                     "sd": statistics.stdev(values) if len(values) > 1 else float("nan"),
                     "per seed": ", ".join(f"{s}: {by_seed[s]:.4f}" for s in seeds),
                     "paired diff": statistics.fmean(diffs),
                     "se": statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan"),
                     "wall s (median)": statistics.median(seconds[name])})
    columns = ["row", "mean MRR", "sd", "per seed", "paired diff", "se", "wall s (median)"]
    print(format_table(rows, columns))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
