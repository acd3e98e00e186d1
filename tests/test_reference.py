"""Shipped reference recipes: every one loads, the check judges metrics and configurations, and the demo recipe
reproduces its measured test MRR when run here."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from kgdistill import reference as ref
from kgdistill.cli import main
from kgdistill.errors import ConfigError, RunFolderError


def test_every_shipped_reference_loads_with_its_provenance() -> None:
    names = ref.list_references()
    assert {"kinship-complex-64", "wn18rr-transe-512", "fb15k-237-complex-512", "umls-minilm-300steps"} <= set(names)
    for name in names:
        r = ref.load_reference(name)
        assert r.kind in ref.KINDS and r.config.data.dataset
        value, tolerance = r.expected["mrr"]
        assert 0.0 < value < 1.0 and 0.0 < tolerance < 0.05
        assert r.measured and r.tolerance_basis and r.description  # where a number comes from is always said
        assert r.config.output_dir is None


def _metrics(mrr: float) -> dict:
    return {"test": {"both": {"mrr": mrr, "hits@1": 0.5}}}


def test_check_judges_the_metric_and_the_configuration() -> None:
    r = ref.load_reference("kinship-complex-64")
    value, tol = r.expected["mrr"]
    inside = ref.check_metrics(r, _metrics(value + 0.9 * tol), r.config)
    assert inside.ok and inside.comparable and "within" in inside.lines()[0]
    outside = ref.check_metrics(r, _metrics(value - 1.1 * tol), r.config)
    assert not outside.ok and "OUTSIDE" in outside.lines()[0]
    # where a run is written and on which device do not matter; what it computes does
    moved = replace(r.config, output_dir="/elsewhere", device="cuda",
                    data=replace(r.config.data, data_dir="/data"),
                    evaluation=replace(r.config.evaluation, eval_batch_size=7))
    assert ref.check_metrics(r, _metrics(value), moved).ok
    other = replace(r.config, training=replace(r.config.training, lr=0.5))
    verdict = ref.check_metrics(r, _metrics(value), other)
    assert not verdict.comparable and not verdict.ok
    assert verdict.differences == {"training.lr": (0.5, r.config.training.lr)}
    with pytest.raises(RunFolderError, match="no test metrics"):
        ref.check_metrics(r, {"valid": {"both": {"mrr": 0.1}}})


def test_bad_reference_files_name_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="shipped: .*kinship-complex-64"):
        ref.load_reference("no-such-reference")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: kge\nexpected: {mrr: [0.5, 0.01]}\n")
    with pytest.raises(ConfigError, match="missing config"):
        ref.load_reference(bad)
    bad.write_text("kind: kge\nexpected: {mrr: 0.5}\nconfig: {model: {model: complex}}\n")
    with pytest.raises(ConfigError, match=r"expected.mrr must be \[value, tolerance\]"):
        ref.load_reference(bad)
    bad.write_text("kind: kge\nexpected: {mrr: [0.5, 0.01]}\nconfig: {model: {modle: complex}}\n")
    with pytest.raises(ConfigError, match="unknown config key 'config.model.modle'"):
        ref.load_reference(bad)


def test_the_demo_recipe_reproduces_here_and_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Train the shipped demo teacher recipe (about 10 s) and check it against the measured MRR; then make a
    reference of the run itself, which the run must pass, and check a run of another configuration (not judged)."""
    out = tmp_path / "ref"
    assert main(["reference", "run", "kinship-complex-64", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "reference kinship-complex-64: reproduced" in printed and "mrr:" in printed
    made = tmp_path / "mine.yaml"
    assert main(["reference", "from-run", str(out), str(made), "--tolerance", "0.001", "--measured", "here",
                 "--tolerance-basis", "test"]) == 0
    assert main(["reference", "check", str(made), str(out)]) == 0
    mine = ref.load_reference(made)
    assert mine.expected["mrr"][0] == pytest.approx(json.loads((out / "metrics.json").read_text())
                                                   ["test"]["both"]["mrr"], abs=1e-4)
    other = tmp_path / "other"
    assert main(["train", "--config", str(out / "config.yaml"), "--epochs", "1", "--out", str(other),
                 "--progress", "false"]) == 0
    capsys.readouterr()
    assert main(["reference", "check", "kinship-complex-64", str(other)]) == 1
    assert "not comparable" in capsys.readouterr().out


def test_cli_list_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reference", "list"]) == 0
    listed = capsys.readouterr().out
    assert "fb15k-237-transe-512" in listed and "0.2169" in listed
    assert main(["reference", "show", "umls-minilm-300steps"]) == 0
    assert "plm: minilm-l6" in capsys.readouterr().out
