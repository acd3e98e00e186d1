"""Seconds per training step of the costly distillation steps, on random tables of a real graph's size.

    python benchmarks/distill_steps.py dualde                      # stage 1 and 2, TransE-512 teacher, WN18RR size
    python benchmarks/distill_steps.py metasd --candidates 0 1000  # ComplEx-512, 1-N vs 1000 sampled candidates

No data is read: entity / relation counts default to WN18RR's (40,943 / 11). One thread unless ``--threads``.
Prints the median of ``--repeat`` steps after one warm-up step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kgdistill.config import TrainingConfig
from kgdistill.data.triples import KGDataset
from kgdistill.distill import dualde
from kgdistill.distill.distiller import slcwa_scores
from kgdistill.distill.metasd import MetaSDConfig, MetaSDStep, queries_of
from kgdistill.distill.pruning import PrunedModel
from kgdistill.models.embedding import EmbeddingModel
from kgdistill.training.loop import Trainer


def median_seconds(step, repeat: int) -> float:
    step()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def random_triples(n: int, entities: int, relations: int) -> torch.Tensor:
    return torch.stack([torch.randint(0, entities, (n,)), torch.randint(0, relations, (n,)),
                        torch.randint(0, entities, (n,))], 1)


def structured_scores(model: EmbeddingModel, batch: torch.Tensor, neg: torch.Tensor, num_head: int):
    try:
        return slcwa_scores(model, batch, neg, None, num_head, with_structure=True)
    except TypeError:  # revisions before the structure shortcut (10b451c and older) gathered the rows
        return slcwa_scores(model, batch, neg, None, num_head, with_rows=True)  # type: ignore[call-arg]


def bench_dualde(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    student = EmbeddingModel("transe", args.entities, args.relations, args.student_dim, interaction_options={"p": 1})
    teacher = EmbeddingModel("transe", args.entities, args.relations, args.dim, interaction_options={"p": 1})
    ev = dualde.SoftLabelEvaluator()
    batch = random_triples(args.batch, args.entities, args.relations)
    neg = torch.randint(0, args.entities, (args.batch, args.negatives))
    for stage2 in (False, True):
        def step() -> None:
            s = structured_scores(student, batch, neg, args.negatives // 2)
            with torch.set_grad_enabled(stage2):
                t = structured_scores(teacher, batch, neg, args.negatives // 2)
            loss = dualde.soft_label_loss(s, t, ev, True, 1.0)
            if stage2:
                loss = loss + dualde.soft_label_loss(t, s, ev, True, 1.0)
            loss.backward()
        print(f"dualde stage {2 if stage2 else 1}: {median_seconds(step, args.repeat):.3f} s/step "
              f"(batch {args.batch}, {args.negatives} negatives, teacher dim {args.dim}, student {args.student_dim})")


def bench_metasd(args: argparse.Namespace) -> None:
    names = [f"e{i}" for i in range(args.entities)], [f"r{i}" for i in range(args.relations)]
    triples = random_triples(5000, args.entities, args.relations)
    ds = KGDataset("random", *names, {"train": triples[:4000], "valid": triples[4000:4500], "test": triples[4500:]})
    for k in args.candidates:
        torch.manual_seed(0)
        model = PrunedModel(EmbeddingModel("complex", args.entities, args.relations, args.dim))
        meta = MetaSDStep(model, MetaSDConfig(sparsity=0.9, num_candidates=k), triples[:200])
        tr = Trainer(model, ds, TrainingConfig(training_mode="1vsall", epochs=1, batch_size=args.batch,
                                               optimizer="adagrad", lr=0.1, eval_every=0, patience=0,
                                               regularizer="n3", regularizer_weight=1e-3), step_loss=meta)
        meta.bind(tr)
        model.update_masks(0.9)
        q = queries_of(triples[: args.batch // 2], args.relations)
        gen = torch.Generator()

        def step() -> None:
            loss = meta(model, q, gen)
            tr.optimizer.zero_grad()
            loss.backward()
            tr.optimizer.step()
        label = "1-N (all entities)" if k == 0 else f"{k} sampled candidates"
        print(f"metasd {label}: {median_seconds(step, args.repeat):.3f} s/step (batch {args.batch} queries, "
              f"ComplEx dim {args.dim}, {args.entities} entities)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["dualde", "metasd"])
    p.add_argument("--entities", type=int, default=40943)
    p.add_argument("--relations", type=int, default=11)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--student-dim", type=int, default=32)
    p.add_argument("--batch", type=int, default=None, help="default: 512 (dualde), 1000 (metasd)")
    p.add_argument("--negatives", type=int, default=64)
    p.add_argument("--candidates", type=int, nargs="+", default=[0, 1000])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.batch = args.batch or (512 if args.what == "dualde" else 1000)
    (bench_dualde if args.what == "dualde" else bench_metasd)(args)


if __name__ == "__main__":
    main()
