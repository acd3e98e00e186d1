"""The training loop: epochs of sLCWA or 1-N steps, validation with early stopping, atomic checkpoints, resume.

The loop is device-agnostic (``device`` is a parameter): ids are sampled from one seeded CPU generator, so a run
resumed from a checkpoint draws exactly the batches and negatives of an uninterrupted run.

:class:`Trainer` is the :class:`~kgdistill.training.engine.EpochLoop` (the loop of every model kind) of KGE
models: it serves KGE training (:func:`kgdistill.runs.train`) and every distillation stage
(:func:`kgdistill.distill.stage.run_stage`); the step is the built-in loss of the training mode or ``step_loss``;
what a kind of run keeps beside the checkpoint (training time in ``meta.json``, a stage's step state) is a
:class:`~kgdistill.training.engine.TrainerCallback`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from kgdistill.config import TrainingConfig
from kgdistill.distributed import GRAD_SYNC_MODES, DistContext, GradSync, all_gather_objects, shard_bounds
from kgdistill.data.triples import KGDataset
from kgdistill.errors import ConfigError, TrainingDivergedError
from kgdistill.losses import losses, regularizers
from kgdistill.models.base import KGCModel
from kgdistill.progress import bar as progress_bar
from kgdistill.registry import UnknownNameError
from kgdistill.training.checkpoint import atomic_torch_save, load_checkpoint
from kgdistill.training.engine import EpochLoop, TrainerCallback, TrainState
from kgdistill.training.negatives import negative_samplers
from kgdistill.training.optim import make_optimizer
from kgdistill.training.steps import KvsAllLabels, kvsall_loss, one_to_n_queries, one_vs_all_loss, slcwa_loss
from kgdistill.training.trace import Trace

log = logging.getLogger(__name__)

TRAINING_MODES = ("slcwa", "1vsall", "kvsall")
LAST_CHECKPOINT = "last.pt"


def _named(registry_kind: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except UnknownNameError as err:
        raise ConfigError(f"{registry_kind}: {err}") from None


class Trainer(EpochLoop):
    """Trains ``model`` on ``dataset.train`` following ``config``.

    Args:
        validate: ``validate(model) -> dict`` of validation metrics (must contain ``mrr``); None disables
            validation and early stopping.
        step_loss: ``step_loss(model, batch, generator) -> loss`` replaces the built-in step: ``batch`` is
            ``triples[B, 3]`` in sLCWA and ``queries[B, 3]`` (anchor, relation, target) in 1vsAll.
        run_dir: where ``checkpoints/`` and ``trace.jsonl`` go (None: nothing is written).
        callbacks: :class:`~kgdistill.training.engine.TrainerCallback` objects (e.g.
            :class:`kgdistill.runs.MetaTimer`, :class:`kgdistill.distill.stage.StageState`).
    """

    def __init__(self, model: KGCModel, dataset: KGDataset, config: TrainingConfig, *,
                 device: str | torch.device = "cpu", run_dir: str | Path | None = None,
                 validate: Callable[[KGCModel], dict[str, float]] | None = None, progress: bool = False,
                 step_loss: Callable[..., torch.Tensor] | None = None, ctx: DistContext | None = None,
                 callbacks: tuple[TrainerCallback, ...] | list[TrainerCallback] = ()) -> None:
        if config.training_mode not in TRAINING_MODES:
            raise ConfigError(f"training_mode: unknown {config.training_mode!r}; known: {', '.join(TRAINING_MODES)}")
        if config.epochs < 0 or config.batch_size < 1:
            raise ConfigError("epochs must be ≥ 0 and batch_size ≥ 1")
        if config.grad_sync not in GRAD_SYNC_MODES:
            raise ConfigError(f"grad_sync: unknown {config.grad_sync!r}; known: {', '.join(GRAD_SYNC_MODES)}")
        self.model, self.dataset, self.config = model, dataset, config
        self.device = torch.device(device)
        self.run_dir = Path(run_dir) if run_dir else None
        self.validate, self.progress = validate, progress
        self.callbacks = list(callbacks)
        self.ctx = ctx or DistContext(device=str(device))
        self.trace = Trace(self.run_dir / "trace.jsonl" if self.run_dir and self.ctx.is_main else None)
        self.optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr, config.weight_decay)
        # one seeded generator draws the (global) batch order; negatives come from a per-rank generator
        self.generator = torch.Generator().manual_seed(config.seed)
        self.sample_generator = self.generator if not self.ctx.enabled else \
            torch.Generator().manual_seed(config.seed + 7919 * (self.ctx.rank + 1))
        self.state = TrainState()
        self.best_model_state: dict[str, torch.Tensor] | None = None
        #: ``epoch -> bool``: whether a validation at that epoch may select the final model (default: every one)
        self.selectable: Callable[[int], bool] | None = None
        self.regularizer = _named("regularizer", lambda: regularizers.make(config.regularizer,
                                                                          weight=config.regularizer_weight))
        self.train_triples = dataset.train
        self.step_loss = step_loss
        if config.training_mode == "slcwa":
            self.loss_fn = _named("loss", lambda: losses.make(
                config.loss, margin=config.margin, adversarial_temperature=config.adversarial_temperature))
            self.sampler = _named("negative_sampler", lambda: negative_samplers.make(
                config.negative_sampler, num_entities=dataset.num_entities, num_negatives=config.num_negatives,
                train=dataset.train, num_relations=dataset.num_relations))
        elif config.training_mode == "1vsall":
            self.queries = one_to_n_queries(dataset.train, dataset.num_relations)
        else:
            self.kvsall = KvsAllLabels(dataset.train, dataset.num_entities, dataset.num_relations)

    # ---- checkpoints -----------------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return self.run_dir / "checkpoints" / LAST_CHECKPOINT if self.run_dir else None

    def _write_checkpoint(self) -> None:
        sample_states = all_gather_objects(self.sample_generator.get_state(), self.ctx)  # collective: every rank
        if self.checkpoint_path is None or not self.ctx.is_main:
            return
        atomic_torch_save({
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "sample_generators": sample_states,
            "state": asdict(self.state),
            "best_model": self.best_model_state,
        }, self.checkpoint_path)

    def _read_checkpoint(self, path: str | Path | None = None) -> None:
        ckpt = load_checkpoint(path or self.checkpoint_path)  # type: ignore[arg-type]
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.generator.set_state(ckpt["generator"])
        if self.ctx.enabled:
            states = ckpt.get("sample_generators") or []
            if len(states) != self.ctx.world_size:
                raise TrainingDivergedError(
                    f"{self.checkpoint_path}: written by {len(states)} process(es), resumed with "
                    f"{self.ctx.world_size}; resume with the same number of processes")
            self.sample_generator.set_state(states[self.ctx.rank])
        self.state = TrainState(**ckpt["state"])
        self.best_model_state = ckpt["best_model"]
        self.trace.truncate_after_epoch(self.state.epoch)
        self.trace.write("resume", epoch=self.state.epoch)

    # ---- epochs ----------------------------------------------------------------------------------------------
    def num_examples(self) -> int:
        """Triples (sLCWA), queries (1vsAll: two per triple) or distinct queries (KvsAll) per epoch."""
        mode = self.config.training_mode
        if mode == "slcwa":
            return self.train_triples.shape[0]
        return self.queries[0].shape[0] if mode == "1vsall" else len(self.kvsall)

    def _batch_loss(self, idx: torch.Tensor) -> torch.Tensor:
        cfg, dev = self.config, self.device
        if cfg.training_mode == "slcwa":
            batch = self.train_triples[idx].to(dev)
            if self.step_loss is not None:
                return self.step_loss(self.model, batch, self.sample_generator)
            return slcwa_loss(self.model, batch, self.sampler, self.loss_fn, self.regularizer,
                              self.sample_generator)
        if cfg.training_mode == "1vsall":
            a, r, t = (x[idx].to(dev) for x in self.queries)
            if self.step_loss is not None:  # custom 1-N step: queries[B, 3] = (anchor, relation (≥ R: inverse), target)
                return self.step_loss(self.model, torch.stack([a, r, t], dim=1), self.generator)
            return one_vs_all_loss(self.model, a, r, t, self.regularizer)
        return kvsall_loss(self.model, self.kvsall, idx, self.regularizer, cfg.label_smoothing)

    def _step_module(self) -> torch.nn.Module | None:
        """In a multi-process run with ``grad_sync: dense``: the model behind DistributedDataParallel, whose
        forward is one batch loss (``sparse`` / ``auto``: None, :attr:`grad_sync` averages after backward)."""
        if not self.ctx.enabled or self.grad_sync is not None:
            return None
        if getattr(self, "_ddp", None) is None:
            from torch.nn.parallel import DistributedDataParallel

            self._ddp = DistributedDataParallel(_BatchLoss(self), device_ids=None if self.device.type == "cpu"
                                                else [self.device])
        return self._ddp

    @property
    def grad_sync(self) -> GradSync | None:
        """The gradient exchange of a multi-process run with ``grad_sync`` sparse or auto (no DDP then; made on
        first use, which broadcasts rank 0's parameters as DDP's wrapping does)."""
        if not self.ctx.enabled or self.config.grad_sync == "dense":
            return None
        if getattr(self, "_grad_sync", None) is None:
            self._grad_sync = GradSync(list(self.model.parameters()), self.ctx, self.config.grad_sync)
            self._grad_sync.broadcast_parameters(self.model)
        return self._grad_sync

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        ddp = self._step_module()
        sync = self.grad_sync
        n = self.num_examples()
        bs = self.config.batch_size
        perm = torch.randperm(n, generator=self.generator)
        num_batches = math.ceil(n / bs)
        total, start = 0.0, time.perf_counter()
        bar = progress_bar(num_batches, f"epoch {epoch}", enabled=self.progress, unit="batch", leave=False,
                           dynamic_ncols=True)
        try:
            for b in range(num_batches):
                idx = perm[b * bs:(b + 1) * bs]
                if self.ctx.enabled and idx.shape[0] >= self.ctx.world_size:  # this rank's share of the batch
                    lo, hi = shard_bounds(idx.shape[0], self.ctx.rank, self.ctx.world_size)
                    idx = idx[lo:hi]
                self.optimizer.zero_grad(set_to_none=True)
                loss = ddp(idx) if ddp is not None else self._batch_loss(idx)
                value = float(loss.detach())
                if not math.isfinite(value):
                    where = f"{self.checkpoint_path} (epoch {self.state.epoch})" if self.checkpoint_path and \
                        self.checkpoint_path.exists() else "none written yet"
                    raise TrainingDivergedError(
                        f"the loss became {value} at epoch {epoch}, batch {b + 1}/{num_batches}; training stopped. "
                        f"Last good checkpoint: {where}. Try a lower learning rate (lr={self.config.lr}) or "
                        f"gradient clipping (--max-grad-norm).")
                loss.backward()
                if sync is not None:
                    sync()
                if self.config.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
                self.optimizer.step()
                self.model.apply_constraints()
                total += value * idx.shape[0]
                if self.progress:
                    done = min(n, (b + 1) * bs)
                    bar.set_postfix(loss=f"{value:.4f}", rate=f"{done / (time.perf_counter() - start):,.0f}/s")
                    bar.update(1)
        finally:
            bar.close()
        seconds = time.perf_counter() - start
        if self.ctx.enabled:  # each rank summed loss × examples over its shares: the sum over ranks covers all n
            total = sum(all_gather_objects(total, self.ctx))
        return {"loss": total / n, "seconds": seconds, "examples_per_second": n / seconds}

    @property
    def epochs_done(self) -> int:
        return self.state.epoch

    def finished(self) -> bool:
        return self.state.epoch >= self.config.epochs or self.state.stopped_early

    def fit(self, resume: bool = False) -> TrainState:
        """Train until ``epochs`` or early stopping; validation every ``eval_every`` epochs and at the end."""
        return super().fit(resume)  # type: ignore[no-any-return]

    def end_epoch(self, epoch: int, stats: dict[str, Any]) -> None:
        cfg = self.config
        self.state.epoch = epoch
        record = {"epoch": epoch, **{k: round(v, 6) for k, v in stats.items()}}
        self.trace.write("epoch", **record)
        if self.ctx.is_main:
            log.info("epoch %d: loss %.5f, %.1fs, %s examples/s", epoch, stats["loss"], stats["seconds"],
                     f"{stats['examples_per_second']:,.0f}")
        due = cfg.eval_every > 0 and epoch % cfg.eval_every == 0
        if self.validate is not None and (due or epoch == cfg.epochs):
            self._validation(epoch)
        if self.checkpoint_due(epoch, max(1, cfg.checkpoint_every), cfg.epochs):
            self.save_checkpoint()

    def finish(self) -> TrainState:
        self.restore_best(self.model)
        return self.state

    def _validation(self, epoch: int) -> None:
        assert self.validate is not None
        metrics = self.validate(self.model)
        mrr = metrics["mrr"]
        self.trace.write("validation", epoch=epoch, **metrics)
        self.state.history.append({"epoch": epoch, **metrics})
        if self.ctx.is_main:
            log.info("epoch %d: validation MRR %.4f", epoch, mrr)
        if self.selectable is not None and not self.selectable(epoch):
            return  # e.g. a pruning ramp that has not reached its sparsity: no model of this epoch is kept
        if not self.select(self.model, epoch, mrr, patience=self.config.patience) and self.state.stopped_early:
            self.trace.write("early_stop", epoch=epoch, best_epoch=self.state.best_epoch)




class _BatchLoss(torch.nn.Module):
    """``forward(idx) -> loss`` over the trainer's model, so DistributedDataParallel can wrap one training step.

    Only ``model`` is a submodule: a distillation teacher used inside the step stays outside DDP.
    """

    def __init__(self, trainer: Trainer) -> None:
        super().__init__()
        self.model = trainer.model
        self._trainer = [trainer]  # a list, so the trainer is not registered as a submodule

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self._trainer[0]._batch_loss(idx)
