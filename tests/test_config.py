"""Configs: YAML round trip, overrides by flat name or dotted path, clear key errors; the registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from kgdistill.config import RunConfig, load_yaml, save_yaml, with_overrides
from kgdistill.errors import ConfigError
from kgdistill.registry import Registry, UnknownNameError


def test_yaml_round_trip(tmp_path: Path) -> None:
    config = with_overrides(RunConfig(), {"lr": "0.05", "training.epochs": 7, "model_options": "{p: 2}",
                                          "eval_splits": "valid,test", "reciprocal": "true"})
    save_yaml(config, tmp_path / "c.yaml")
    assert load_yaml(tmp_path / "c.yaml") == config
    assert config.training.lr == 0.05 and config.model.model_options == {"p": 2}
    assert config.evaluation.eval_splits == ["valid", "test"] and config.model.reciprocal is True


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown option 'lrate'"):
        with_overrides(RunConfig(), {"lrate": 1})
    with pytest.raises(ConfigError, match="training.epochs: cannot read '1.5' as int"):
        with_overrides(RunConfig(), {"training.epochs": "1.5"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  lr: [1\n")
    with pytest.raises(ConfigError, match="bad.yaml:3: not valid YAML"):
        load_yaml(bad)
    bad.write_text("training:\n  batchsize: 3\n")
    with pytest.raises(ConfigError, match="unknown config key 'training.batchsize'.*Did you mean 'batch_size'"):
        load_yaml(bad)


def test_registry_lookup_and_errors() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("TransE", "te")(1)
    assert reg.get("trans-e") == 1 and reg.get("TE") == 1 and "transe" in reg
    with pytest.raises(UnknownNameError, match="unknown widget 'tranze'; known names: TransE. Did you mean"):
        reg.get("tranze")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("trans_e")(2)
