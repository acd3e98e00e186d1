"""One distillation stage = one run folder (written by :class:`kgdistill.runwriter.RunWriter`), plus its summary row.

Every stage writes ``config.yaml`` (a complete :class:`~kgdistill.config.RunConfig` of the student, so that
``kgdistill evaluate`` / ``predict`` and :func:`kgdistill.runs.load_run` work on it), ``distill.yaml`` (the method's
frozen config, the stage and the teacher: as given, and its absolute ``teacher_path``), ``meta.json``,
``entities.tsv``, ``relations.tsv``, ``trace.jsonl``, ``checkpoints/last.pt``, ``model.safetensors`` +
``model.json`` and ``metrics.json``.

Under ``torch.distributed`` (a multi-process :class:`~kgdistill.distributed.DistContext`) a stage trains
data-parallel like :func:`kgdistill.runs.train`: the trainer wraps the stage's trainable module (the student, plus
a teacher trained in this stage and small extras) in DistributedDataParallel, a frozen teacher stays outside DDP,
validation and the final evaluation are sharded, and only rank 0 writes the folder (barriers where rank 0 writes
and others read). With ``resume`` a stage whose ``metrics.json`` exists is finished (its weights are reloaded from
its checkpoint and it is not trained again), one with only ``checkpoints/last.pt`` continues from it.
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

from kgdistill.config import RunConfig, TrainingConfig
from kgdistill.data.triples import KGDataset
from kgdistill.distributed import DistContext, barrier, broadcast_object
from kgdistill.errors import ConfigError, RunFolderError
from kgdistill.evaluate import DatasetEvaluator
from kgdistill.models.base import MODEL_WEIGHTS, KGCModel, load_model
from kgdistill.models.embedding import EmbeddingModel
from kgdistill.runfolder import locks_run_dir
from kgdistill.runs import evaluate_splits
from kgdistill.runwriter import RunWriter, run_meta
from kgdistill.training.checkpoint import atomic_torch_save, load_checkpoint
from kgdistill.training.engine import TrainerCallback
from kgdistill.training.loop import LAST_CHECKPOINT, Trainer

#: next to ``checkpoints/last.pt``: the state of the stage's step (e.g. MetaSD's meta optimiser) and its wall time
STEP_STATE = "step.pt"

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


def scoring_throughput(model: KGCModel, dataset: KGDataset, batch_sizes: tuple[int, ...] = (64, 256),
                       min_seconds: float = 1.0, max_queries: int = 4096) -> float:
    """Queries per second of ``score_t(h, r)`` against all entities (test tail queries, inference mode), at the
    best of ``batch_sizes`` (small batches keep the ``[B, E]`` scores in cache, large ones suit matrix products;
    each size is timed for ``min_seconds / len(batch_sizes)``)."""
    triples = dataset.test[:max_queries]
    dev = model.device
    h, r = triples[:, 0].to(dev), triples[:, 1].to(dev)
    model.eval()
    best = 0.0
    with torch.inference_mode():
        for batch_size in batch_sizes:
            model.score_t(h[:batch_size], r[:batch_size])  # warm-up
            done, start = 0, time.perf_counter()
            while True:
                for i in range(0, h.shape[0], batch_size):
                    model.score_t(h[i:i + batch_size], r[i:i + batch_size])
                done += h.shape[0]
                elapsed = time.perf_counter() - start
                if elapsed >= min_seconds / len(batch_sizes):
                    break
            best = max(best, done / elapsed)
    return best


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


class StageState(TrainerCallback):
    """What a distillation stage keeps across a restart, beside the trainer's checkpoint.

    Before each checkpoint the step's epoch record is flushed to the trace (``step_loss.flush()``) and
    ``checkpoints/step.pt`` is written (rank 0, atomically, *before* ``last.pt``): the epoch, the training wall time
    so far and ``step_loss.state_dict()`` when the step has one (MetaSD: meta optimiser, quiz generator). On resume
    it is restored when its epoch matches the checkpoint's (a crash between the two files loses only that state).
    """

    def __init__(self) -> None:
        self.seconds_before = 0.0
        self._fit_start: float | None = None

    @staticmethod
    def path(trainer: Trainer) -> Path | None:
        return trainer.run_dir / "checkpoints" / STEP_STATE if trainer.run_dir else None

    def train_seconds(self) -> float:
        """Training wall time of this stage, over every session that trained it."""
        now = time.perf_counter() - self._fit_start if self._fit_start is not None else 0.0
        return self.seconds_before + now

    def on_fit_start(self, trainer: Trainer) -> None:
        self._fit_start = time.perf_counter()

    def before_checkpoint(self, trainer: Trainer) -> None:
        step_loss = trainer.step_loss
        flush = getattr(step_loss, "flush", None)
        if callable(flush):
            flush()  # every rank: the epoch means may be averaged over the ranks
        state_fn = getattr(step_loss, "state_dict", None)
        path = self.path(trainer)
        if path is not None and trainer.ctx.is_main:
            atomic_torch_save({"epoch": trainer.state.epoch, "train_seconds": self.train_seconds(),
                               "step": state_fn() if callable(state_fn) else None}, path)

    def after_restore(self, trainer: Trainer) -> None:
        path = self.path(trainer)
        if path is None or not path.exists():
            return
        saved = load_checkpoint(path)
        if saved.get("epoch") != trainer.state.epoch:
            trainer.trace.write("resume_step_state", epoch=trainer.state.epoch, ignored_epoch=saved.get("epoch"))
            return
        self.seconds_before = float(saved.get("train_seconds", 0.0))
        load = getattr(trainer.step_loss, "load_state_dict", None)
        if callable(load) and saved.get("step") is not None:
            load(saved["step"])


class StageTrainer(Trainer):
    """A :class:`Trainer` with a :class:`StageState` callback (what :func:`run_stage` trains with)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.stage_state = StageState()
        kwargs["callbacks"] = [self.stage_state, *kwargs.get("callbacks", ())]
        super().__init__(*args, **kwargs)

    @property
    def step_state_path(self) -> Path | None:
        return StageState.path(self)

    def train_seconds(self) -> float:
        """Training wall time of this stage, over every session that trained it."""
        return self.stage_state.train_seconds()


def stage_status(run_dir: Path) -> str:
    """``done`` (``metrics.json`` written: the stage finished), ``interrupted`` (a checkpoint, no metrics) or
    ``new``."""
    if (run_dir / "metrics.json").exists() and (run_dir / "checkpoints" / LAST_CHECKPOINT).exists():
        return "done"
    return "interrupted" if (run_dir / "checkpoints" / LAST_CHECKPOINT).exists() else "new"


def finish_stage(name: str, run_dir: Path, student: KGCModel, dataset: KGDataset, evaluator: DatasetEvaluator,
                 splits: list[str], train_seconds: float, extra: dict[str, Any] | None = None,
                 bytes_file: Path | None = None, throughput_model: KGCModel | None = None,
                 ctx: DistContext | None = None) -> StageResult:
    """Save the student, evaluate it, measure size and throughput, write ``metrics.json``.

    Multi-process: the evaluation is sharded (every rank takes part); rank 0 saves, measures and writes, and its
    metrics are broadcast, so every rank returns the same result.
    """
    ctx = ctx or DistContext()
    writer = RunWriter(run_dir, enabled=ctx.is_main)
    writer.save_model(student)
    metrics = evaluate_splits(student, evaluator, splits)
    metrics["num_parameters"] = student.num_parameters()
    metrics["num_nonzero"] = student.num_parameters(nonzero=True)
    if ctx.is_main:
        metrics["bytes_on_disk"] = (bytes_file or run_dir / MODEL_WEIGHTS).stat().st_size
        metrics["queries_per_second"] = round(scoring_throughput(throughput_model or student, dataset), 1)
        metrics["train_seconds"] = round(train_seconds, 3)
        metrics.update(extra or {})
        writer.write_metrics(metrics)
    metrics = broadcast_object(metrics, ctx)  # also the barrier: the folder is complete on every rank's return
    return StageResult(name, run_dir, student, metrics, summary_row(name, student, metrics))


def _check_same_stage(run_dir: Path, name: str, method: str, method_config: Any) -> None:
    """A resumed stage must be the same stage with the same options as the one that wrote ``run_dir``."""
    path = run_dir / "distill.yaml"
    if not path.exists():
        return
    saved = yaml.safe_load(path.read_text()) or {}
    now = _jsonable(method_config)
    before = saved.get("config") or {}
    # an option added to the method after the folder was written reads as that option's default
    missing = object()
    defaults = {f.name: _jsonable(f.default if f.default is not dataclasses.MISSING else f.default_factory())
                for f in dataclasses.fields(method_config)} if dataclasses.is_dataclass(method_config) else {}
    differ = sorted(k for k in set(now) | set(before)
                    if now.get(k, missing) != before.get(k, defaults.get(k, missing)))
    if saved.get("method") != method or saved.get("stage") != name or differ:
        raise ConfigError(f"{run_dir}: written by method {saved.get('method')!r}, stage {saved.get('stage')!r}"
                          + (f", with other options ({', '.join(differ)})" if differ else "")
                          + "; resume with the same method and options, or choose another --out")


@locks_run_dir  # one writer per stage folder (kgdistill.runfolder)
def run_stage(name: str, *, run_dir: Path, model: KGCModel, student: KGCModel, dataset: KGDataset,
              base_config: RunConfig, training: TrainingConfig, step_loss: Callable[..., torch.Tensor] | None,
              method: str, method_config: Any, teacher_dir: str | None, device: str = "cpu",
              progress: bool = False, train_dataset: KGDataset | None = None,
              on_trainer: Callable[[Trainer], None] | None = None,
              after_fit: Callable[[Trainer], dict[str, Any]] | None = None,
              throughput_model: KGCModel | None = None,
              final_model: Callable[[], KGCModel] | None = None,
              ctx: DistContext | None = None, resume: bool = False) -> StageResult:
    """Train ``model`` (``student`` or a :class:`DistillModel` around it) with ``step_loss`` and write a run folder.

    ``train_dataset``: the dataset whose ``train`` split the trainer iterates (MetaSD: train minus the quiz set);
    validation and the final evaluation always use ``dataset``. ``on_trainer`` sees the trainer before ``fit`` (to
    bind a distiller); ``after_fit`` may post-process and return extra metrics (and write extra files; it runs on
    every rank, rank 0 writes); ``final_model`` (called after ``after_fit``) gives the model to save and evaluate
    instead of ``student``. ``ctx``: the process group (default: one process); ``resume``: continue the stage in
    ``run_dir`` (a finished stage is reloaded, not retrained: ``model`` gets its best weights back).
    """
    ctx = ctx or DistContext(device=str(device))
    run_dir = Path(run_dir)
    status = stage_status(run_dir)
    if status != "new" and not resume:
        raise RunFolderError(f"{run_dir}: already holds a run; resume it (--resume) or choose another --out")
    if status != "new":
        _check_same_stage(run_dir, name, method, method_config)
    cfg_model = base_config.model
    if isinstance(student, EmbeddingModel):
        cfg_model = replace(cfg_model, dim=student.dim, reciprocal=student.reciprocal,
                            entity_constraint=student.entity_constraint)
    # students are compared on test: a teacher trained with eval_splits [valid] (and evaluated on test afterwards)
    # must not give students without a test row
    splits = list(base_config.evaluation.eval_splits)
    evaluation = replace(base_config.evaluation, eval_splits=splits + ["test"] * ("test" not in splits))
    config = replace(base_config, model=cfg_model, training=training, evaluation=evaluation, output_dir=str(run_dir),
                     device=str(device), progress=progress)
    evaluator = DatasetEvaluator(dataset, config.evaluation.eval_batch_size, config.evaluation.filtered, device,
                                 ctx=ctx)
    barrier(ctx)  # every rank has looked at the folder before rank 0 writes into it
    if status == "done":
        return _finished_stage(name, run_dir, model, student, device, final_model is not None)
    writer = RunWriter(run_dir, enabled=ctx.is_main)
    writer.start(config, dataset)
    writer.write_text("distill.yaml", yaml.safe_dump(
        {"method": method, "stage": name, "teacher": teacher_dir,
         "teacher_path": str(Path(teacher_dir).resolve()) if teacher_dir else None,
         "config": _jsonable(method_config)},
        sort_keys=False))
    meta = run_meta(config.training.seed)
    if status == "interrupted":  # keep the stage's original start (written below)
        meta.update({k: v for k, v in (writer.read_meta() or {}).items() if k == "started"})
    meta.update(processes=ctx.world_size, resumed=status == "interrupted")
    if status == "new":
        writer.write_meta(meta)  # the start time survives a crash before the stage ends

    def validate(m: KGCModel) -> dict[str, float]:
        return {k: float(v) for k, v in evaluator.evaluate(m, "valid").summary()["both"].items()}

    stage_state = StageState()
    trainer = Trainer(model, train_dataset or dataset, training, device=device, run_dir=run_dir, validate=validate,
                      progress=progress and ctx.is_main, step_loss=step_loss, ctx=ctx, callbacks=[stage_state])
    if on_trainer is not None:
        on_trainer(trainer)
    state = trainer.fit(resume=status == "interrupted")
    flush = getattr(step_loss, "flush", None)
    if callable(flush):
        flush()
    train_seconds = stage_state.train_seconds()
    extra = after_fit(trainer) if after_fit is not None else {}
    meta.update(train_seconds=round(train_seconds, 3), epochs_done=state.epoch, best_epoch=state.best_epoch,
                stopped_early=state.stopped_early, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), method=method,
                stage=name)
    writer.write_meta(meta)
    bytes_file = extra.pop("_bytes_file", None)
    extra.update(epochs_done=state.epoch, best_epoch=state.best_epoch)
    if final_model is not None:
        student = final_model()
    result = finish_stage(name, run_dir, student, dataset, evaluator, list(config.evaluation.eval_splits),
                          train_seconds, extra, bytes_file=bytes_file, throughput_model=throughput_model, ctx=ctx)
    return result


def _finished_stage(name: str, run_dir: Path, model: KGCModel, student: KGCModel, device: str,
                    saved_final: bool) -> StageResult:
    """A stage finished by an earlier session: ``model`` gets the weights ``fit`` ended with (the best on
    validation, from the checkpoint), so later stages (IterDE's next step, DualDE's stage 2) start from them."""
    ckpt = load_checkpoint(run_dir / "checkpoints" / LAST_CHECKPOINT)
    model.load_state_dict(ckpt["best_model"] if ckpt.get("best_model") is not None else ckpt["model"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    final = load_model(run_dir, device=device) if saved_final else student
    return StageResult(name, run_dir, final, metrics, summary_row(name, final, metrics))


def read_summary(run_dir: Path) -> dict[str, Any]:
    """Summary row of an existing run folder (e.g. the teacher), from its ``metrics.json``."""
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    return metrics


__all__ = ["StageResult", "SUMMARY_COLUMNS", "StageState", "StageTrainer", "make_student", "scoring_throughput",
           "summary_row", "finish_stage", "run_stage", "stage_status", "read_summary"]
