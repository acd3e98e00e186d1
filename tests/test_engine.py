"""The one training loop (:class:`kgdistill.training.engine.EpochLoop`): the KGE trainer (runs and distillation
stages) and the text trainer are both that loop; callbacks see every fit start, checkpoint and restore."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kgdistill.config import TrainingConfig
from kgdistill.data.triples import KGDataset
from kgdistill.models.embedding import EmbeddingModel
from kgdistill.training.engine import EpochLoop, TrainerCallback
from kgdistill.training.loop import Trainer


class Recorder(TrainerCallback):
    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    def on_fit_start(self, trainer: Any) -> None:
        self.events.append(("fit", trainer.epochs_done))

    def before_checkpoint(self, trainer: Any) -> None:
        self.events.append(("before", trainer.epochs_done))

    def after_checkpoint(self, trainer: Any) -> None:
        assert trainer.checkpoint_path.exists()  # written between the two hooks
        self.events.append(("after", trainer.epochs_done))

    def after_restore(self, trainer: Any) -> None:
        self.events.append(("restore", trainer.epochs_done))


def _trainer(dataset: KGDataset, run_dir: Path, epochs: int, recorder: Recorder) -> Trainer:
    torch.manual_seed(0)
    model = EmbeddingModel("distmult", dataset.num_entities, dataset.num_relations, 8)
    config = TrainingConfig(epochs=epochs, batch_size=16, num_negatives=2, eval_every=0, patience=0,
                            checkpoint_every=2)
    return Trainer(model, dataset, config, run_dir=run_dir, callbacks=[recorder])


def test_both_trainers_are_the_one_loop() -> None:
    from kgdistill.text.loop import TextTrainer

    assert issubclass(Trainer, EpochLoop) and issubclass(TextTrainer, EpochLoop)
    for name in ("fit", "save_checkpoint", "restore_checkpoint"):  # the loop and its callbacks are not redefined
        assert getattr(Trainer, name) is getattr(EpochLoop, name) or name == "fit"
        assert getattr(TextTrainer, name) is getattr(EpochLoop, name)


def test_callbacks_see_fit_checkpoints_and_restore(tiny_kg: KGDataset, tmp_path: Path) -> None:
    first = Recorder()
    state = _trainer(tiny_kg, tmp_path, 3, first).fit()
    assert state.epoch == 3
    # checkpoints every 2 epochs and at the last one
    assert first.events == [("fit", 0), ("before", 2), ("after", 2), ("before", 3), ("after", 3)]
    again = Recorder()
    state = _trainer(tiny_kg, tmp_path, 5, again).fit(resume=True)
    assert state.epoch == 5
    assert again.events == [("fit", 0), ("restore", 3), ("before", 4), ("after", 4), ("before", 5), ("after", 5)]
    events = [r["event"] for r in Trainer(EmbeddingModel("distmult", tiny_kg.num_entities, tiny_kg.num_relations, 8),
                                          tiny_kg, TrainingConfig(), run_dir=tmp_path).trace.read()]
    assert events.count("epoch") == 5 and events.count("resume") == 1


def test_model_selection_and_checkpoints_are_the_loops_own() -> None:
    """``select`` keeps a CPU copy of the best weights (less excluded keys), counts validations without improvement
    and stops early at ``patience``; ``restore_best`` puts them back; ``checkpoint_due`` as both trainers use it.
    Both trainers select through it (no trainer defines its own)."""
    from kgdistill.text.loop import TextTrainer
    from kgdistill.training.engine import TrainState

    assert "select" not in vars(Trainer) and "select" not in vars(TextTrainer)
    loop = EpochLoop()
    loop.state, loop.callbacks = TrainState(), []
    model = torch.nn.Linear(2, 1)
    model.register_buffer("cache", torch.zeros(3))
    with torch.no_grad():
        model.weight.fill_(1.0)
    assert loop.select(model, 1, 0.5, patience=2, exclude=("cache",))
    assert loop.best_model_state is not None and "cache" not in loop.best_model_state
    with torch.no_grad():
        model.weight.fill_(2.0)
    assert not loop.select(model, 2, 0.4, patience=2) and not loop.state.stopped_early
    assert not loop.select(model, 3, 0.5, patience=2)  # equal is no improvement
    assert loop.state.stopped_early and (loop.state.best_epoch, loop.state.bad_evaluations) == (1, 2)
    loop.restore_best(model, strict=False)
    assert torch.equal(model.weight, torch.ones(1, 2))
    fresh = EpochLoop()
    fresh.state = TrainState()
    assert [e for e in range(1, 8) if fresh.checkpoint_due(e, 3, 7)] == [3, 6, 7]
    assert [e for e in range(1, 8) if fresh.checkpoint_due(e, 0, 7)] == [7]
    fresh.state.stopped_early = True
    assert fresh.checkpoint_due(2, 3, 7)
