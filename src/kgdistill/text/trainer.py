"""Training and distillation of text bi-encoders into run folders (same layout as embedding runs).

``train_text(config)`` builds the model (from a PLM, or a layer-selected student of a teacher run), trains it with
the configured objective (plain SimKGC, logit KD, patient KD, PMD, HRKD), validates each ``eval_every`` epochs
keeping the best weights (validation MRR), and writes its run folder with :class:`~kgdistill.runwriter.RunWriter`:
``config.yaml`` (the text run config after ``kind: text``, so ``kgdistill evaluate`` / ``predict`` /
``runs.load_run`` know the kind), ``entities.tsv``, ``relations.tsv``, ``meta.json``, ``trace.jsonl``,
``checkpoints/last.pt`` (atomic, resumable), ``model.safetensors`` + ``model.json`` (with the entity-embedding
cache) and ``metrics.json``. (Folders written before kinds were recorded hold the text config in
``text_config.yaml`` and a stand-in ``config.yaml``; they still load and resume.)
AdamW, linear warm-up then linear decay, gradient clipping (SimKGC's optimisation).

Under ``torchrun`` (or with a multi-process ``ctx``) training is data-parallel: every rank draws the same global
batch of ``batch_size`` examples and encodes its share; the student is wrapped in DistributedDataParallel (a frozen
teacher never is; the objective's own trainable modules have their gradients averaged explicitly); the in-batch
negatives are every rank's tails (see :mod:`kgdistill.text.objective`), so the contrastive batch is the global one.
Entity encodings for evaluation are split over the ranks by encoding batch and gathered, queries are evaluated
sharded, and only rank 0 writes the run folder.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from kgdistill.config import from_dict, load_yaml
from kgdistill.data.datasets import load_dataset
from kgdistill.data.triples import KGDataset
from kgdistill.distributed import DistContext, barrier, broadcast_tensor_, init_distributed
from kgdistill.errors import ConfigError, RunFolderError
from kgdistill.evaluate import DatasetEvaluator
from kgdistill.registry import UnknownNameError
from kgdistill.runfolder import check_no_finished_run, check_output_folder, run_folder_lock
from kgdistill.runs import Run, evaluate_splits, read_id_map, read_run_config
from kgdistill.runwriter import LEGACY_TEXT_CONFIG, RunWriter, run_meta
from kgdistill.text.biencoder import BiEncoder
from kgdistill.text.config import (DistillConfig, TextModelConfig, TextRunConfig, TextTrainingConfig,
                                   check_text_config)
from kgdistill.text.loop import TextTrainer, share_entity_encodings
from kgdistill.text.objective import Objective, objectives
from kgdistill.text.students import check_same_plm, default_layers, layer_state, make_student
from kgdistill.text.textdata import KnownTails, entity_base_texts, relation_texts_of, with_inverses
from kgdistill.validate import validate_config

log = logging.getLogger(__name__)

#: the text config file of run folders written before ``config.yaml`` recorded the model kind
TEXT_CONFIG = LEGACY_TEXT_CONFIG
__all__ = ["DistillConfig", "TextModelConfig", "TextRunConfig", "TextTrainingConfig", "build_text_model",
           "load_text_config", "train_text"]


def load_text_config(path: str | Path) -> TextRunConfig:
    return load_yaml(path, TextRunConfig)  # type: ignore[arg-type]


def _model_options(m: TextModelConfig) -> dict[str, Any]:
    return dict(max_length=m.max_length, pooling=m.pooling, init_temperature=m.init_temperature,
                learn_temperature=m.learn_temperature, additive_margin=m.additive_margin,
                neighbour_names=m.neighbour_names, neighbour_min_words=m.neighbour_min_words,
                rerank_hops=m.rerank_hops, rerank_weight=m.rerank_weight, encode_batch_size=m.encode_batch_size,
                encode_dtype=m.encode_dtype)


def _uniform_map(student_layers: int, teacher_layers: int) -> list[int]:
    return [round((i + 1) * teacher_layers / student_layers) - 1 for i in range(student_layers)]


def build_text_model(config: TextRunConfig, dataset: KGDataset, attn_implementation: str = "sdpa"
                     ) -> tuple[BiEncoder, BiEncoder | None, list[int]]:
    """``(student, teacher or None, layer map student→teacher)`` as ``config`` says."""
    d, m = config.distill, config.model
    try:
        method = objectives.get(d.method)
    except UnknownNameError as err:
        raise ConfigError(f"distill.method: {err}") from None
    torch.manual_seed(config.training.seed)
    if d.teacher is None:
        if method.needs_teacher:
            raise ConfigError(f"method {d.method!r} needs a teacher run folder (--teacher RUN_DIR)")
        names, texts = entity_base_texts(dataset)
        model = BiEncoder.from_plm(m.plm, names, texts, relation_texts_of(dataset), dataset.train,
                                   attn_implementation=attn_implementation, seed=config.training.seed,
                                   **_model_options(m))
        if m.plm_layers:
            keep = [int(x) for x in m.plm_layers]
            small = BiEncoder(**model.with_args(plm_config={**model.config()["plm_config"],
                                                             "num_hidden_layers": len(keep)}))
            small.hr_encoder.load_state_dict(layer_state(model.hr_encoder.state_dict(), keep))
            small.tail_encoder.load_state_dict(layer_state(model.tail_encoder.state_dict(), keep))
            small.train_triples.copy_(model.train_triples)
            model = small
        return model, None, []
    from kgdistill.runs import load_run

    teacher = load_run(d.teacher, with_dataset=False).model
    if not isinstance(teacher, BiEncoder):
        raise ConfigError(f"{d.teacher}: the teacher must be a text bi-encoder run (found {type(teacher).__name__})")
    if teacher.num_entities != dataset.num_entities or teacher.num_relations != dataset.num_relations:
        raise ConfigError(f"{d.teacher}: the teacher was trained on another graph ({teacher.num_entities} entities, "
                          f"{teacher.num_relations} relations; this dataset: {dataset.num_entities}, "
                          f"{dataset.num_relations})")
    check_same_plm(teacher, m.plm)
    teacher_dir = Path(d.teacher)
    for name, ids in (("entities.tsv", dataset.entities), ("relations.tsv", dataset.relations)):
        if read_id_map(teacher_dir / name) != ids:
            raise ConfigError(f"{teacher_dir / name}: the teacher was trained on another graph of the same size "
                              f"(its ids differ from this dataset's; e.g. another --subgraph seed)")
    if attn_implementation != teacher.config()["attn_implementation"]:
        t2 = BiEncoder(**teacher.with_args(attn_implementation=attn_implementation))
        t2.load_state_dict(teacher.state_dict())
        teacher = t2
    layers = [int(x) for x in d.layers] if d.layers else default_layers(
        teacher.num_layers, int(d.student_layers or teacher.num_layers), d.layer_choice)
    student = make_student(teacher, layers, d.student_init, attn_implementation=attn_implementation,
                           **_model_options(m))
    layer_map = layers if d.student_init == "teacher" else _uniform_map(len(layers), teacher.num_layers)
    return student, (teacher if method.needs_teacher else None), layer_map


def _split_holdout(train: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed + 101)
    perm = torch.randperm(train.shape[0], generator=g)
    n_hold = max(1, int(round(fraction * train.shape[0])))
    return train[perm[n_hold:]], train[perm[:n_hold]]


def train_text(config: TextRunConfig, dataset: KGDataset | None = None, resume: bool = False,
               ctx: DistContext | None = None) -> Run:
    """Train (or distil) a text bi-encoder as ``config`` says; returns the loaded :class:`~kgdistill.runs.Run`.

    ``ctx``: the process group (default :func:`~kgdistill.distributed.init_distributed`: one process unless
    launched by ``torchrun``); every rank returns the same run.
    """
    check_text_config(config)
    config = validate_config(config)  # every option, before a folder or a process group exists
    ctx = ctx or init_distributed(config.device)
    config = replace(config, device=ctx.device)
    if dataset is None:
        dd = config.data
        dataset = load_dataset(dd.dataset, data_dir=dd.data_dir, download=dd.download, data_url=dd.data_url)
    if not dataset.entity_names and not dataset.entity_descriptions:
        raise ConfigError(f"dataset {dataset.name!r} has no entity text (neither entity2text.tsv nor "
                          f"entity2description.tsv): a text model reads entity names or descriptions")
    t, d = config.training, config.distill
    if config.output_dir is None:
        if ctx.enabled:
            raise ConfigError("several processes need an explicit output folder (--out): each would name its own")
        config = replace(config, output_dir=str(Path("runs") / f"{dataset.name}-text-{d.method}-"
                                                               f"{time.strftime('%Y%m%d-%H%M%S')}"))
    if ctx.enabled and t.batch_size < ctx.world_size:
        raise ConfigError(f"batch_size {t.batch_size} is smaller than the {ctx.world_size} processes sharing it")
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    run_dir = Path(config.output_dir)  # type: ignore[arg-type]
    if not resume:
        check_output_folder(run_dir)
    with run_folder_lock(run_dir, enabled=ctx.is_main):
        return _train_text_locked(config, dataset, resume, ctx, run_dir)


def _train_text_locked(config: TextRunConfig, dataset: KGDataset, resume: bool, ctx: DistContext, run_dir: Path
                       ) -> Run:
    """The body of :func:`train_text`, run while this process holds the run folder's lock."""
    t, d = config.training, config.distill
    ckpt_path = RunWriter(run_dir).checkpoint_path()
    if resume and not ckpt_path.exists():
        raise RunFolderError(f"{run_dir}: nothing to resume (no checkpoints/last.pt; a run finished with "
                             f"training.keep_checkpoint false cannot be continued)")
    if not resume:
        check_no_finished_run(run_dir)
    barrier(ctx)  # every rank has checked the folder before rank 0 writes into it
    device = torch.device(config.device)
    attn = "eager" if getattr(objectives.get(d.method), "needs_attentions", False) else "sdpa"
    student, teacher, layer_map = build_text_model(config, dataset, attn)
    student.to(device)
    if teacher is not None:
        teacher.to(device)
    writer = RunWriter(run_dir, enabled=ctx.is_main)
    writer.start(config, dataset)
    trace = writer.trace

    train = dataset.train
    holdout = None
    if d.hrkd_holdout > 0:  # held out from every method alike, so they train on the same triples
        train, holdout = _split_holdout(train, d.hrkd_holdout, t.seed)
    examples = with_inverses(train, dataset.num_relations)
    known = KnownTails(with_inverses(dataset.train, dataset.num_relations), dataset.num_entities,
                       dataset.num_relations)
    method_cls = objectives.get(d.method)
    kwargs: dict[str, Any] = {}
    if getattr(method_cls, "uses_holdout", False):  # HRKD's meta batches: the hold-out, else the training triples
        kwargs = {"holdout": holdout if holdout is not None else train, "relation_labels": list(dataset.relations)}
    objective: Objective = method_cls(student, teacher, config, known, layer_map, ctx=ctx, **kwargs)
    extra_params = [p for mod in objective.modules() for p in mod.parameters() if p.requires_grad]
    evaluator = DatasetEvaluator(dataset, config.evaluation.eval_batch_size, config.evaluation.filtered, device,
                                 ctx=ctx)
    trainer = TextTrainer(student, objective, examples, t, writer=writer, evaluator=evaluator, device=device,
                          ctx=ctx, extra_params=extra_params)
    if resume:
        trainer.restore_checkpoint()
        meta = writer.read_meta() or run_meta(t.seed)
    else:
        meta = run_meta(t.seed)
        meta.update(method=d.method, teacher=d.teacher, layers=layer_map if teacher is not None else None,
                    student_layers=student.num_layers)
        trace.write("start", method=d.method, layers=student.num_layers, parameters=student.num_parameters(),
                    steps_per_epoch=trainer.steps_per_epoch, examples=int(examples.shape[0]),
                    processes=ctx.world_size)
    meta["processes"] = ctx.world_size
    writer.write_meta(meta)
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        import inspect

        # buffers (training triples, the entity cache) are not trained: nothing to broadcast at each step
        no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in \
            inspect.signature(DistributedDataParallel).parameters else {"broadcast_buffers": False}
        objective.student_module = DistributedDataParallel(
            student, device_ids=None if device.type == "cpu" else [device], **no_sync)
        with torch.no_grad():
            for p in extra_params:
                broadcast_tensor_(p.data, ctx)

    trainer.fit()  # the checkpoint, when resuming, was restored above (before the model is wrapped for DDP)
    epoch, step, best, train_seconds = trainer.epoch, trainer.step, trainer.best, trainer.train_seconds
    student.eval()
    enc_start = time.perf_counter()
    share_entity_encodings(student, ctx)
    enc_seconds = time.perf_counter() - enc_start
    writer.save_model(student)
    metrics = evaluate_splits(student, evaluator, list(config.evaluation.eval_splits),
                              progress=config.progress and ctx.is_main)
    metrics.update(num_parameters=student.num_parameters(), encoder_parameters=student.encoder_parameters(),
                   encoder_layers=student.num_layers, train_seconds=round(train_seconds, 3),
                   entity_encoding_per_s=round(student.num_entities / max(enc_seconds, 1e-9), 2),
                   best_valid_mrr=best, method=d.method, device=str(device), threads=torch.get_num_threads(),
                   processes=ctx.world_size, encode_dtype=student.encode_dtype, train_dtype=t.train_dtype)
    report = objective.report()
    if report:
        metrics["objective"] = report
        trace.write("objective", **report)
    meta.update(train_seconds=round(train_seconds, 3), epochs_done=epoch, steps=step,
                finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    writer.write_metrics(metrics)
    writer.write_meta(meta)
    if ctx.is_main:
        if not t.keep_checkpoint:
            ckpt_path.unlink(missing_ok=True)
    barrier(ctx)  # the folder is complete before any rank returns (a next stage reads it)
    if teacher is not None:
        del teacher
    return Run(run_dir, config, student, dataset, metrics)


def resume_text(run_dir: str | Path, epochs: int | None = None) -> Run:
    """Continue an interrupted text run from ``checkpoints/last.pt`` (its config: ``config.yaml``, or the
    ``text_config.yaml`` of an older folder, which is then replaced by ``config.yaml``)."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir, kind="text")
    if epochs is not None:
        config = replace(config, training=replace(config.training, epochs=epochs))
    return train_text(replace(config, output_dir=str(run_dir)), resume=True)


def config_from_mapping(data: dict[str, Any]) -> TextRunConfig:
    return from_dict(TextRunConfig, data)

