"""Every registered component is exercised: the tests below are parametrised over the registries themselves, so a
component added to a registry is trained here (or must be named in another test's case list) before CI passes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from kgdistill import runs
from kgdistill.config import DataConfig, EvaluationConfig, ModelConfig, RunConfig, TrainingConfig
from kgdistill.distill.method import methods
from kgdistill.distill.schedules import make_schedule, schedules
from kgdistill.losses import losses, regularizers
from kgdistill.text.objective import objectives
from kgdistill.training.negatives import negative_samplers
from kgdistill.training.optim import optimizers


def _epoch_losses(out: Path, model: str = "complex", **training: object) -> list[float]:
    t: dict[str, object] = dict(training_mode="slcwa", epochs=4, batch_size=128, optimizer="adam", lr=0.01,
                                num_negatives=8, loss="softplus", eval_every=0, patience=0, seed=3,
                                regularizer="none", regularizer_weight=0.0)
    t.update(training)
    config = RunConfig(data=DataConfig(dataset="nations"), model=ModelConfig(model=model, dim=16),
                       training=TrainingConfig(**t), evaluation=EvaluationConfig(eval_splits=["valid"]),  # type: ignore
                       output_dir=str(out), progress=False)
    run = runs.train(config)
    values = [r["loss"] for r in run.trace() if r["event"] == "epoch"]
    assert len(values) == 4 and all(math.isfinite(v) for v in values)
    return values


@pytest.mark.parametrize("name", regularizers.names())
def test_every_regularizer_trains(tmp_path: Path, name: str) -> None:
    """The loss (regulariser included) falls over 4 epochs; a weighted regulariser adds to the first epoch's loss."""
    weighted = _epoch_losses(tmp_path / "w", regularizer=name, regularizer_weight=0.05)
    assert weighted[-1] < weighted[0]
    if name != "none":
        plain = _epoch_losses(tmp_path / "p")
        assert weighted[0] > plain[0]


@pytest.mark.parametrize("name", optimizers.names())
def test_every_optimizer_lowers_the_loss(tmp_path: Path, name: str) -> None:
    lr = {"sgd": 0.5, "adagrad": 0.1}.get(name, 0.01)
    values = _epoch_losses(tmp_path / name, optimizer=name, lr=lr)
    assert values[-1] < values[0]


@pytest.mark.parametrize("loss", losses.names())
@pytest.mark.parametrize("sampler", negative_samplers.names())
def test_every_loss_and_negative_sampler_lowers_the_loss(tmp_path: Path, loss: str, sampler: str) -> None:
    model = "transe" if loss in ("margin", "nssa") else "complex"
    values = _epoch_losses(tmp_path / f"{loss}-{sampler}", model=model, loss=loss, negative_sampler=sampler,
                           margin=6.0 if loss == "nssa" else 1.0)
    assert values[-1] < values[0]


@pytest.mark.parametrize("name", schedules.names())
def test_every_weight_schedule_gives_finite_non_negative_weights(name: str) -> None:
    schedule = make_schedule(name, 0.5)
    weights = [schedule.weight(epoch, 10, soft=1.0 / epoch, hard=2.0 / epoch) for epoch in range(1, 11)]
    assert all(math.isfinite(w) and w >= 0.0 for w in weights)
    assert max(weights) > 0.0


def test_every_distillation_method_and_text_objective_is_in_an_end_to_end_test() -> None:
    """The end-to-end tests name their methods in lists; those lists must cover the registries."""
    import test_distill
    import test_text_runs

    assert set(test_distill.CLI_METHODS) | set(test_text_runs.DISTILL_METHODS) == set(methods.names())
    assert {methods.get(m).family for m in test_distill.CLI_METHODS} == {"embedding"}
    assert {methods.get(m).family for m in test_text_runs.DISTILL_METHODS} == {"text"}
    assert {m for m, _ in test_text_runs.METHOD_CASES} == set(objectives.names())


def test_every_similarity_has_its_fast_paths_tested() -> None:
    import test_similarity

    from kgdistill.models.similarity import similarities

    assert set(test_similarity.SIMS) == set(similarities.names())
