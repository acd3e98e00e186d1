"""KGE distillation benchmark (issue 3): teacher, from-scratch student, KD, DualDE, IterDE, MetaSD, IterDE+MetaSD.

Every row uses the same evaluator (filtered, realistic ranks, both directions, test split), the same student
epochs per stage (``--epochs``, uniform across rows) and one CPU thread. Usage::

    python benchmarks/distill_kge.py --dataset kinship --model complex --out runs/bench-distill
    python benchmarks/distill_kge.py --dataset kinship --model transe --epochs 30 --out runs/bench-distill

Writes ``OUT/<dataset>-<model>/table.md`` and ``table.json``; teachers are reused when their folder exists.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from kgdistill import runs
from kgdistill.config import DataConfig, EvaluationConfig, ModelConfig, RunConfig, TrainingConfig
from kgdistill.distill import distill
from kgdistill.distill.method import teacher_row
from kgdistill.tables import format_table

RECIPES = {  # teacher recipes (students inherit them)
    "complex": dict(training_mode="1vsall", optimizer="adagrad", lr=0.1, regularizer="n3", regularizer_weight=0.01,
                    batch_size=256),
    "transe": dict(training_mode="slcwa", optimizer="adam", lr=0.01, margin=6.0, num_negatives=64, batch_size=512),
    # ComplEx trained by negative sampling: the CPU-budget recipe for WN18RR / FB15k-237, where a 512-dim 1-N epoch
    # takes many minutes on one thread (self-adversarial softplus, as IterDE's release trains ComplEx)
    "complex-slcwa": dict(training_mode="slcwa", optimizer="adam", lr=0.01, loss="softplus",
                          adversarial_temperature=1.0, num_negatives=64, batch_size=512, regularizer="n3",
                          regularizer_weight=1e-3),
}
MODEL_OF_RECIPE = {"complex": "complex", "complex-slcwa": "complex", "transe": "transe"}
COLUMNS = ["row", "dim", "MRR", "H@1", "H@3", "H@10", "params", "nonzero", "bytes", "queries/s", "train s",
           "epochs", "budget"]


def recipe(args: argparse.Namespace) -> dict:
    """The teacher's training recipe, with ``--lr`` overriding the preset (students inherit it)."""
    return {**RECIPES[args.model], **({"lr": args.lr} if args.lr is not None else {})}


def teacher_run(args: argparse.Namespace, folder: Path) -> Path:
    if (folder / "metrics.json").exists():
        return folder
    cfg = RunConfig(data=DataConfig(dataset=args.dataset, data_dir=args.data_dir),
                    model=ModelConfig(model=MODEL_OF_RECIPE[args.model], dim=args.teacher_dim),
                    training=TrainingConfig(epochs=args.teacher_epochs, eval_every=args.eval_every, patience=0,
                                            seed=args.seed, **recipe(args)),
                    evaluation=EvaluationConfig(eval_splits=["valid", "test"]), output_dir=str(folder),
                    progress=False, device=args.device)
    runs.train(cfg)
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="kinship")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--model", default="complex", choices=sorted(RECIPES))
    p.add_argument("--teacher-dim", type=int, default=512)
    p.add_argument("--student-dim", type=int, default=32)
    p.add_argument("--teacher-epochs", type=int, default=60)
    p.add_argument("--epochs", type=int, default=30, help="epochs of every student stage / step (uniform)")
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--lr", type=float, default=None, help="learning rate of the teacher recipe (students inherit it)")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--methods", default="scratch,kd,dualde,iterde,metasd,iterde-metasd",
                   help="comma list; NAME:key=value+key=value adds a variant row with a method option changed, "
                        "written to the folder NAME-key-value, e.g. iterde:soft_weight=1")
    p.add_argument("--metasd-candidates", type=int, default=0,
                   help="MetaSD (and the combination): score K sampled candidates per query instead of all entities "
                        "(0 = all, as released)")
    p.add_argument("--resume", action="store_true", help="continue interrupted method runs from their checkpoints")
    p.add_argument("--out", default="runs/bench-distill")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (every training and evaluation)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out) / f"{args.dataset}-{args.model}"
    t0 = time.perf_counter()
    teacher_dir = teacher_run(args, out / "teacher")
    teacher = runs.load_run(teacher_dir, device=args.device)
    rows = [{**teacher_row(teacher), "budget": f"{teacher.metrics.get('epochs_done', args.teacher_epochs)} ep"}]
    rows[0]["train s"] = teacher.metrics.get("train_seconds")
    common = dict(epochs=args.epochs, eval_every=args.eval_every, patience=0, seed=args.seed, num_threads=args.threads,
                  with_teacher_row=False, device=args.device)
    sd = args.student_dim
    plans = {
        "scratch": dict(dims=[sd]),
        "kd": dict(dims=[sd]),
        "dualde": dict(dims=[sd]),
        "iterde": dict(target_dim=sd),
        "metasd": dict(sparsity=args.sparsity, num_candidates=args.metasd_candidates),
        "iterde-metasd": dict(target_dim=2 * sd, sparsity=0.5, num_candidates=args.metasd_candidates),
    }
    for spec in args.methods.split(";" if ";" in args.methods else ","):
        method, _, variant = spec.partition(":")
        extra = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in variant.split("+") if kv)}
        folder = "-".join([method] + [f"{k}-{v}" for k, v in extra.items()])
        if method == "metasd" and MODEL_OF_RECIPE[args.model] != "complex":
            continue  # MetaSD's release is ComplEx-only (the table: MetaSD on ComplEx)
        start = time.perf_counter()
        report = distill(method, teacher_dir, out / folder, resume=args.resume, **common,
                         **{**plans[method], **extra})
        wall = time.perf_counter() - start
        stages = len(report.results)
        for i, r in enumerate(report.rows):
            last = i == len(report.rows) - 1
            if extra:
                r["row"] = f"{r['row']} ({', '.join(f'{k}={v}' for k, v in extra.items())})"
            r["budget"] = f"{stages}×{args.epochs} ep" if last and stages > 1 else f"{args.epochs} ep"
            if last:
                r["method wall s"] = round(wall, 1)
            rows.append(r)
        print(format_table(rows, COLUMNS + ["chain train s"]), flush=True)
    meta = {"dataset": args.dataset, "model": args.model, "teacher_dim": args.teacher_dim, "student_dim": sd,
            "epochs": args.epochs, "teacher_epochs": args.teacher_epochs, "threads": args.threads,
            "machine": platform.platform(), "device": args.device, "cpu_count": torch.get_num_threads(),
            "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "seconds": round(time.perf_counter() - t0, 1)}
    (out / "table.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    (out / "table.md").write_text(format_table(rows, COLUMNS + ["chain train s", "method wall s"]) + "\n\n"
                                  + json.dumps(meta) + "\n")
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
