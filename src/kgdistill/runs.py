"""Run folders: every training run keeps its resolved config, id maps, trace, checkpoints, model and metrics.

KGE training (:func:`train`, :func:`resume`) and loading any run (:func:`load_run`, every model kind: the folder's
``config.yaml`` records the kind, see :mod:`kgdistill.runwriter`, which writes the folders of every kind).

Layout (LibKGE-style, so any run can be resumed or re-evaluated)::

    RUN_DIR/config.yaml        resolved configuration, after a ``kind: kge`` (or ``kind: text``) line
    RUN_DIR/meta.json          versions, git revision, seed, timing
    RUN_DIR/entities.tsv       id <TAB> label <TAB> name
    RUN_DIR/relations.tsv      id <TAB> label <TAB> text
    RUN_DIR/trace.jsonl        one JSON record per epoch / validation / resume
    RUN_DIR/checkpoints/last.pt
    RUN_DIR/model.safetensors  final (best-on-validation) weights, with model.json
    RUN_DIR/manifest.json      sha256 of model.safetensors and model.json (checked on every load)
    RUN_DIR/metrics.json       final metrics per split
    RUN_DIR/.kgdistill.lock    flock held by the process writing the folder (kgdistill.runfolder)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from kgdistill.config import RunConfig, config_kind
from kgdistill.data.datasets import load_dataset
from kgdistill.data.triples import KGDataset
from kgdistill.distributed import DistContext, barrier, init_distributed
from kgdistill.errors import ConfigError, RunFolderError
from kgdistill.evaluate import DatasetEvaluator
from kgdistill.models.base import KGCModel, load_model
from kgdistill.models.embedding import EmbeddingModel
from kgdistill.models.interactions import interactions
from kgdistill.registry import UnknownNameError
from kgdistill.runfolder import check_no_finished_run, check_output_folder, run_folder_lock
from kgdistill.runwriter import RunWriter, read_config, read_id_map, run_meta, write_id_maps
from kgdistill.training.engine import TrainerCallback
from kgdistill.training.loop import Trainer
from kgdistill.validate import validate_config

__all__ = ["Run", "REQUIRED_FILES", "train", "resume", "load_run", "read_run_config", "resolve_config", "build_model",
           "evaluate_splits", "write_id_maps", "read_id_map"]

REQUIRED_FILES = ("config.yaml", "entities.tsv", "relations.tsv")


@dataclass
class Run:
    """A run folder loaded in memory; ``config`` is the run configuration of its model kind (a KGE
    :class:`~kgdistill.config.RunConfig`, or a text :class:`~kgdistill.text.config.TextRunConfig`)."""

    path: Path
    config: Any
    model: KGCModel
    dataset: KGDataset | None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The model kind: ``kge`` or ``text``."""
        return config_kind(self.config)

    def trace(self) -> list[dict[str, Any]]:
        from kgdistill.training.trace import Trace

        return Trace(self.path / "trace.jsonl").read()


def resolve_config(config: RunConfig, dataset: KGDataset) -> RunConfig:
    """Fill the defaults that depend on other choices, so that the saved config is complete."""
    model_cfg = config.model
    try:
        canonical = interactions.canonical(model_cfg.model)
    except UnknownNameError as err:
        raise ConfigError(f"model: {err}") from None
    reciprocal = model_cfg.reciprocal
    if reciprocal is None:
        reciprocal = config.training.training_mode != "slcwa"
    constraint = model_cfg.entity_constraint or ("unit_norm" if canonical == "transe" else "none")
    model_cfg = replace(model_cfg, model=canonical, reciprocal=reciprocal, entity_constraint=constraint)
    output_dir = config.output_dir or str(Path("runs") / f"{dataset.name}-{canonical}-{time.strftime('%Y%m%d-%H%M%S')}")
    return replace(config, model=model_cfg, output_dir=output_dir)


def build_model(config: RunConfig, dataset: KGDataset) -> KGCModel:
    m = config.model
    torch.manual_seed(config.training.seed)
    try:
        return EmbeddingModel(m.model, dataset.num_entities, dataset.num_relations, m.dim,
                              reciprocal=bool(m.reciprocal), entity_constraint=m.entity_constraint,
                              interaction_options=m.model_options, init_scale=m.init_scale)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model {m.model!r}: {err}") from None


def evaluate_splits(model: KGCModel, evaluator: DatasetEvaluator, splits: list[str], progress: bool = False
                    ) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for split in splits:
        start = time.perf_counter()
        result = evaluator.evaluate(model, split, progress=progress)
        metrics[split] = {**result.summary(), "seconds": round(time.perf_counter() - start, 3)}
    return metrics


def train(config: RunConfig, dataset: KGDataset | None = None, resume: bool = False,
          ctx: DistContext | None = None) -> Run:
    """Train a model as ``config`` says, writing a run folder; returns the loaded :class:`Run`.

    Under ``torchrun`` (or with a multi-process ``ctx``) training is data-parallel over triples with the same
    global batch, evaluation is sharded over the ranks, and only rank 0 writes the run folder.

    Process-wide settings are left alone: ``training.retain_memory`` (glibc ``mallopt``) is applied by the command
    line; a library caller who wants it calls :func:`kgdistill.training.memory.retain_freed_memory` once.
    """
    config = validate_config(config)  # every option, before a folder or a process group exists
    if not resume and config.output_dir:
        check_output_folder(config.output_dir)
    ctx = ctx or init_distributed(config.device)
    config = replace(config, device=ctx.device)
    if dataset is None:
        d = config.data
        dataset = load_dataset(d.dataset, data_dir=d.data_dir, download=d.download, data_url=d.data_url)
    config = resolve_config(config, dataset)
    run_dir = Path(config.output_dir)  # type: ignore[arg-type]
    if not resume:
        check_output_folder(run_dir)
    with run_folder_lock(run_dir, enabled=ctx.is_main):
        return _train_locked(config, dataset, resume, ctx, run_dir)


def _train_locked(config: RunConfig, dataset: KGDataset, resume: bool, ctx: DistContext, run_dir: Path) -> Run:
    """The body of :func:`train`, run while this process holds the run folder's lock (see
    :mod:`kgdistill.runfolder`): the checks below cannot be raced by another writer."""
    t = config.training
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    if resume:
        if not (run_dir / "checkpoints" / "last.pt").exists():
            raise RunFolderError(f"{run_dir}: nothing to resume (no checkpoints/last.pt)")
    else:
        check_no_finished_run(run_dir)
    barrier(ctx)  # every rank has checked the folder before rank 0 writes into it
    writer = RunWriter(run_dir, enabled=ctx.is_main)
    writer.start(config, dataset)
    meta = (writer.read_meta() if resume else None) or run_meta(config.training.seed)
    meta["processes"] = ctx.world_size
    if resume:
        meta.setdefault("resumed", []).append(time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    else:
        writer.write_meta(meta)  # the start time survives a crash before the end
    model = build_model(config, dataset).to(config.device)
    evaluator = DatasetEvaluator(dataset, config.evaluation.eval_batch_size, config.evaluation.filtered,
                                 config.device, ctx=ctx)

    def validate(m: KGCModel) -> dict[str, float]:
        summary = evaluator.evaluate(m, "valid").summary()["both"]
        return {k: float(v) for k, v in summary.items()}

    timer = MetaTimer(meta, writer)
    trainer = Trainer(model, dataset, t, device=config.device, run_dir=run_dir, validate=validate,
                      progress=config.progress and ctx.is_main, ctx=ctx, callbacks=[timer])
    state = trainer.fit(resume=resume)
    meta["train_seconds"] = round(timer.elapsed(), 3)
    meta.update(epochs_done=state.epoch, best_epoch=state.best_epoch, stopped_early=state.stopped_early,
                finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    metrics = evaluate_splits(model, evaluator, list(config.evaluation.eval_splits),
                              progress=config.progress and ctx.is_main)
    metrics["num_parameters"] = model.num_parameters()
    metrics["train_seconds"] = meta["train_seconds"]
    writer.save_model(model)
    writer.write_metrics(metrics)
    writer.write_meta(meta)
    barrier(ctx)
    return Run(run_dir, config, model, dataset, metrics)


class MetaTimer(TrainerCallback):
    """Keeps ``meta.json`` in step with the checkpoints: with every checkpoint it records the training seconds so
    far (all sessions), so a run resumed after a crash reports its whole training time and keeps its original
    start."""

    def __init__(self, meta: dict[str, Any], writer: RunWriter) -> None:
        self.meta, self.writer = meta, writer
        self.seconds_before = 0.0
        self.session_start = time.perf_counter()

    def elapsed(self) -> float:
        """Training seconds of every session up to now."""
        return self.seconds_before + time.perf_counter() - self.session_start

    def after_checkpoint(self, trainer: Trainer) -> None:
        if trainer.ctx.is_main and trainer.checkpoint_path is not None:
            self.meta.update(checkpoint_epoch=trainer.state.epoch, checkpoint_train_seconds=round(self.elapsed(), 3))
            self.writer.write_meta(self.meta)

    def after_restore(self, trainer: Trainer) -> None:
        if self.meta.get("checkpoint_epoch") == trainer.state.epoch:
            self.seconds_before = float(self.meta.get("checkpoint_train_seconds", 0.0))
        else:  # a run folder of an older kgdistill: what its last session recorded
            self.seconds_before = float(self.meta.get("train_seconds", 0.0))
        self.session_start = time.perf_counter()


def resume(run_dir: str | Path, epochs: int | None = None, *, num_threads: int | None = None,
           progress: bool | None = None, device: str | None = None) -> Run:
    """Continue an interrupted (or finished, with more ``epochs``) run from ``checkpoints/last.pt``.

    Only ``epochs`` and options that do not change what the run computes (threads, progress, device) can be given;
    everything else comes from the run's ``config.yaml``, which is rewritten only once the new values are valid."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    if epochs is not None:
        config = replace(config, training=replace(config.training, epochs=epochs))
    if num_threads is not None:
        config = replace(config, training=replace(config.training, num_threads=num_threads))
    if progress is not None:
        config = replace(config, progress=progress)
    if device is not None:
        config = replace(config, device=device)
    return train(replace(config, output_dir=str(run_dir)), resume=True)


def read_run_config(run_dir: str | Path, kind: str | None = "kge") -> Any:
    """The configuration of the run in ``run_dir``: by default of a KGE run (a :class:`RunConfig`; a text run is
    refused in one line); ``kind="text"`` a text run's, ``kind=None`` that of whichever kind the run is."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: not a run folder")
    missing = [f for f in REQUIRED_FILES if not (run_dir / f).exists()]
    if missing:
        raise RunFolderError(f"{run_dir}: incomplete run folder, missing {', '.join(missing)}")
    return read_config(run_dir, kind)


def load_run(run_dir: str | Path, device: str | torch.device = "cpu", with_dataset: bool = True) -> Run:
    """Load a finished run of any model kind: config (the class of the kind its ``config.yaml`` records), model
    (best weights) and, by default, its dataset with the run's id maps."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir, kind=None)
    model = load_model(run_dir, device=device)
    dataset = None
    if with_dataset:
        d = config.data
        dataset = load_dataset(d.dataset, data_dir=d.data_dir, download=False, data_url=d.data_url)
        if read_id_map(run_dir / "entities.tsv") != dataset.entities or \
                read_id_map(run_dir / "relations.tsv") != dataset.relations:
            raise RunFolderError(f"{run_dir}: the dataset {d.dataset!r} found now has other ids than the run's "
                                 f"entities.tsv / relations.tsv")
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    return Run(run_dir, replace(config, device=str(device)), model, dataset, metrics)
