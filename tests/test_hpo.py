"""Hyperparameter search with the real optuna: a training search (pruning on validation MRR, resume, the best
config ready to run), a distillation-options search with two worker processes on one SQLite study, and bad
spaces refused in one line before any trial."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

import kgdistill
from kgdistill.api import write_dataset
from kgdistill.cli import main
from kgdistill.config import RunConfig, load_yaml, save_yaml, with_overrides
from kgdistill.data.triples import KGDataset
from kgdistill.errors import ConfigError
from kgdistill.hpo import Search, hpo, parse_space

FAST = {"model": "distmult", "dim": 8, "epochs": 6, "eval_every": 2, "training_mode": "1vsall",
        "optimizer": "adagrad", "lr": 0.1, "batch_size": 32, "num_threads": 1, "patience": 0}


def _base(tmp_path: Path, tiny_kg: KGDataset) -> Path:
    folder = write_dataset(tiny_kg, tmp_path / "tiny")
    path = tmp_path / "base.yaml"
    save_yaml(with_overrides(RunConfig(), {**FAST, "dataset": str(folder)}), path)
    return path


def test_training_search_prunes_on_validation_mrr_resumes_and_writes_a_runnable_best_config(
        tmp_path: Path, tiny_kg: KGDataset) -> None:
    base = _base(tmp_path, tiny_kg)
    space = {"training.lr": {"type": "categorical", "choices": [0.1, 0.3, 1.0e-5]},
             "model.dim": {"type": "int", "low": 4, "high": 8, "step": 4}}
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    out = tmp_path / "search"
    # two good recipes first, then a hopeless one: the median pruner (2 startup trials) stops it at its first
    # validation; the study is made here only to queue these trials, kgdistill hpo takes it over
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    for lr in (0.1, 0.3, 1.0e-5):
        study.enqueue_trial({"training.lr": lr, "model.dim": 8})
    search = Search("train", load_yaml(base), parse_space(space), out, threads=1)
    result = hpo(search, storage=storage, n_trials=3, study_name="s", sampler="random", seed=1)
    states = [r["state"] for r in result.trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED"]
    trials = optuna.load_study(study_name="s", storage=storage).get_trials()
    assert [sorted(t.intermediate_values) for t in trials] == [[2, 4, 6], [2, 4, 6], [2]]
    for t in trials[:2]:  # the objective is the kept model's validation MRR, reported as the trainer validated
        run = json.loads((Path(t.user_attrs["run_dir"]) / "metrics.json").read_text())
        assert t.value == pytest.approx(run["valid"]["both"]["mrr"])
        assert t.value == pytest.approx(max(t.intermediate_values.values()))
        assert t.user_attrs["test_mrr"] == pytest.approx(run["test"]["both"]["mrr"])

    # re-running continues the study up to --trials finished trials (the CLI, one worker)
    assert main(["hpo", "--config", str(base), "--space", str(_write(tmp_path / "space.yaml", space)),
                 "--trials", "5", "--storage", storage, "--study-name", "s", "--out", str(out),
                 "--sampler", "tpe", "--threads", "1"]) == 0
    summary = json.loads((out / "study.json").read_text())
    assert len(summary["trials"]) == 5 and summary["trials"][:3] == result.trials
    assert sum(summary["states"].get(s, 0) for s in ("COMPLETE", "PRUNED")) == 5
    assert "| trial | state" in (out / "study.md").read_text()
    with pytest.raises(ConfigError, match="holds the trials of study 's'; choose another --out for study 'other'"):
        hpo(search, storage=storage, n_trials=1, study_name="other")

    # best.yaml is a complete run config: training it again gives the best trial's validation MRR
    best = summary["best"]
    assert best["value"] == max(r["value"] for r in summary["trials"] if r["state"] == "COMPLETE")
    config = load_yaml(out / "best.yaml")
    assert config.training.lr == best["params"]["training.lr"] and config.model.dim == best["params"]["model.dim"]
    again = kgdistill.train(config.data.dataset, tmp_path / "again", config=config, num_threads=1)
    assert again.metrics["valid"]["both"]["mrr"] == pytest.approx(best["value"], abs=1e-6)


def _write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_distillation_options_search_with_two_worker_processes(tmp_path: Path, tiny_kg: KGDataset) -> None:
    teacher = kgdistill.train(tiny_kg, tmp_path / "teacher", **FAST)
    space = _write(tmp_path / "kd_space.yaml", {"temperature": {"type": "float", "low": 0.5, "high": 4.0},
                                                "soft_weight": {"type": "float", "low": 0.1, "high": 1.0}})
    base = _write(tmp_path / "kd.yaml", {"dims": [4], "epochs": 2, "eval_every": 1})
    storage = f"sqlite:///{tmp_path / 'kd.db'}"
    assert main(["hpo", "--method", "kd", "--teacher", str(teacher.path), "--config", str(base), "--space",
                 str(space), "--trials", "5", "--storage", storage, "--workers", "2", "--threads", "1",
                 "--pruner", "none", "--out", str(tmp_path / "kd"), "--tracker", "csv"]) == 0
    summary = json.loads((tmp_path / "kd" / "study.json").read_text())
    done = [r for r in summary["trials"] if r["state"] == "COMPLETE"]
    assert len(done) >= 5 and summary["study"] == "kd-kd"
    for row in done:  # every trial distilled with its own options into its own folder
        stage = Path(row["run_dir"])
        options = yaml.safe_load((stage / "distill.yaml").read_text())["config"]
        assert options["temperature"] == pytest.approx(row["params"]["temperature"])
        assert options["soft_weight"] == pytest.approx(row["params"]["soft_weight"])
        assert options["dims"] == [4] and row["test_mrr"] is not None
        logged = (stage / "metrics.csv").read_text()  # --tracker: every trial logged, in both processes
        assert f"final,2,test/mrr,{row['test_mrr']!r}" in logged
    assert len({r["pid"] for r in summary["trials"]}) == 2  # both processes drew trials from the one study
    best = yaml.safe_load((tmp_path / "kd" / "best.yaml").read_text())
    assert best == {"dims": [4], "epochs": 2, "eval_every": 1, **summary["best"]["params"]}
    assert summary["best"]["command"].startswith(f"kgdistill distill --method kd --teacher {teacher.path}")


@pytest.mark.parametrize(("space", "message"), [
    ("training.lrr: {type: float, low: 0.01, high: 0.1}",
     ("unknown key 'training.lrr' (expected a run config key such as training.lr or model.dim). Did you mean "
      "'training.lr'")),
    ("training.lr: {type: float, low: 0.3, high: 0.1}", "training.lr: empty range (low 0.3 > high 0.1)"),
    ("training.lr: {type: flaot, low: 0.01, high: 0.1}",
     "unknown type 'flaot'; known: float, int, categorical. Did you mean 'float'?"),
    ("training.optimizer: {type: categorical, choices: []}", "training.optimizer: empty choices"),
    ("training.optimizer: {type: categorical, choices: [adam, adagrd]}", "training.optimizer = 'adagrd': "),
    ("model.dim: {type: int, low: 0, high: 8}", "model.dim = 0: --dim 0 (dim): expected an integer ≥ 1"),
    ("training.lr: {type: float, low: 0, high: 0.1, log: true}", "a log range needs low > 0"),
])
def test_a_bad_space_is_one_line_before_any_trial(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  tiny_kg: KGDataset, space: str, message: str) -> None:
    base = _base(tmp_path, tiny_kg)
    (tmp_path / "space.yaml").write_text(space + "\n")
    status = main(["hpo", "--config", str(base), "--space", str(tmp_path / "space.yaml"), "--trials", "2",
                   "--storage", f"sqlite:///{tmp_path / 'study.db'}", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "study.db").exists() and not (tmp_path / "out").exists()


def test_a_distillation_space_names_the_methods_options(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        tiny_kg: KGDataset) -> None:
    teacher = kgdistill.train(tiny_kg, tmp_path / "teacher", **{**FAST, "epochs": 1})
    space = _write(tmp_path / "s.yaml", {"temprature": {"type": "float", "low": 1, "high": 2}})
    assert main(["hpo", "--method", "kd", "--teacher", str(teacher.path), "--space", str(space), "--trials", "1",
                 "--storage", f"sqlite:///{tmp_path / 'kd.db'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"kgdistill hpo: error: {space}: unknown key 'temprature': not an option of kd. "
                          "Did you mean 'temperature'") and len(err.splitlines()) == 1


def test_the_readme_spaces_and_the_benchmark_space_are_valid() -> None:
    """The space files of the README's hpo example and of BENCHMARKS.md pass every check (no trial run)."""
    import re

    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text()
    section = text.split("## Experiment tracking and hyperparameter search", 1)[1].split("\n## ", 1)[0]
    spaces = dict(re.findall(r"cat > (\S+) <<'YAML'\n(.*?)\nYAML", section, re.DOTALL))
    assert set(spaces) == {"space.yaml", "kd_space.yaml"}
    base = load_yaml(root / "benchmarks" / "hpo" / "kinship_base.yaml")
    for space in (parse_space(yaml.safe_load(spaces["space.yaml"])),
                  parse_space(yaml.safe_load((root / "benchmarks" / "hpo" / "kinship_space.yaml").read_text()))):
        Search("train", base, space, Path("unused")).check()
    Search("distill", {"dims": [16]}, parse_space(yaml.safe_load(spaces["kd_space.yaml"])), Path("unused"),
           method="kd", teacher="unused").check()
    dims = Search("distill", {}, parse_space({"dims": {"type": "categorical", "choices": [8, 16]}}), Path("unused"),
                  method="kd", teacher="unused")
    dims.check()  # a searched student size is one dimension
    assert dims.options({"dims": 8}) == {"dims": [8]}
