"""The training loop of text bi-encoders: :class:`TextTrainer`, the :class:`~kgdistill.training.engine.EpochLoop`
of every model kind with the text objective's step (AdamW, linear warm-up then decay, gradient clipping).

Each epoch draws its batch order from a generator seeded with ``seed · 1000 + epoch index``; validation (every
``eval_every`` epochs and at the last) keeps the best weights by validation MRR, inside the epoch's trace record;
``checkpoints/last.pt`` holds the student (without its entity cache), AdamW, the schedule, the objective's state,
the epoch, the step, the best MRR and weights and the training seconds.

Under ``torch.distributed`` every rank draws the same global batch and steps on its share (a last batch smaller
than the number of ranks is skipped by all), the logged values are the global batch's means, and only rank 0
writes (see :mod:`kgdistill.text.trainer`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from kgdistill.distributed import (DistContext, all_reduce_grads_, all_reduce_mean_, gather_with_grad,
                                   shard_bounds)
from kgdistill.errors import TrainingDivergedError
from kgdistill.text.biencoder import BiEncoder
from kgdistill.text.config import TextTrainingConfig
from kgdistill.text.textdata import make_batch
from kgdistill.training.engine import EpochLoop, TrainerCallback, TrainState

log = logging.getLogger(__name__)


def share_entity_encodings(model: BiEncoder, ctx: DistContext) -> Tensor:
    """Fill ``model``'s entity cache ``[E, d]`` with the ranks splitting the work by encoding batch.

    The batches are those of a single process (``encode_batch_size`` consecutive ids), each encoded by one rank,
    then gathered, so the cache equals a single process's. In one process: :meth:`BiEncoder.refresh_cache`.
    """
    if not ctx.enabled:
        return model.refresh_cache()
    bs, E = model.encode_batch_size, model.num_entities
    lo, hi = shard_bounds((E + bs - 1) // bs, ctx.rank, ctx.world_size)
    local = model.encode_entities(list(range(lo * bs, min(hi * bs, E))))
    with torch.no_grad():
        model.entity_cache = gather_with_grad(local, ctx).to(model.entity_cache.device)
    return model.entity_cache


def lr_lambda(warmup: int, total: int):  # type: ignore[no-untyped-def]
    """Linear warm-up over ``warmup`` steps, then linear decay to 0 at ``total``."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


class TextTrainer(EpochLoop):
    """Trains ``student`` with ``objective`` on ``examples`` (``[N, 3]`` triples and their inverses).

    ``writer``: the run folder's :class:`~kgdistill.runwriter.RunWriter` (trace, checkpoints); ``evaluator``: the
    validation's :class:`~kgdistill.evaluate.DatasetEvaluator`; ``extra_params``: the objective's own trainable
    parameters (their gradients are averaged over the ranks explicitly).
    """

    def __init__(self, student: BiEncoder, objective: Any, examples: Tensor, config: TextTrainingConfig, *,
                 writer: Any, evaluator: Any, device: torch.device, ctx: DistContext,
                 extra_params: Sequence[torch.nn.Parameter] = (),
                 callbacks: Sequence[TrainerCallback] = ()) -> None:
        t = config
        self.student, self.objective, self.examples, self.config = student, objective, examples, t
        self.writer, self.evaluator, self.device, self.ctx = writer, evaluator, device, ctx
        self.trace = writer.trace
        self.callbacks = list(callbacks)
        self.extra_params = list(extra_params)
        self.params = [p for p in student.parameters() if p.requires_grad] + self.extra_params
        self.optimizer = torch.optim.AdamW(self.params, lr=t.lr, weight_decay=t.weight_decay)
        n_batches = (examples.shape[0] + t.batch_size - 1) // t.batch_size
        self.steps_per_epoch = min(n_batches, t.steps_per_epoch) if t.steps_per_epoch else n_batches
        total = max(1, self.steps_per_epoch * t.epochs)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           lr_lambda(min(t.warmup_steps, total // 2), total))
        self.step, self.train_seconds = 0, 0.0
        self.state = TrainState()
        self.best_model_state: dict[str, Tensor] | None = None

    @property
    def epoch(self) -> int:
        return self.state.epoch

    @property
    def best(self) -> float:
        """The best validation MRR so far (``-inf`` before the first validation)."""
        return self.state.best_metric

    @property
    def epochs_done(self) -> int:
        return self.state.epoch

    def finished(self) -> bool:
        return self.state.epoch >= self.config.epochs or self.state.stopped_early

    # ---- the step function over one epoch -----------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, Any]:
        t, ctx, student, objective = self.config, self.ctx, self.student, self.objective
        start = time.perf_counter()
        student.train()
        g = torch.Generator().manual_seed(t.seed * 1000 + epoch - 1)
        perm = torch.randperm(self.examples.shape[0], generator=g)
        sums: dict[str, float] = {}
        for b in range(self.steps_per_epoch):
            idx = perm[b * t.batch_size:(b + 1) * t.batch_size]
            global_size, share = idx.shape[0], 1.0
            if ctx.enabled:
                if global_size < ctx.world_size:  # a last batch too small to share: every rank skips it
                    continue
                lo, hi = shard_bounds(global_size, ctx.rank, ctx.world_size)
                idx = idx[lo:hi]
                share = idx.shape[0] * ctx.world_size / global_size  # the ranks' mean is the global batch mean
            batch = make_batch(student.tokenizer, student.entity_texts, student.relation_texts, self.examples[idx],
                               student.max_length, t.self_negatives).to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=t.train_dtype == "bf16"):
                loss, logs = objective.loss(batch, self.step)
            if share != 1.0:
                loss = loss * share
                logs = {k: v * share for k, v in logs.items()}
            values = {"loss": float(loss.detach()), **logs}
            if ctx.enabled:  # every rank logs, and checks, the global batch's values
                reduced = torch.tensor(list(values.values()), dtype=torch.float64)
                all_reduce_mean_([reduced], ctx)
                values = dict(zip(values, reduced.tolist()))
            if not math.isfinite(values["loss"]):
                raise TrainingDivergedError(f"loss is {values['loss']} at epoch {epoch}, step {self.step}; the last "
                                            f"checkpoint is kept in {self.writer.checkpoint_path()}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            all_reduce_grads_(self.extra_params, ctx)
            torch.nn.utils.clip_grad_norm_(self.params, t.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            values.update(objective.after_step(batch, self.step))
            self.step += 1
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            if t.log_every and self.step % t.log_every == 0:
                self.trace.write("step", epoch=epoch, step=self.step, **values,
                                 lr=self.scheduler.get_last_lr()[0], inv_t=float(student.inv_t.detach()))
        return {"sums": sums, "seconds": time.perf_counter() - start}

    # ---- the epoch's end: validation (best weights), trace, checkpoint --------------------------------------------
    def end_epoch(self, epoch: int, stats: dict[str, Any]) -> None:
        t, student = self.config, self.student
        self.state.epoch = epoch
        seconds = stats["seconds"]
        self.train_seconds += seconds
        record: dict[str, Any] = {k: v / self.steps_per_epoch for k, v in stats["sums"].items()}
        if (t.eval_every and epoch % t.eval_every == 0) or epoch == t.epochs:
            was = student.training
            student.eval()
            share_entity_encodings(student, self.ctx)
            summary = self.evaluator.evaluate(student, "valid").summary()["both"]
            student.train(was)
            record["valid"] = {k: float(v) for k, v in summary.items()}
            if self.select(student, epoch, float(summary["mrr"]), exclude=("entity_cache",)):
                record["best"] = True
        self.trace.write("epoch", epoch=epoch, seconds=round(seconds, 3), **record)
        if self.ctx.is_main:  # one line per epoch (the command line shows them; see kgdistill.progress)
            log.info("epoch %d: loss %.5f, %.1fs%s", epoch, record.get("loss", float("nan")), seconds,
                     f", validation MRR {record['valid']['mrr']:.4f}" if "valid" in record else "")
        if t.checkpoint_every and self.checkpoint_due(epoch, t.checkpoint_every, t.epochs):
            self.save_checkpoint()

    def finish(self) -> None:
        self.restore_best(self.student, strict=False)  # the entity cache is not part of the selected weights

    # ---- checkpoints ----------------------------------------------------------------------------------------------
    def _write_checkpoint(self) -> None:
        if not self.writer.enabled:
            return
        self.writer.save_checkpoint({
            "model": {k: v for k, v in self.student.state_dict().items() if k != "entity_cache"},
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "objective": self.objective.state_dict(), "epoch": self.state.epoch, "step": self.step,
            "best": self.state.best_metric, "best_state": self.best_model_state, "train_seconds": self.train_seconds})

    def _read_checkpoint(self, path: str | Path | None = None) -> None:
        from kgdistill.training.checkpoint import load_checkpoint

        ck = load_checkpoint(path) if path is not None else self.writer.load_checkpoint()
        self.student.load_state_dict(ck["model"], strict=False)
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.objective.load_state_dict(ck["objective"])
        self.state.epoch, self.step, self.best_model_state = ck["epoch"], ck["step"], ck["best_state"]
        self.state.best_metric = ck["best"]
        self.train_seconds = ck.get("train_seconds", 0.0)
        self.trace.truncate_after_epoch(self.epoch)
        self.trace.write("resume", epoch=self.epoch, step=self.step)


__all__ = ["TextTrainer", "share_entity_encodings", "lr_lambda"]
