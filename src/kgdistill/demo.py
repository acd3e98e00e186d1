"""The quick-start job on a bundled KG: train a teacher, distil it into a small student, compare in one table.

Rows: the teacher (ComplEx, dim 64), a student of dim 8 trained from scratch, and the same student distilled from
the teacher (soft labels, Hinton-style KD). All share the filtered evaluator and the training budget.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kgdistill.config import DataConfig, EvaluationConfig, ModelConfig, RunConfig, TrainingConfig
from kgdistill.errors import RunFolderError
from kgdistill.predict import predict
from kgdistill.runs import Run, load_run, read_run_config, train
from kgdistill.tables import format_table

TABLE_COLUMNS = ["row", "dim", "MRR", "H@1", "H@3", "H@10", "params", "bytes", "queries/s", "train s"]


def teacher_config(out: Path, dataset: str, epochs: int, progress: bool = False) -> RunConfig:
    return RunConfig(
        data=DataConfig(dataset=dataset),
        model=ModelConfig(model="complex", dim=64),
        training=TrainingConfig(training_mode="1vsall", epochs=epochs, batch_size=256, optimizer="adagrad", lr=0.1,
                                regularizer="n3", regularizer_weight=0.01, eval_every=20, patience=3),
        evaluation=EvaluationConfig(eval_splits=["valid", "test"]),
        output_dir=str(out / "teacher"),
        progress=progress,
    )


def demo_teacher(config: RunConfig) -> Run:
    """Train the demo's teacher, or take back the one a previous demo left in the same folder.

    A finished teacher is reloaded and an interrupted one resumed, so running the demo again (or after a crash)
    works; a folder holding a teacher of another dataset or epoch count is refused.
    """
    run_dir = Path(config.output_dir)  # type: ignore[arg-type]
    if not (run_dir / "config.yaml").exists():
        return train(config)
    found = read_run_config(run_dir)
    wanted = (config.data.dataset, config.model.model, config.model.dim, config.training.epochs)
    have = (found.data.dataset, found.model.model, found.model.dim, found.training.epochs)
    if have != wanted:
        raise RunFolderError(f"{run_dir}: holds a teacher of another demo (dataset, model, dim, epochs = {have}, "
                             f"this demo wants {wanted}); choose another --out")
    if (run_dir / "metrics.json").exists():
        return load_run(run_dir)
    return train(config, resume=(run_dir / "checkpoints" / "last.pt").exists())


def run_demo(out: Path, epochs: int | None = None, dataset: str = "kinship", student_dim: int = 8,
             progress: bool = False) -> list[dict[str, Any]]:
    """Teacher → distilled student → table, on ``dataset``; every run folder lands under ``out``. ``progress``: bars
    for the three trainings (when stderr is a terminal).

    Runs already finished under ``out`` by an earlier demo with the same settings are reused, unfinished ones resumed.
    """
    from kgdistill.distill.api import distill

    epochs = epochs or 60
    print(f"[1/3] teacher: ComplEx dim 64 on {dataset}, {epochs} epochs → {out / 'teacher'}", flush=True)
    teacher = demo_teacher(teacher_config(out, dataset, epochs, progress))
    print(f"[2/3] students of dim {student_dim}: from scratch, and distilled from the teacher (KD)", flush=True)
    scratch = distill("scratch", teacher.path, out / "scratch", dims=[student_dim], epochs=epochs, resume=True,
                      progress=progress)
    kd = distill("kd", teacher.path, out / "kd", dims=[student_dim], epochs=epochs, with_teacher_row=False,
                 resume=True, progress=progress)
    rows = [*scratch.rows, *kd.rows]
    ds = teacher.dataset
    assert ds is not None
    h, r, _ = ds.test[0].tolist()
    print(f"[3/3] top-5 tails of ({ds.entity_name(h)}, {ds.relation_name(r)}, ?) by the distilled student:")
    student = kd.results[-1].model
    preds = predict(student, ds, ds.relations[r], head=ds.entities[h], k=5)
    print(format_table([{"rank": p.rank, "entity": p.name, "score": p.score, "in graph": p.known} for p in preds]))
    print(f"\nTest set, filtered ranking, both directions ({dataset}):")
    print(format_table(rows, [c for c in TABLE_COLUMNS if any(c in row for row in rows)]))
    print(f"\nRun folders: {out}/teacher, {out}/scratch, {out}/kd (kgdistill evaluate / predict work on each)")
    return rows
