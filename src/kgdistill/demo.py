"""The quick-start job: train a teacher on a bundled KG, evaluate it, predict, print a table."""

from __future__ import annotations

from pathlib import Path

from kgdistill.config import DataConfig, EvaluationConfig, ModelConfig, RunConfig, TrainingConfig
from kgdistill.predict import predict
from kgdistill.runs import Run, train
from kgdistill.tables import format_table


def teacher_config(out: Path, dataset: str, epochs: int | None) -> RunConfig:
    return RunConfig(
        data=DataConfig(dataset=dataset),
        model=ModelConfig(model="rotate", dim=128),
        training=TrainingConfig(epochs=epochs or 100, batch_size=512, lr=2e-3, num_negatives=64, margin=6.0,
                                adversarial_temperature=1.0, eval_every=20, patience=3),
        evaluation=EvaluationConfig(eval_splits=["valid", "test"]),
        output_dir=str(out / "teacher"),
    )


def summary_row(name: str, run: Run) -> dict[str, object]:
    test = run.metrics["test"]["both"]
    return {"model": name, "dim": run.model.config().get("dim"), "parameters": run.metrics["num_parameters"],
            "MRR": test["mrr"], "H@1": test["hits@1"], "H@3": test["hits@3"], "H@10": test["hits@10"],
            "train s": run.metrics["train_seconds"]}


def run_demo(out: Path, epochs: int | None = None, dataset: str = "kinship") -> list[dict[str, object]]:
    """Train a teacher on ``dataset``, predict for one test query and print the table of results."""
    print(f"[1/2] training the teacher on {dataset} (run folder {out / 'teacher'})")
    teacher = train(teacher_config(out, dataset, epochs))
    rows = [summary_row("teacher (RotatE)", teacher)]
    assert teacher.dataset is not None
    h, r, _ = teacher.dataset.test[0].tolist()
    ds = teacher.dataset
    print(f"\n[2/2] top-5 tails of ({ds.entity_name(h)}, {ds.relation_name(r)}, ?):")
    preds = predict(teacher.model, ds, ds.relations[r], head=ds.entities[h], k=5)
    print(format_table([{"rank": p.rank, "entity": p.name, "score": p.score, "known": p.known} for p in preds]))
    print("\nTest set, filtered ranking (both directions):")
    print(format_table(rows))
    return rows
