"""Training end to end: learning on nations, every training mode, resume after a crash, NaN stop."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from kgdistill import runs
from kgdistill.config import DataConfig, EvaluationConfig, ModelConfig, RunConfig, TrainingConfig
from kgdistill.data.datasets import load_dataset
from kgdistill.errors import ConfigError, TrainingDivergedError
from kgdistill.evaluate import evaluate
from kgdistill.training import loop


def nations_config(out: Path, **training: object) -> RunConfig:
    t = dict(training_mode="1vsall", epochs=30, batch_size=256, optimizer="adagrad", lr=0.1, regularizer="n3",
             regularizer_weight=0.005, eval_every=10, patience=0, seed=3)
    t.update(training)
    return RunConfig(data=DataConfig(dataset="nations"), model=ModelConfig(model="complex", dim=32),
                     training=TrainingConfig(**t), evaluation=EvaluationConfig(eval_splits=["test"]),
                     output_dir=str(out), progress=False)


def test_training_on_nations_beats_random_by_wide_margin(tmp_path: Path) -> None:
    config = nations_config(tmp_path / "run")
    dataset = load_dataset("nations")
    untrained = runs.build_model(runs.resolve_config(config, dataset), dataset)
    random_mrr = evaluate(untrained, dataset, "test").summary()["both"]["mrr"]
    run = runs.train(config)
    trained_mrr = run.metrics["test"]["both"]["mrr"]
    assert trained_mrr > random_mrr + 0.2, (random_mrr, trained_mrr)
    assert trained_mrr > 0.6
    for name in ("config.yaml", "entities.tsv", "relations.tsv", "trace.jsonl", "model.safetensors", "model.json",
                 "metrics.json", "meta.json", "checkpoints/last.pt"):
        assert (tmp_path / "run" / name).exists(), name
    reloaded = runs.load_run(tmp_path / "run")
    again = evaluate(reloaded.model, reloaded.dataset, "test").summary()["both"]["mrr"]  # type: ignore[arg-type]
    assert again == pytest.approx(trained_mrr, abs=1e-9)


@pytest.mark.parametrize("mode,extra", [
    ("slcwa", dict(loss="nssa", negative_sampler="uniform", margin=6.0)),
    ("slcwa", dict(loss="margin", negative_sampler="bernoulli", margin=1.0)),
    ("slcwa", dict(loss="softplus", negative_sampler="uniform", regularizer="l2", regularizer_weight=1e-3)),
    ("kvsall", dict(label_smoothing=0.1)),
])
def test_every_training_mode_lowers_the_loss(tmp_path: Path, mode: str, extra: dict) -> None:
    model = "transe" if mode == "slcwa" else "distmult"
    t = dict(training_mode=mode, epochs=8, batch_size=128, optimizer="adam", lr=0.01, num_negatives=8,
             eval_every=0, patience=0, seed=1, regularizer="none", regularizer_weight=0.0)
    t.update(extra)
    config = RunConfig(data=DataConfig(dataset="nations"), model=ModelConfig(model=model, dim=16),
                       training=TrainingConfig(**t), evaluation=EvaluationConfig(eval_splits=["valid"]),
                       output_dir=str(tmp_path / "run"), progress=False)
    run = runs.train(config)
    losses = [r["loss"] for r in run.trace() if r["event"] == "epoch"]
    assert len(losses) == 8
    assert losses[-1] < losses[0]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return dict(runs.load_run(run_dir, with_dataset=False).model.state_dict())


def test_resume_after_crash_gives_the_same_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    common = dict(training_mode="slcwa", epochs=6, batch_size=256, lr=0.01, num_negatives=8, margin=6.0,
                  eval_every=2, patience=0, seed=7, optimizer="adam", regularizer="none")
    uninterrupted = runs.train(nations_config(tmp_path / "a", **common))

    original = loop.Trainer.train_epoch

    def crash_at_epoch_4(self: loop.Trainer, epoch: int) -> dict[str, float]:
        if epoch == 4:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(loop.Trainer, "train_epoch", crash_at_epoch_4)
    with pytest.raises(KeyboardInterrupt):
        runs.train(nations_config(tmp_path / "b", **common))
    monkeypatch.setattr(loop.Trainer, "train_epoch", original)
    resumed = runs.resume(tmp_path / "b")
    assert resumed.metrics["test"] == uninterrupted.metrics["test"] or \
        resumed.metrics["test"]["both"]["mrr"] == pytest.approx(uninterrupted.metrics["test"]["both"]["mrr"])
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-6)
    epochs = [r["epoch"] for r in resumed.trace() if r["event"] == "epoch"]
    assert epochs == [1, 2, 3, 4, 5, 6]  # no duplicated or missing epoch records


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = loop.Trainer._batch_loss

    def nan_in_epoch_3(self: loop.Trainer, idx: torch.Tensor) -> torch.Tensor:
        loss = original(self, idx)
        return loss * float("nan") if self.state.epoch == 2 else loss

    monkeypatch.setattr(loop.Trainer, "_batch_loss", nan_in_epoch_3)
    with pytest.raises(TrainingDivergedError, match="epoch 3.*Last good checkpoint"):
        runs.train(nations_config(tmp_path / "run", epochs=5, eval_every=0))
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["state"]["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_bad_configuration_is_a_clear_error(tmp_path: Path) -> None:
    base = nations_config(tmp_path / "x")
    with pytest.raises(ConfigError, match="unknown model 'transee'.*Did you mean 'transe'"):
        runs.train(replace(base, model=replace(base.model, model="transee")))
    with pytest.raises(ConfigError, match="training_mode"):
        runs.train(replace(base, training=replace(base.training, training_mode="2vsall")))
    with pytest.raises(ConfigError, match="optimizer"):
        runs.train(replace(base, training=replace(base.training, optimizer="adamm")))


def test_1vsall_without_reciprocal_relations_regularises_the_inverse_queries(tiny_kg) -> None:
    """Inverse queries (r ≥ R) of a model without reciprocal relations use relation r - R's row in the regulariser."""
    from kgdistill.models.embedding import EmbeddingModel
    from kgdistill.losses import regularizers
    from kgdistill.training.steps import one_vs_all_loss

    torch.manual_seed(0)
    model = EmbeddingModel("complex", tiny_kg.num_entities, tiny_kg.num_relations, 4, reciprocal=False)
    h, r, t = tiny_kg.train[:6].unbind(1)
    reg = regularizers.make("n3", weight=0.1)
    inverse = one_vs_all_loss(model, t, r + tiny_kg.num_relations, h, reg)
    plain = one_vs_all_loss(model, t, r + tiny_kg.num_relations, h, regularizers.make("n3", weight=0.0))
    rows = [(model.entity_rows(t), "complex"), (model.relation_rows(r), "complex"), (model.entity_rows(h), "complex")]
    assert inverse.item() == pytest.approx(plain.item() + reg(rows).item(), rel=1e-5)
