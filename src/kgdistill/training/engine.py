"""The one training loop of every model kind: a step function over an epoch's batches, then the epoch's end
(validation, trace, checkpoint), with callbacks around checkpoints and restores.

:class:`EpochLoop` is the loop; a trainer says what one epoch is and what ends it:

* :meth:`EpochLoop.train_epoch` — the step function applied to the epoch's batches (KGE: sLCWA / 1-N steps or a
  distillation stage's ``step_loss``, :class:`kgdistill.training.loop.Trainer`; text bi-encoders: the objective's
  contrastive / distillation step, :class:`kgdistill.text.loop.TextTrainer`);
* :meth:`EpochLoop.end_epoch` — validation, the trace record, the checkpoint when due; model selection is the
  loop's own, alike for every kind: :meth:`EpochLoop.select` keeps a CPU copy of the best weights by validation
  MRR and stops early after ``patience`` validations without improvement, :meth:`EpochLoop.checkpoint_due` says
  when a checkpoint is written, and :meth:`EpochLoop.finish` puts the best weights back;
* :meth:`EpochLoop.finished` and :meth:`EpochLoop.finish` — when to stop, what to restore at the end (the best
  weights).

What a kind of run keeps beside the checkpoint is a :class:`TrainerCallback`: the KGE run's training time in
``meta.json`` (:class:`kgdistill.runs.MetaTimer`), a distillation stage's step state
(:class:`kgdistill.distill.stage.StageState`).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class TrainState:
    """What the loop needs to continue after a restart (saved in every checkpoint): epochs done, the model
    selection (best validation metric, its epoch, validations since it improved, whether training stopped early)
    and the validation history."""

    epoch: int = 0
    best_metric: float = -math.inf
    best_epoch: int = 0
    bad_evaluations: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


class TrainerCallback:
    """Hooks into an :class:`EpochLoop` (every method optional; called on every rank, in the order given)."""

    def on_fit_start(self, trainer: Any) -> None:
        """:meth:`EpochLoop.fit` starts (before a checkpoint is restored)."""

    def before_checkpoint(self, trainer: Any) -> None:
        """A checkpoint is about to be written (every rank: collectives are allowed)."""

    def after_checkpoint(self, trainer: Any) -> None:
        """The checkpoint has been written (on the writing rank)."""

    def after_restore(self, trainer: Any) -> None:
        """The trainer's state was restored from its checkpoint."""


class EpochLoop:
    """``fit``: ``train_epoch`` then ``end_epoch`` for each epoch until ``finished()``, then ``finish()``.

    A trainer sets ``state`` (a :class:`TrainState`), ``callbacks`` and ``best_model_state`` (``None`` until a
    validation improves) and calls :meth:`select` after each validation."""

    callbacks: list[TrainerCallback]
    state: TrainState
    best_model_state: dict[str, torch.Tensor] | None = None

    def select(self, model: torch.nn.Module, epoch: int, metric: float, patience: int = 0,
               exclude: Collection[str] = ()) -> bool:
        """Model selection after a validation of ``epoch`` scoring ``metric`` (higher is better): an improvement
        keeps a CPU copy of ``model``'s weights (less the ``exclude`` keys, e.g. a cache) and resets the count of
        validations without improvement; otherwise that count grows and, at ``patience`` (0: never), training
        stops early. Returns whether it improved."""
        state = self.state
        if metric > state.best_metric:
            state.best_metric, state.best_epoch, state.bad_evaluations = float(metric), epoch, 0
            self.best_model_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
                                     if k not in exclude}
            return True
        state.bad_evaluations += 1
        if patience and state.bad_evaluations >= patience:
            state.stopped_early = True
        return False

    def restore_best(self, model: torch.nn.Module, strict: bool = True) -> None:
        """Put the selected weights back into ``model`` (nothing when no validation ran)."""
        if self.best_model_state is not None:
            model.load_state_dict(self.best_model_state, strict=strict)

    def checkpoint_due(self, epoch: int, every: int, last_epoch: int) -> bool:
        """Whether a checkpoint is written after ``epoch``: every ``every`` epochs (0: only at the end), at the last
        epoch, and when training stopped early."""
        return (every > 0 and epoch % every == 0) or epoch == last_epoch or self.state.stopped_early

    @property
    def epochs_done(self) -> int:
        """Epochs trained so far (all sessions)."""
        raise NotImplementedError

    def finished(self) -> bool:
        """Whether training is over (the epoch count reached, or stopped early)."""
        raise NotImplementedError

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """Run the step function over epoch ``epoch``'s batches (1-based); returns the epoch's statistics."""
        raise NotImplementedError

    def end_epoch(self, epoch: int, stats: dict[str, Any]) -> None:
        """After epoch ``epoch``: record it, validate when due, write the checkpoint when due."""
        raise NotImplementedError

    def finish(self) -> Any:
        """After the last epoch (e.g. the best weights back into the model); its value is :meth:`fit`'s."""
        return None

    def fit(self, resume: bool = False) -> Any:
        """Train (``resume``: continue from the checkpoint) until :meth:`finished`; returns :meth:`finish`'s value."""
        for cb in self.callbacks:
            cb.on_fit_start(self)
        if resume:
            self.restore_checkpoint()
        while not self.finished():
            epoch = self.epochs_done + 1
            stats = self.train_epoch(epoch)
            self.end_epoch(epoch, stats)
        return self.finish()

    # ---- checkpoints: the trainer's own state in _write_checkpoint / _read_checkpoint, callbacks around them
    def save_checkpoint(self) -> None:
        for cb in self.callbacks:
            cb.before_checkpoint(self)
        self._write_checkpoint()
        for cb in self.callbacks:
            cb.after_checkpoint(self)

    def restore_checkpoint(self, path: str | Path | None = None) -> None:
        self._read_checkpoint(path)
        for cb in self.callbacks:
            cb.after_restore(self)

    def _write_checkpoint(self) -> None:
        raise NotImplementedError

    def _read_checkpoint(self, path: str | Path | None = None) -> None:
        raise NotImplementedError


__all__ = ["EpochLoop", "TrainerCallback", "TrainState"]
