"""One distillation stage = one run folder (the layout of :mod:`kgdistill.runs`), plus its summary row.

Every stage writes ``config.yaml`` (a complete :class:`~kgdistill.config.RunConfig` of the student, so that
``kgdistill evaluate`` / ``predict`` and :func:`kgdistill.runs.load_run` work on it), ``distill.yaml`` (the method's
frozen config, the stage and the teacher), ``meta.json``, ``entities.tsv``, ``relations.tsv``, ``trace.jsonl``,
``checkpoints/last.pt``, ``model.safetensors`` + ``model.json`` and ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from kgdistill.config import RunConfig, TrainingConfig, save_yaml
from kgdistill.data.triples import KGDataset
from kgdistill.errors import RunFolderError
from kgdistill.evaluate import DatasetEvaluator
from kgdistill.models.base import MODEL_WEIGHTS, KGCModel, save_model
from kgdistill.models.embedding import EmbeddingModel
from kgdistill.runs import _meta, _write_json, evaluate_splits, write_id_maps
from kgdistill.training.loop import Trainer

SUMMARY_COLUMNS = ("row", "dim", "MRR", "H@1", "H@3", "H@10", "params", "nonzero", "bytes", "queries/s",
                   "train s", "epochs")


@dataclass
class StageResult:
    """A finished stage: its run folder, the trained student, its metrics and summary row."""

    name: str
    path: Path
    model: KGCModel
    metrics: dict[str, Any]
    row: dict[str, Any] = field(default_factory=dict)


def make_student(teacher: EmbeddingModel, dim: int, seed: int) -> EmbeddingModel:
    """A fresh, seeded student with the teacher's interaction, options and id maps at dimension ``dim``."""
    cfg = teacher.config()
    torch.manual_seed(seed)
    return EmbeddingModel(cfg["interaction"], cfg["num_entities"], cfg["num_relations"], dim,
                          reciprocal=cfg["reciprocal"], entity_constraint=cfg["entity_constraint"],
                          interaction_options=cfg["interaction_options"], init_scale=cfg["init_scale"])


def scoring_throughput(model: KGCModel, dataset: KGDataset, batch_size: int = 256, min_seconds: float = 1.0,
                       max_queries: int = 4096) -> float:
    """Queries per second of ``score_t(h, r)`` against all entities (test tail queries, inference mode)."""
    triples = dataset.test[:max_queries]
    dev = model.device
    h, r = triples[:, 0].to(dev), triples[:, 1].to(dev)
    model.eval()
    with torch.inference_mode():
        model.score_t(h[:batch_size], r[:batch_size])  # warm-up
        done, start = 0, time.perf_counter()
        while True:
            for i in range(0, h.shape[0], batch_size):
                model.score_t(h[i:i + batch_size], r[i:i + batch_size])
            done += h.shape[0]
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                return done / elapsed


def summary_row(name: str, model: KGCModel, metrics: dict[str, Any]) -> dict[str, Any]:
    test = metrics.get("test", {}).get("both", {})
    return {"row": name, "dim": getattr(model, "dim", None), "MRR": test.get("mrr"), "H@1": test.get("hits@1"),
            "H@3": test.get("hits@3"), "H@10": test.get("hits@10"), "params": metrics.get("num_parameters"),
            "nonzero": metrics.get("num_nonzero"), "bytes": metrics.get("bytes_on_disk"),
            "queries/s": metrics.get("queries_per_second"), "train s": metrics.get("train_seconds"),
            "epochs": metrics.get("epochs_done")}


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}  # type: ignore[arg-type]
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def finish_stage(name: str, run_dir: Path, student: KGCModel, dataset: KGDataset, evaluator: DatasetEvaluator,
                 splits: list[str], train_seconds: float, extra: dict[str, Any] | None = None,
                 bytes_file: Path | None = None, throughput_model: KGCModel | None = None) -> StageResult:
    """Save the student, evaluate it, measure size and throughput, write ``metrics.json``."""
    save_model(student, run_dir)
    metrics = evaluate_splits(student, evaluator, splits)
    metrics["num_parameters"] = student.num_parameters()
    metrics["num_nonzero"] = student.num_parameters(nonzero=True)
    metrics["bytes_on_disk"] = (bytes_file or run_dir / MODEL_WEIGHTS).stat().st_size
    metrics["queries_per_second"] = round(scoring_throughput(throughput_model or student, dataset), 1)
    metrics["train_seconds"] = round(train_seconds, 3)
    metrics.update(extra or {})
    _write_json(run_dir / "metrics.json", metrics)
    return StageResult(name, run_dir, student, metrics, summary_row(name, student, metrics))


def run_stage(name: str, *, run_dir: Path, model: KGCModel, student: KGCModel, dataset: KGDataset,
              base_config: RunConfig, training: TrainingConfig, step_loss: Callable[..., torch.Tensor] | None,
              method: str, method_config: Any, teacher_dir: str | None, device: str = "cpu",
              progress: bool = False, train_dataset: KGDataset | None = None,
              on_trainer: Callable[[Trainer], None] | None = None,
              after_fit: Callable[[Trainer], dict[str, Any]] | None = None,
              throughput_model: KGCModel | None = None,
              final_model: Callable[[], KGCModel] | None = None) -> StageResult:
    """Train ``model`` (``student`` or a :class:`DistillModel` around it) with ``step_loss`` and write a run folder.

    ``train_dataset``: the dataset whose ``train`` split the trainer iterates (MetaSD: train minus the quiz set);
    validation and the final evaluation always use ``dataset``. ``on_trainer`` sees the trainer before ``fit`` (to
    bind a distiller); ``after_fit`` may post-process and return extra metrics (and write extra files);
    ``final_model`` (called after ``after_fit``) gives the model to save and evaluate instead of ``student``.
    """
    run_dir = Path(run_dir)
    if (run_dir / "checkpoints" / "last.pt").exists():
        raise RunFolderError(f"{run_dir}: already holds a run; choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_model = base_config.model
    if isinstance(student, EmbeddingModel):
        cfg_model = replace(cfg_model, dim=student.dim, reciprocal=student.reciprocal,
                            entity_constraint=student.entity_constraint)
    config = replace(base_config, model=cfg_model, training=training, output_dir=str(run_dir), device=str(device),
                     progress=progress)
    save_yaml(config, run_dir / "config.yaml")
    (run_dir / "distill.yaml").write_text(yaml.safe_dump(
        {"method": method, "stage": name, "teacher": teacher_dir, "config": _jsonable(method_config)},
        sort_keys=False))
    write_id_maps(dataset, run_dir)
    meta = _meta(config)
    evaluator = DatasetEvaluator(dataset, config.evaluation.eval_batch_size, config.evaluation.filtered, device)

    def validate(m: KGCModel) -> dict[str, float]:
        return {k: float(v) for k, v in evaluator.evaluate(m, "valid").summary()["both"].items()}

    trainer = Trainer(model, train_dataset or dataset, training, device=device, run_dir=run_dir, validate=validate,
                      progress=progress, step_loss=step_loss)
    if on_trainer is not None:
        on_trainer(trainer)
    start = time.perf_counter()
    state = trainer.fit()
    flush = getattr(step_loss, "flush", None)
    if callable(flush):
        flush()
    train_seconds = time.perf_counter() - start
    extra = after_fit(trainer) if after_fit is not None else {}
    meta.update(train_seconds=round(train_seconds, 3), epochs_done=state.epoch, best_epoch=state.best_epoch,
                stopped_early=state.stopped_early, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), method=method,
                stage=name)
    _write_json(run_dir / "meta.json", meta)
    bytes_file = extra.pop("_bytes_file", None)
    extra.update(epochs_done=state.epoch, best_epoch=state.best_epoch)
    if final_model is not None:
        student = final_model()
    result = finish_stage(name, run_dir, student, dataset, evaluator, list(config.evaluation.eval_splits),
                          train_seconds, extra, bytes_file=bytes_file, throughput_model=throughput_model)
    return result


def read_summary(run_dir: Path) -> dict[str, Any]:
    """Summary row of an existing run folder (e.g. the teacher), from its ``metrics.json``."""
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    return metrics


__all__ = ["StageResult", "SUMMARY_COLUMNS", "make_student", "scoring_throughput", "summary_row", "finish_stage",
           "run_stage", "read_summary"]
