"""The command line: every command runs, and bad input gives one clear message (exit 2), not a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kgdistill.cli import main

TRAIN = ["train", "--dataset", "nations", "--model", "distmult", "--dim", "16", "--training-mode", "1vsall",
         "--optimizer", "adagrad", "--lr", "0.1", "--epochs", "6", "--eval-every", "3", "--progress", "false"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main([*TRAIN, "--out", str(out)]) == 0
    return out


def test_train_writes_run_folder_and_prints_table(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) >= {"valid", "test", "num_parameters"}
    config = (run_dir / "config.yaml").read_text()
    assert "reciprocal: true" in config and "model: distmult" in config  # resolved defaults are saved


def test_evaluate_reproduces_metrics(run_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    assert main(["evaluate", str(run_dir), "--split", "test", "--per-relation", "--json", str(out)]) == 0
    again = json.loads(out.read_text())
    stored = json.loads((run_dir / "metrics.json").read_text())
    assert again["test"]["both"]["mrr"] == pytest.approx(stored["test"]["both"]["mrr"])
    assert "test_per_category" in again and len(again["test_per_relation"]) > 10
    assert "per relation category" in capsys.readouterr().out


def test_predict_by_name(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(run_dir), "--head", "usa", "--relation", "embassy", "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "(usa, embassy, ?)" in out and out.count("\n") >= 5
    assert main(["predict", str(run_dir), "--tail", "china", "--relation", "embassy", "-k", "2"]) == 0


def test_predict_unknown_name_suggests(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(run_dir), "--head", "usaa", "--relation", "embassy"]) == 2
    err = capsys.readouterr().err
    assert "unknown entity 'usaa'" in err and "'usa'" in err and "Traceback" not in err


def test_datasets_and_info(capsys: pytest.CaptureFixture[str], shared_data_dir: Path) -> None:
    assert main(["datasets", "--data-dir", str(shared_data_dir)]) == 0
    out = capsys.readouterr().out
    assert "kinship" in out and "wn18rr" in out.lower()
    assert main(["info", "umls"]) == 0
    out = capsys.readouterr().out
    assert "135" in out and "5,216" in out


@pytest.mark.parametrize("argv,message", [
    (["train", "--dataset", "nationz"], "Did you mean 'nations'"),
    (["train", "--dataset", "nations", "--model", "rotatee"], "Did you mean 'rotate'"),
    (["train", "--dataset", "nations", "--epochs", "many"], "cannot read 'many' as int"),
    (["train", "--dataset", "nations", "--set", "training.lrr=1"], "allowed keys in training"),
    (["evaluate", "/nonexistent/run"], "not a run folder"),
])
def test_bad_input_is_one_clear_message(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_incomplete_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.yaml").write_text("data: {dataset: nations}\n")
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "incomplete run folder, missing entities.tsv, relations.tsv" in capsys.readouterr().err


def test_malformed_data_file_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.tsv").write_text("a\tr\tb\n")
    (tmp_path / "valid.tsv").write_text("a\tr\tb\nc\tr\n")
    assert main(["info", str(tmp_path)]) == 2
    assert f"{tmp_path / 'valid.tsv'}:2: expected 3 tab-separated fields" in capsys.readouterr().err


def test_unknown_flag_exits_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--epohcs", "3"]) == 2
    assert "Did you mean '--epochs'" in capsys.readouterr().err


def test_distill_parses_text_methods_itself() -> None:
    """``distill --method pmd|hrkd|logit|patient`` is the ``distill`` command (no rewrite to ``text-distill``): it
    parses the text methods' options, and ``text-distill`` stays as their alias."""
    from kgdistill.cli import parse_args

    args = parse_args(["distill", "--method", "pmd", "--teacher", "r", "--grades", "2,1", "--mask-rates", "0.2",
                              "0.1", "0", "--no-pre-distill", "--plm", "tiny:layers=2"])
    assert args.command == "distill" and args.method == "pmd"
    assert (args.opt_grades, args.opt_mask_rates, args.opt_pre_distill, args.opt_plm) == \
        (["2,1"], ["0.2", "0.1", "0"], "false", "tiny:layers=2")
    args = parse_args(["distill", "--teacher", "r", "--method=HRKD", "--hrkd-domains", "prefix"])
    assert args.command == "distill" and args.opt_hrkd_domains == "prefix"
    assert parse_args(["distill", "--method", "iterde", "--teacher", "r"]).command == "distill"
    assert parse_args(["text-distill", "--method", "pmd", "--teacher", "r"]).command == "text-distill"


def test_distill_help_per_method(capsys: pytest.CaptureFixture[str]) -> None:
    """``distill --help`` lists the methods; ``distill --method NAME --help`` shows that method's options only,
    with real defaults, typed placeholders and listed choices."""
    from kgdistill.distill.method import methods

    assert main(["distill", "--help"]) == 0
    general = capsys.readouterr().out
    for name in methods.names():
        assert f"  {name} (" in general
    assert "--mask-rate" not in general and "--sparsity" not in general and "(default: None)" not in general

    assert main(["distill", "--method", "pmd", "--help"]) == 0
    raw = capsys.readouterr().out
    assert raw.startswith("usage: kgdistill distill --method pmd")
    pmd = " ".join(raw.split())  # help lines are wrapped at the terminal's width
    for shown in ("--mask-rate X", "(default: 0.2)", "--grades LAYERS", "--mgfd-variant {input-mask,feature-generator}",
                  "--pre-distill [BOOL]", "--epochs N", "(default: 3)", "--beta X", "--plm PLM"):
        assert shown in pmd, shown
    for other in ("--hrkd-domains", "--cache-teacher", "--kd-temperature", "--sparsity", "--dims", "(default: None)"):
        assert other not in pmd, other

    assert main(["distill", "--method", "pkd", "--help"]) == 0  # an alias
    patient = " ".join(capsys.readouterr().out.split())
    assert "--cache-teacher [BOOL]" in patient and "(default: false)" in patient and "--mask-rate" not in patient

    assert main(["distill", "--help", "--method", "kd"]) == 0  # either order
    kd = " ".join(capsys.readouterr().out.split())
    assert "--dims DIM [DIM ...]" in kd and "(default: 32)" in kd and "--kd-loss {kl,huber}" in kd
    assert "--optimizer {adagrad,adam,adamw,sgd}" in kd and "--plm" not in kd and "(default: None)" not in kd

    assert main(["distill", "--method", "metasd", "--help"]) == 0
    metasd = " ".join(capsys.readouterr().out.split())
    assert "--quiz {set,batch}" in metasd and "--pruning {global,row,dims}" in metasd and "(default: 0.9)" in metasd

    assert main(["distill", "--method", "kdd", "--help"]) == 2
    assert main(["distill", "--method", "kdd", "--teacher", "r"]) == 2
    assert "Did you mean 'kd'" in capsys.readouterr().err
    assert main(["distill", "--teacher", "r"]) == 2
    assert "--method" in capsys.readouterr().err


def test_output_into_a_closed_pipe_is_not_a_traceback():
    """``kgdistill datasets | head -0``: the reader is gone before the output; the command stops quietly, status 0."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "kgdistill", "datasets"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # as `head -0` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_demo_runs_again_in_the_same_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's `make demo` twice: the second run reuses the finished runs; other settings are refused."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1"]) == 0
    first = capsys.readouterr().out
    teacher_weights = (out / "teacher" / "model.safetensors").stat().st_mtime_ns
    assert main(["demo", "--out", str(out), "--epochs", "1"]) == 0
    second = capsys.readouterr().out
    assert (out / "teacher" / "model.safetensors").stat().st_mtime_ns == teacher_weights  # not retrained

    def mrr_of(text: str, row: str) -> str:
        return next(line for line in text.splitlines() if line.startswith(f"| {row} ")).split("|")[3]

    for row in ("teacher", "scratch-8", "kd-8"):
        assert mrr_of(second, row) == mrr_of(first, row)
    assert main(["demo", "--out", str(out), "--epochs", "2"]) == 2
    assert "holds a teacher of another demo" in capsys.readouterr().err


def test_train_print_config_prints_the_checked_config_and_writes_nothing(tmp_path: Path, capsys,
                                                                         monkeypatch) -> None:
    """``train --print-config``: the resolved YAML (flags and --set applied), usable as --config; bad values are
    refused the same way; no folder is created."""
    import yaml

    from kgdistill.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", "kinship", "--dim", "32", "--set", "training.lr=0.05", "--print-config"]) == 0
    printed = capsys.readouterr().out
    data = yaml.safe_load(printed)
    assert data["model"]["dim"] == 32 and data["training"]["lr"] == 0.05 and data["data"]["dataset"] == "kinship"
    (tmp_path / "c.yaml").write_text(printed)
    assert main(["train", "--config", "c.yaml", "--print-config"]) == 0
    assert capsys.readouterr().out == printed
    assert main(["train", "--dim", "0", "--print-config"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_text_verbs_print_config_with_their_kind_and_write_nothing(tmp_path: Path, capsys, monkeypatch) -> None:
    """``text-train`` / ``text-distill --print-config``: the text run config (``kind: text``) with flags applied, usable
    as ``--config``; a bad value is the usual one-line error, exit 2; nothing is written."""
    import yaml

    monkeypatch.chdir(tmp_path)
    assert main(["text-train", "--dataset", "umls", "--max-length", "32", "--set", "training.lr=0.001",
                 "--print-config"]) == 0
    printed = capsys.readouterr().out
    data = yaml.safe_load(printed)
    assert data["kind"] == "text" and data["model"]["max_length"] == 32 and data["training"]["lr"] == 0.001
    (tmp_path / "t.yaml").write_text(printed)
    assert main(["text-train", "--config", "t.yaml", "--print-config"]) == 0
    assert capsys.readouterr().out == printed
    assert main(["text-distill", "--config", "t.yaml", "--method", "pmd", "--teacher", "some/run", "--mask-rate",
                 "0.3", "--print-config"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert data["distill"]["method"] == "pmd" and data["distill"]["mask_rate"] == 0.3
    assert main(["text-train", "--config", "t.yaml", "--batch-size", "0", "--print-config"]) == 2
    assert "batch_size" in capsys.readouterr().err
    assert main(["train", "--config", "t.yaml", "--print-config"]) == 2  # a text config is not a KGE run's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.yaml"]


def test_distill_print_config_is_the_methods_checked_options_and_reads_back(tmp_path: Path, capsys,
                                                                          monkeypatch) -> None:
    """``distill --method M --print-config``: the method's resolved options (flags, --set) as YAML, checked, nothing
    read or written; the file is a ``--config`` of the same method; another method's file, or a bad value, is one
    line and exit 2."""
    import yaml

    monkeypatch.chdir(tmp_path)
    assert main(["distill", "--method", "kd", "--dims", "16", "--temperature", "2", "--set", "soft_weight=0.5",
                 "--print-config"]) == 0
    printed = capsys.readouterr().out
    data = yaml.safe_load(printed)
    assert data["method"] == "kd" and data["dims"] == [16] and data["temperature"] == 2.0
    assert data["soft_weight"] == 0.5
    (tmp_path / "kd.yaml").write_text(printed)
    assert main(["distill", "--method", "kd", "--config", "kd.yaml", "--print-config"]) == 0
    assert capsys.readouterr().out == printed
    assert main(["distill", "--method", "kd", "--config", "kd.yaml", "--temperature", "3", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["temperature"] == 3.0  # flags override the file
    assert main(["distill", "--method", "iterde", "--config", "kd.yaml", "--print-config"]) == 2
    assert "holds the options of method kd" in capsys.readouterr().err
    (tmp_path / "typo.yaml").write_text("method: kd\ntemprature: 2\n")
    assert main(["distill", "--method", "kd", "--config", "typo.yaml", "--print-config"]) == 2
    assert "not options of kd: temprature" in capsys.readouterr().err
    (tmp_path / "typo.yaml").unlink()
    for bad in (["--temperature", "-1"], ["--soft-weight", "nan"]):
        assert main(["distill", "--method", "kd", *bad, "--print-config"]) == 2
        assert capsys.readouterr().err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kd.yaml"]
