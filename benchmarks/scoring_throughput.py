"""Scoring throughput of run folders side by side: queries/s of ``score_t(h, r)`` against all entities.

    KGDISTILL_DATA=../shared/data python benchmarks/scoring_throughput.py RUN_DIR [RUN_DIR ...] --rounds 3

Every round times every run once (the same function the distillation tables use: the best of batches of 64 and
256 test queries, one thread), so the runs share the machine's state; prints the median per run over the rounds
and each run's ratio to the first one.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from kgdistill import runs
from kgdistill.distill.stage import scoring_throughput


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=1.0, help="timing per run and round")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    loaded = [runs.load_run(r) for r in args.runs]
    qps: list[list[float]] = [[] for _ in loaded]
    for _ in range(args.rounds):
        for i, run in enumerate(loaded):
            assert run.dataset is not None
            qps[i].append(scoring_throughput(run.model, run.dataset, min_seconds=args.seconds))
    base = statistics.median(qps[0])
    for path, values in zip(args.runs, qps):
        med = statistics.median(values)
        print(f"{med:12,.0f} queries/s  {med / base:6.2f}x  {path}  (rounds: {', '.join(f'{v:,.0f}' for v in values)})")


if __name__ == "__main__":
    main()
