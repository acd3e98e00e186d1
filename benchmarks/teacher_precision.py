"""A KD training step on a real 1-N teacher run with the frozen teacher scored in fp32 vs bf16 autocast.

    python benchmarks/teacher_precision.py TEACHER_RUN --dim 32 --batch 500 --steps 20 --rounds 3 --threads 1

Per round and precision (alternating, after one warm-up step): the median seconds of one whole KD step (student
and teacher scores of a training batch, KL at T = 1 plus the hard loss, backward, Adagrad), and of the teacher's
scores alone; then, on the same batches, how far the bf16 teacher is from the fp32 one: the largest absolute score
difference relative to the largest score, and the mean KL(p_fp32 || p_bf16) of the soft targets at T = 1.
Writes one JSON line per round and a summary (medians over rounds) to stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from kgdistill.distill import terms
from kgdistill.distill.distiller import Distiller
from kgdistill.distill.metasd import queries_of
from kgdistill.distill.stage import make_student
from kgdistill.runs import load_run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("teacher", help="a 1-N teacher run folder (e.g. the wn18rr-complex-256-n3 reference)")
    p.add_argument("--dim", type=int, default=32, help="student dim")
    p.add_argument("--batch", type=int, default=500, help="training triples per batch (2 queries each)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per round and precision")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    run = load_run(a.teacher)
    teacher, ds = run.model, run.dataset
    assert ds is not None
    student = make_student(teacher, a.dim, 0)
    opt = torch.optim.Adagrad(student.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(0)
    batches = [queries_of(ds.train[torch.randint(0, ds.train.shape[0], (a.batch,), generator=gen)],
                          ds.num_relations) for _ in range(a.steps + 1)]
    distillers = {prec: Distiller(student, teacher, [], teacher_precision=prec) for prec in ("fp32", "bf16")}

    def kd_step(d: Distiller, q: torch.Tensor) -> None:
        s = d._scores(student, q, None)
        t = d._frozen_scores(teacher, q, None)
        loss = F.cross_entropy(s.all, q[:, 2]) + terms.kl_with_temperature(s.all, t.all, 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def timed(fn, qs) -> float:
        fn(qs[0])
        times = []
        for q in qs[1:]:
            t0 = time.perf_counter()
            fn(q)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    rows = []
    for r in range(a.rounds):
        row: dict = {"round": r + 1}
        for prec, d in distillers.items():
            row[f"step s {prec}"] = round(timed(lambda q: kd_step(d, q), batches), 4)
            row[f"teacher s {prec}"] = round(timed(lambda q: d._frozen_scores(teacher, q, None), batches), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    rel, kl = [], []
    for q in batches:
        exact = distillers["fp32"]._frozen_scores(teacher, q, None).all
        fast = distillers["bf16"]._frozen_scores(teacher, q, None).all
        rel.append(((fast - exact).abs().max() / exact.abs().max()).item())
        lp, lq = exact.log_softmax(-1), fast.log_softmax(-1)
        kl.append((lp.exp() * (lp - lq)).sum(-1).mean().item())
    summary = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "round"}
    summary.update({"step speed-up": round(summary["step s fp32"] / summary["step s bf16"], 2),
                    "teacher speed-up": round(summary["teacher s fp32"] / summary["teacher s bf16"], 2),
                    "max relative score difference": max(rel), "mean KL(fp32 || bf16)": statistics.mean(kl),
                    "teacher": a.teacher, "student dim": a.dim, "batch": a.batch, "threads": a.threads})
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
