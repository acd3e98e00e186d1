"""Run folders record their model kind (``kind: kge`` / ``kind: text`` in ``config.yaml``) and every reader
dispatches on it; text run folders of the older layout (a stand-in KGE ``config.yaml`` + ``text_config.yaml``) still
load and resume; the configuration layer checks every option (method configs too) before anything is written."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from kgdistill import cli
from kgdistill.config import (DataConfig, EvaluationConfig, ModelConfig, RunConfig, TrainingConfig, load_config,
                              load_yaml, to_dict)
from kgdistill.errors import ConfigError
from kgdistill.runs import load_run, read_run_config, train
from kgdistill.runwriter import run_kind
from kgdistill.text.config import TextModelConfig, TextRunConfig, TextTrainingConfig

TINY = "tiny:layers=2,hidden=16,heads=2,intermediate=32"


@pytest.fixture(scope="module")
def kge_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("kinds") / "kge"
    train(RunConfig(data=DataConfig(dataset="nations"), model=ModelConfig(model="distmult", dim=8),
                    training=TrainingConfig(epochs=2, batch_size=256, num_negatives=4, eval_every=1, num_threads=1),
                    output_dir=str(out), progress=False))
    return out


def _text_config(out: Path, epochs: int = 1) -> TextRunConfig:
    return TextRunConfig(data=DataConfig(dataset="umls"), model=TextModelConfig(plm=TINY, max_length=12),
                         training=TextTrainingConfig(epochs=epochs, batch_size=16, steps_per_epoch=2,
                                                     self_negatives=False, num_threads=1, log_every=1),
                         evaluation=EvaluationConfig(eval_splits=["test"]), output_dir=str(out))


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kgdistill.text.trainer import train_text

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("kinds") / "text"
    train_text(_text_config(out))
    return out


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_kge_run_records_its_kind(kge_run: Path) -> None:
    data = yaml.safe_load((kge_run / "config.yaml").read_text())
    assert next(iter(data)) == "kind" and data["kind"] == "kge"
    assert run_kind(kge_run) == "kge"
    run = load_run(kge_run)
    assert run.kind == "kge" and isinstance(run.config, RunConfig) and run.config.model.dim == 8
    # the file is still a config the KGE commands read (the kind line is understood), and only as a KGE one
    assert load_yaml(kge_run / "config.yaml") == replace(run.config, device="cpu")
    assert isinstance(load_config(kge_run / "config.yaml"), RunConfig)
    with pytest.raises(ConfigError, match="the config of a kge run.*reads text run configs"):
        load_yaml(kge_run / "config.yaml", TextRunConfig)


def test_text_run_records_its_kind_and_load_run_dispatches(text_run: Path) -> None:
    data = yaml.safe_load((text_run / "config.yaml").read_text())
    assert data["kind"] == "text" and data["model"]["plm"] == TINY and "training_mode" not in data["training"]
    assert not (text_run / "text_config.yaml").exists()  # one config file: the stand-in KGE config is gone
    assert run_kind(text_run) == "text"
    run = load_run(text_run)
    assert run.kind == "text" and isinstance(run.config, TextRunConfig)
    assert run.config == replace(_text_config(text_run), data=run.config.data)
    assert type(run.model).__name__ == "BiEncoder"
    assert read_run_config(text_run, kind=None) == read_run_config(text_run, kind="text")
    with pytest.raises(ConfigError, match="a text run .*text-train --resume"):
        read_run_config(text_run)  # the KGE reader (train --resume, the demo) refuses it in one line
    config = load_config(text_run / "config.yaml")
    assert isinstance(config, TextRunConfig) and config.model.plm == TINY
    with pytest.raises(ConfigError, match="the config of a text run.*reads kge run configs"):
        load_yaml(text_run / "config.yaml")


def test_train_resume_of_a_text_run_is_refused_in_one_line(text_run: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    shutil.copytree(text_run, run)
    before = (run / "config.yaml").read_bytes()
    err = _one_line_error(["train", "--resume", str(run), "--epochs", "2"], capsys)
    assert "a text run" in err and "text-train --resume" in err
    err = _one_line_error(["train", "--config", str(run / "config.yaml"), "--out", str(tmp_path / "x")], capsys)
    assert "the config of a text run" in err and not (tmp_path / "x").exists()
    err = _one_line_error(["text-train", "--resume", str(run), "--lr", "0.5"], capsys)
    assert "--lr" in err and "--epochs" in err
    assert (run / "config.yaml").read_bytes() == before


def _old_layout(run: Path) -> None:
    """Turn a text run folder into the layout written before kinds were recorded: ``text_config.yaml`` with the
    text config, ``config.yaml`` a stand-in KGE config (``model: biencoder``)."""
    data = yaml.safe_load((run / "config.yaml").read_text())
    data.pop("kind")
    (run / "text_config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    t = data["training"]
    stand_in = RunConfig(data=DataConfig(**data["data"]), model=ModelConfig(model="biencoder", dim=16),
                         training=TrainingConfig(training_mode="slcwa", epochs=t["epochs"],
                                                 batch_size=t["batch_size"], optimizer="adamw", lr=t["lr"],
                                                 weight_decay=t["weight_decay"], seed=t["seed"],
                                                 eval_every=t["eval_every"], patience=0,
                                                 max_grad_norm=t["max_grad_norm"], num_threads=t["num_threads"],
                                                 num_negatives=0),
                         evaluation=EvaluationConfig(**data["evaluation"]), device=data["device"],
                         output_dir=data["output_dir"], progress=data["progress"])
    (run / "config.yaml").write_text(yaml.safe_dump(to_dict(stand_in), sort_keys=False))


def test_an_old_layout_text_run_still_loads_and_resumes(text_run: Path, tmp_path: Path) -> None:
    from kgdistill.text.trainer import resume_text

    run_dir = tmp_path / "old"
    shutil.copytree(text_run, run_dir)
    _old_layout(run_dir)
    assert "biencoder" in (run_dir / "config.yaml").read_text()
    assert run_kind(run_dir) == "text"
    old = load_run(run_dir)
    new = load_run(text_run)
    assert old.kind == "text" and old.config == replace(new.config, output_dir=old.config.output_dir)
    assert old.metrics == new.metrics
    assert torch.equal(old.model.entity_cache, new.model.entity_cache)
    # resumed with one more epoch: continues from its checkpoint, and its folder takes the current layout
    resumed = resume_text(run_dir, epochs=2)
    assert [r["epoch"] for r in resumed.trace() if r["event"] == "epoch"] == [1, 2]
    assert not (run_dir / "text_config.yaml").exists()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["kind"] == "text"
    assert load_run(run_dir).config.training.epochs == 2


def test_method_options_are_checked_by_the_one_config_layer() -> None:
    from kgdistill.distill.method import make_config

    assert make_config("kd", {"dims": "8,4", "lr": "0.01"}).dims == [8, 4]
    with pytest.raises(ConfigError, match=r"--lr -1.0 \(lr\): expected a finite number > 0"):
        make_config("kd", {"lr": -1})
    with pytest.raises(ConfigError, match="dims: expected positive integers"):
        make_config("kd", {"dims": [8, 0]})
    with pytest.raises(ConfigError, match="dims: expected int items"):
        make_config("iterde", {"dims": "8,x"})
    with pytest.raises(ConfigError, match=r"--optimizer 'adamm' \(optimizer\): unknown"):
        make_config("kd", {"optimizer": "adamm"})
    with pytest.raises(ConfigError, match=r"mask_rate must be in \[0, 1\)"):
        make_config("pmd", {"mask_rate": 1.5})
    with pytest.raises(ConfigError, match="encode_dtype must be one of fp32, bf16, int8, got 'fp8'"):
        make_config("logit", {"encode_dtype": "fp8"})
    assert make_config("pmd", {"layers": "0,2"}).layers == [0, 2]  # typed items, as every other list option


def test_text_config_choices_and_resume_types_come_from_the_fields() -> None:
    import argparse

    from kgdistill.text.config import CHOICES
    from kgdistill.validate import resume_options, validate_config

    assert CHOICES["encode_dtype"] == ("fp32", "bf16", "int8") and CHOICES["layer_choice"] == ("top", "paper")
    bad = replace(TextRunConfig(), distill=replace(TextRunConfig().distill, hrkd_weights="some"))
    with pytest.raises(ConfigError, match="hrkd_weights must be one of learned, uniform"):
        validate_config(bad)
    args = argparse.Namespace(cfg_epochs="4", cfg_progress="no", cfg_lr=None, config=None, set=[])
    assert resume_options(args) == {"epochs": 4, "progress": False}
