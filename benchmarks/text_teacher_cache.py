"""Step time of logit / patient KD with and without ``distill.cache_teacher``, in a second epoch over the same texts.

    python benchmarks/text_teacher_cache.py runs/bench-text-umls-b/teacher --layers 1,3,5 --batches 8 --threads 1

Builds the 3-layer student of the teacher run (its layers ``--layers``), then for each method and each setting runs
two "epochs" over the same ``--batches`` batches of ``--batch-size`` training queries (forward, loss, backward, an
AdamW step), and reports the median step time of the second epoch: without the cache the teacher runs on every batch,
with it the second epoch finds every text cached. Settings alternate per round (``--rounds``) so load drifts hit both.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kgdistill.runs import load_run
from kgdistill.tables import format_table
from kgdistill.distill import text_kd  # noqa: F401  (registers logit and patient)
from kgdistill.text.config import DistillConfig, TextRunConfig
from kgdistill.text.objective import objectives
from kgdistill.text.students import make_student
from kgdistill.text.textdata import KnownTails, make_batch, with_inverses


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("teacher")
    p.add_argument("--layers", default="1,3,5")
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=48)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run = load_run(args.teacher)
    teacher, ds = run.model, run.dataset
    assert ds is not None
    layers = [int(x) for x in args.layers.split(",")]
    examples = with_inverses(ds.train, ds.num_relations)
    known = KnownTails(examples, ds.num_entities, ds.num_relations)
    order = torch.randperm(examples.shape[0], generator=torch.Generator().manual_seed(0))
    batches = [make_batch(teacher.tokenizer, teacher.entity_texts, teacher.relation_texts,
                          examples[order[i * args.batch_size:(i + 1) * args.batch_size]], args.max_length)
               for i in range(args.batches)]
    times: dict[tuple[str, bool], list[float]] = {}
    for _ in range(args.rounds):
        for method in ("logit", "patient"):
            for cache in (False, True):
                student = make_student(teacher, layers)
                cfg = TextRunConfig(distill=DistillConfig(method=method, cache_teacher=cache))
                objective = objectives.get(method)(student, teacher, cfg, known, layers)
                optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5)
                for epoch in (1, 2):
                    for step, batch in enumerate(batches):
                        start = time.perf_counter()
                        loss, _ = objective.loss(batch, step)
                        optimizer.zero_grad()
                        loss.backward()
                        optimizer.step()
                        if epoch == 2:
                            times.setdefault((method, cache), []).append(time.perf_counter() - start)
    rows = []
    for method in ("logit", "patient"):
        off, on = statistics.median(times[(method, False)]), statistics.median(times[(method, True)])
        rows.append({"method": method, "step s, teacher every batch": off, "step s, cached teacher": on,
                     "speed-up": off / on})
    print(format_table(rows, ["method", "step s, teacher every batch", "step s, cached teacher", "speed-up"]))


if __name__ == "__main__":
    main()
