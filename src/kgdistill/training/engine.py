"""The one training loop of every model kind: a step function over an epoch's batches, then the epoch's end
(validation, trace, checkpoint), with callbacks around checkpoints and restores.

:class:`EpochLoop` is the loop; a trainer says what one epoch is and what ends it:

* :meth:`EpochLoop.train_epoch` — the step function applied to the epoch's batches (KGE: sLCWA / 1-N steps or a
  distillation stage's ``step_loss``, :class:`kgdistill.training.loop.Trainer`; text bi-encoders: the objective's
  contrastive / distillation step, :class:`kgdistill.text.loop.TextTrainer`);
* :meth:`EpochLoop.end_epoch` — validation (keeping the best weights, early stopping), the trace record, the
  checkpoint when due;
* :meth:`EpochLoop.finished` and :meth:`EpochLoop.finish` — when to stop, what to restore at the end (the best
  weights).

What a kind of run keeps beside the checkpoint is a :class:`TrainerCallback`: the KGE run's training time in
``meta.json`` (:class:`kgdistill.runs.MetaTimer`), a distillation stage's step state
(:class:`kgdistill.distill.stage.StageState`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
    """``fit``: ``train_epoch`` then ``end_epoch`` for each epoch until ``finished()``, then ``finish()``."""

    callbacks: list[TrainerCallback]

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


__all__ = ["EpochLoop", "TrainerCallback"]
