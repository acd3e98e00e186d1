"""Text KGC compression benchmark: teacher → PMD grades, and no-KD / logit KD / patient KD / HRKD at the lowest grade.

Every run uses the same harness (``kgdistill.text.train_text``), the same budget (steps × batch) and the same filtered
evaluator. Results: ``<out>/results.json`` and a Markdown table ``<out>/results.md`` (MRR, H@1/3/10 on test, both
directions; parameters; entity-encoding throughput).

CPU (this repository's benchmark, 1 thread)::

    python benchmarks/text_pmd.py --dataset umls --out runs/bench-text-umls --threads 1
    python benchmarks/text_pmd.py --dataset wn18rr --subgraph 3000 --out runs/bench-text-wn --threads 1

Smoke (seconds, tiny random BERT): ``--plm tiny:layers=4,hidden=32 --grades 4,2 --mask-rates 0.2,0 --steps 3``.
The paper's chain on a GPU: ``benchmarks/text_pmd_paper.py``.

Controls (issue 15), all by this one command and at the budget ``--budget`` says:

* ``--budget final`` (default): every student trains ``--steps`` × ``--epochs`` steps, so a baseline gets as many
  steps as PMD's *final* stage; ``--budget total``: a single-stage baseline gets as many student steps as PMD's whole
  chain (``k`` stages → ``k×`` the epochs, validated every ``k`` epochs, so it validates as often as one stage), and a
  baseline distilled from PMD's pre-distilled model (whose lineage already holds one stage) ``k − 1×``;
* ``--controls chain-nokd``: the same chain without distillation (``alpha = beta = 0``, same masks and stages): what
  the extra stage alone buys; ``from-pmd``: every baseline again, distilled from PMD's pre-distilled model (PMD at the
  teacher's size) instead of the teacher; ``pmd-b0`` / ``pmd-a0``: the PMD chain without MGFD (``beta = 0``) / without
  score distillation (``alpha = 0``); ``all``: every control.

Every baseline keeps the original-model layers PMD's last grade keeps (``--layer-choice``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch


def _floats(s: str) -> list[float]:
    return [float(x) for x in s.split(",") if x.strip()]


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="umls")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--subgraph", type=int, default=0, help="keep a BFS subgraph of N entities (0 = whole graph)")
    p.add_argument("--subgraph-seed", type=int, default=None,
                   help="seed of the BFS subgraph (default: --seed); fix it to vary --seed on one graph")
    p.add_argument("--plm", default="minilm-l6")
    p.add_argument("--grades", default="6,3", help="PMD grades after the teacher (pre-distillation added)")
    p.add_argument("--mask-rates", default="0.2,0", help="one per stage, pre-distillation first")
    p.add_argument("--baselines", default="none,logit,patient,hrkd", help="methods run at the lowest grade")
    p.add_argument("--no-pmd", action="store_true", help="skip the PMD chain (run the teacher and the baselines only)")
    p.add_argument("--student-init", default="teacher", choices=["teacher", "pretrained"])
    p.add_argument("--teacher-steps", type=int, default=300, help="teacher steps per epoch (0 = whole epoch)")
    p.add_argument("--steps", type=int, default=200, help="student steps per epoch (0 = whole epoch)")
    p.add_argument("--stage-steps", default="", help="steps per epoch of each PMD stage, e.g. 20,100 (default: "
                   "--steps each; the baselines' total budget is then their sum)")
    p.add_argument("--epochs", type=int, default=1, help="epochs (each capped at --steps / --teacher-steps)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--student-lr", type=float, default=None, help="student learning rate (default: --lr)")
    p.add_argument("--max-length", type=int, default=48)
    p.add_argument("--self-negatives", type=int, default=0)
    p.add_argument("--pre-batch", type=int, default=0)
    p.add_argument("--neighbour-names", type=int, default=0)
    p.add_argument("--rerank-hops", type=int, default=0)
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--mgfd-variant", default="input-mask")
    p.add_argument("--mgfd-reduction", default="sum", choices=["sum", "mean"])
    p.add_argument("--mgfd-unmasked", default="all-tokens", choices=["all-tokens", "zero"])
    p.add_argument("--layer-choice", default="top", choices=["top", "paper"])
    p.add_argument("--hrkd-meta-every", type=int, default=None, help="default: distill.hrkd_meta_every")
    p.add_argument("--hrkd-meta-lr", type=float, default=None, help="default: distill.hrkd_meta_lr")
    p.add_argument("--hrkd-weights", default="learned", choices=["learned", "uniform"])
    p.add_argument("--encode-dtype", default="fp32", choices=["fp32", "bf16", "int8"],
                   help="entity / query encoding at evaluation (model.encode_dtype)")
    p.add_argument("--train-dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--budget", default="final", choices=["final", "total"],
                   help="final: every student the steps of PMD's final stage; total: the steps of PMD's whole chain")
    p.add_argument("--controls", default="", help="comma list of chain-nokd, from-pmd, pmd-b0, pmd-a0 (or all)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-batch-size", type=int, default=256)
    p.add_argument("--encode-batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default="runs/bench-text")
    p.add_argument("--teacher", default=None, help="reuse a trained teacher run folder")
    p.add_argument("--cache-teacher", action="store_true",
                   help="logit / patient KD rows: keep the teacher's per-text features across epochs "
                        "(distill.cache_teacher)")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep every run's checkpoints/last.pt (model + AdamW state, ~0.5-0.9 GB for MiniLM) once it "
                        "has finished; by default they are deleted (the finished models are kept)")
    return p.parse_args(argv)


CONTROLS = ("chain-nokd", "from-pmd", "pmd-b0", "pmd-a0")


def parse_controls(spec: str) -> list[str]:
    from kgdistill.errors import ConfigError

    names = [c.strip() for c in spec.split(",") if c.strip()]
    if names == ["all"]:
        return list(CONTROLS)
    bad = [c for c in names if c not in CONTROLS]
    if bad:
        raise ConfigError(f"unknown control(s) {bad}: choose from {', '.join(CONTROLS)} or all")
    return names


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    from kgdistill.config import DataConfig, EvaluationConfig
    from kgdistill.data.datasets import load_dataset
    from kgdistill.errors import ConfigError
    from kgdistill.text.config import (DistillConfig, TextModelConfig, TextRunConfig, TextTrainingConfig,
                                       check_text_config)
    from kgdistill.distill.text_pmd import _plm_layers, chain_layers, plan_grades, run_pmd
    from kgdistill.text.trainer import train_text

    controls = parse_controls(a.controls)
    if "from-pmd" in controls and a.no_pmd:
        raise ConfigError("--controls from-pmd distils the baselines from PMD's pre-distilled model: drop --no-pmd")

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset_ref = a.dataset
    if a.subgraph:
        from kgdistill.text.subgraph import write_subgraph

        full = load_dataset(a.dataset, data_dir=a.data_dir)
        folder = out / f"{full.name}-sub{a.subgraph}"
        if not (folder / "train.tsv").exists():
            write_subgraph(full, folder, a.subgraph, seed=a.seed if a.subgraph_seed is None else a.subgraph_seed)
        dataset_ref = str(folder.resolve())
    ds = load_dataset(dataset_ref, data_dir=a.data_dir)
    stats = {k: v for k, v in ds.statistics().items() if isinstance(v, int)}
    print("dataset", dataset_ref, stats, flush=True)
    base = TextRunConfig(
        data=DataConfig(dataset=dataset_ref, data_dir=a.data_dir),
        model=TextModelConfig(plm=a.plm, max_length=a.max_length, neighbour_names=a.neighbour_names,
                              rerank_hops=a.rerank_hops, encode_batch_size=a.encode_batch_size,
                              encode_dtype=a.encode_dtype),
        training=TextTrainingConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, warmup_steps=20,
                                    self_negatives=bool(a.self_negatives), pre_batch=a.pre_batch,
                                    steps_per_epoch=a.teacher_steps or None, seed=a.seed, num_threads=a.threads,
                                    log_every=25, keep_checkpoint=a.keep_checkpoints, train_dtype=a.train_dtype),
        evaluation=EvaluationConfig(eval_batch_size=a.eval_batch_size, eval_splits=["test"]), device=a.device)
    distill = DistillConfig(alpha=a.alpha, beta=a.beta, mgfd_variant=a.mgfd_variant, student_init=a.student_init,
                            mgfd_reduction=a.mgfd_reduction, mgfd_unmasked=a.mgfd_unmasked,
                            layer_choice=a.layer_choice, hrkd_weights=a.hrkd_weights)
    if a.hrkd_meta_every is not None:
        distill = replace(distill, hrkd_meta_every=a.hrkd_meta_every)
    if a.hrkd_meta_lr is not None:
        distill = replace(distill, hrkd_meta_lr=a.hrkd_meta_lr)
    student_base = replace(base, training=replace(base.training, steps_per_epoch=a.steps or None,
                                                  lr=a.student_lr or a.lr), distill=distill)
    # every input error surfaces here, before anything trains
    check_text_config(student_base)
    if a.teacher:
        from kgdistill.runs import load_run

        teacher_layers = load_run(a.teacher, with_dataset=False).model.num_layers
    else:
        teacher_layers = _plm_layers(base, 0)
    grades, rates = _ints(a.grades), _floats(a.mask_rates)
    stages = plan_grades(teacher_layers, grades, rates)
    stage_steps = _ints(a.stage_steps) if a.stage_steps else None
    if stage_steps and (len(stage_steps) != len(stages) or sum(stage_steps) != len(stages) * a.steps):
        raise ConfigError(f"--stage-steps {a.stage_steps}: one count per stage ({len(stages)}) summing to the chain's "
                          f"budget {len(stages)} × --steps = {len(stages) * a.steps}, so the baselines' budgets hold")
    kept_per_stage = chain_layers(stages, teacher_layers, a.layer_choice, a.student_init,
                                  _plm_layers(base, teacher_layers) if a.student_init == "pretrained" else None)
    if a.student_init == "pretrained":
        baseline_layers = kept_per_stage[-1]
    else:
        held = list(range(teacher_layers))
        for kept in kept_per_stage:
            held = [held[j] for j in kept]
        baseline_layers = held  # the original-model layers PMD's last grade keeps
    results: list[dict] = []

    def record(name: str, run, seconds: float) -> None:  # type: ignore[no-untyped-def]
        m = run.metrics
        meta_path = Path(run.path) / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        row = {"model": name, "layers": m["encoder_layers"], "parameters": m["num_parameters"],
               **{k: m["test"]["both"][k] for k in ("mrr", "hits@1", "hits@3", "hits@10")},
               "entities_per_s": m["entity_encoding_per_s"], "train_seconds": m["train_seconds"],
               "steps": meta.get("steps"), "teacher": meta.get("teacher"), "kept": meta.get("layers"),
               "wall_seconds": round(seconds, 1), "run": str(run.path)}
        if "objective" in m:
            row["objective"] = {k: v for k, v in m["objective"].items() if not isinstance(v, list)}
        results.append(row)
        (out / "results.json").write_text(json.dumps({"args": vars(a), "dataset": stats, "results": results},
                                                     indent=2))
        print(json.dumps(row), flush=True)

    start = time.perf_counter()
    if a.teacher:
        from kgdistill.runs import load_run

        teacher_dir = a.teacher
        record("teacher", load_run(teacher_dir, with_dataset=False), 0.0)
    else:
        teacher_dir = str(out / "teacher")
        record("teacher", train_text(replace(base, output_dir=teacher_dir), ds), time.perf_counter() - start)

    def chain(name: str, suffix: str, cfg: TextRunConfig) -> list:  # type: ignore[type-arg]
        start = time.perf_counter()
        chain_runs = run_pmd(teacher_dir, grades, rates, cfg, out / name, stage_steps=stage_steps)
        for r in chain_runs:
            record(f"{suffix[0]}{r.metrics['encoder_layers']}{suffix[1]}", r,
                   (time.perf_counter() - start) / len(chain_runs))
        return chain_runs

    runs = [] if a.no_pmd else chain("pmd", ("PMD", ""), student_base)
    lowest, k = grades[-1], len(stages)

    def budget(cfg: TextRunConfig, stages_in_lineage: int) -> TextRunConfig:
        """A single-stage student's budget: PMD's final stage (``final``) or the rest of PMD's chain (``total``)."""
        mult = k - stages_in_lineage if a.budget == "total" else 1
        if mult == 1:
            return cfg
        t = cfg.training
        return replace(cfg, training=replace(t, epochs=t.epochs * mult, eval_every=t.eval_every * mult))

    teachers = [("", teacher_dir, 0)]
    if "from-pmd" in controls:
        teachers.append((f"@PMD{teacher_layers}", str(runs[0].path), 1))
    for label, source, lineage in teachers:
        for method in [m for m in a.baselines.split(",") if m]:
            start = time.perf_counter()
            name = f"{method}-L{lowest}{label}"
            cfg = replace(student_base, output_dir=str(out / name.replace("@", "-from-")),
                          distill=replace(student_base.distill, method=method, teacher=source,
                                          layers=baseline_layers,
                                          cache_teacher=a.cache_teacher and method in ("logit", "patient")))
            record(name, train_text(budget(cfg, lineage), ds), time.perf_counter() - start)
    if "chain-nokd" in controls:
        chain("chain-nokd", ("chainNoKD", ""), replace(student_base, distill=replace(distill, alpha=0.0, beta=0.0)))
    if "pmd-b0" in controls:
        chain("pmd-b0", ("PMD", "-b0"), replace(student_base, distill=replace(distill, beta=0.0)))
    if "pmd-a0" in controls:
        chain("pmd-a0", ("PMD", "-a0"), replace(student_base, distill=replace(distill, alpha=0.0)))
    write_table(out, results)
    return 0


def write_table(out: Path, results: list[dict]) -> None:
    cols = ["model", "layers", "parameters", "mrr", "hits@1", "hits@3", "hits@10", "steps", "entities_per_s",
            "train_seconds"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in results:
        cells = [f"{r.get(c):.3f}" if isinstance(r.get(c), float) and c not in ("entities_per_s", "train_seconds")
                 else f"{r.get(c):,}" if isinstance(r.get(c), int) else str(r.get(c, "")) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
