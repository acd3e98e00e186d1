"""Scoring throughput of run folders side by side: queries/s of ``score_t(h, r)`` against all entities.

    KGDISTILL_DATA=../shared/data python benchmarks/scoring_throughput.py RUN_DIR [RUN_DIR ...] --rounds 3

Every round times every run once (the same function the distillation tables use: the best of batches of 64 and
256 test queries, one thread), so the runs share the machine's state; prints the median per run over the rounds
and each run's ratio to the first one.

``--dims 32 64`` adds, for each dim, a randomly initialised model of the first run's kind and graph at that dim
(throughput depends on the shapes only, not on the weights): the way to time a student whose weights are elsewhere.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from kgdistill import runs
from kgdistill.distill.stage import scoring_throughput
from kgdistill.models.embedding import EmbeddingModel


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=1.0, help="timing per run and round")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dims", type=int, nargs="*", default=[],
                   help="also time random models of the first run's kind at these dims")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    loaded = [runs.load_run(r) for r in args.runs]
    first = loaded[0]
    assert first.dataset is not None
    models = [(str(path), run.model) for path, run in zip(args.runs, loaded)]
    if args.dims and not isinstance(first.model, EmbeddingModel):
        p.error(f"--dims needs a dense embedding model as the first run, {args.runs[0]} holds a "
                f"{type(first.model).__name__}")
    for dim in args.dims:
        model = EmbeddingModel(**{**first.model.config(), "dim": dim})
        models.append((f"random {model.interaction_name}-{dim} on the graph of {args.runs[0]}", model))
    qps: list[list[float]] = [[] for _ in models]
    for _ in range(args.rounds):
        for i, (_, model) in enumerate(models):
            qps[i].append(scoring_throughput(model, first.dataset, min_seconds=args.seconds))
    base = statistics.median(qps[0])
    for (path, _), values in zip(models, qps):
        med = statistics.median(values)
        print(f"{med:12,.0f} queries/s  {med / base:6.2f}x  {path}  (rounds: {', '.join(f'{v:,.0f}' for v in values)})")


if __name__ == "__main__":
    main()
