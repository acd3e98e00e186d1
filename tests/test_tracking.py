"""Experiment trackers against the real libraries: the values logged to TensorBoard, MLflow and CSV are read back
(EventAccumulator, MlflowClient, csv) and compared with the run's own trace.jsonl and metrics.json."""

from __future__ import annotations

import csv
import http.server
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import kgdistill
from kgdistill.cli import main
from kgdistill.data.triples import KGDataset
from kgdistill.errors import ConfigError
from kgdistill.tracking import tracking

FAST = {"model": "distmult", "dim": 8, "epochs": 4, "eval_every": 2, "training_mode": "1vsall",
        "optimizer": "adagrad", "lr": 0.1, "batch_size": 32, "num_threads": 1}


def _trace(run: Path, event: str, key: str) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()]
    return {r["epoch"]: r[key] for r in records if r["event"] == event}


def _csv(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_train_logs_every_trace_event_to_tensorboard_mlflow_and_csv(tmp_path: Path, tiny_kg: KGDataset) -> None:
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = kgdistill.train(tiny_kg, tmp_path / "run", trackers=["tensorboard", "mlflow", "csv"], tracker_uri=uri,
                          **FAST)
    losses, valid = _trace(run.path, "epoch", "loss"), _trace(run.path, "validation", "mrr")
    assert sorted(losses) == [1, 2, 3, 4] and sorted(valid) == [2, 4]
    test_mrr = run.metrics["test"]["both"]["mrr"]

    # TensorBoard: event files in RUN/tensorboard, read back by TensorBoard's own reader
    acc = EventAccumulator(str(run.path / "tensorboard"))
    acc.Reload()
    assert {e.step: e.value for e in acc.Scalars("epoch/loss")} == pytest.approx(losses, rel=1e-6)
    assert {e.step: e.value for e in acc.Scalars("validation/mrr")} == pytest.approx(valid, rel=1e-6)
    assert acc.Scalars("final/test/mrr")[-1].value == pytest.approx(test_mrr, rel=1e-6)
    assert "config/text_summary" in acc.Tags()["tensors"]  # the resolved config as text

    # MLflow: one run named after the folder, config as parameters, metric histories, final metrics, artifacts
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("kgdistill")
    (mlrun,) = client.search_runs([experiment.experiment_id])
    assert mlrun.info.run_name == "run" and mlrun.info.status == "FINISHED"
    assert mlrun.data.params["training.lr"] == "0.1" and mlrun.data.params["model.dim"] == "8"
    assert mlrun.data.params["model.model"] == "distmult"
    assert mlrun.data.tags["kgdistill.run_dir"] == str(run.path.resolve())
    history = client.get_metric_history(mlrun.info.run_id, "epoch/loss")
    assert {m.step: m.value for m in history} == pytest.approx(losses, rel=1e-6)
    assert {m.step: m.value for m in client.get_metric_history(mlrun.info.run_id, "validation/mrr")} == \
        pytest.approx(valid, rel=1e-6)
    assert mlrun.data.metrics["test/mrr"] == pytest.approx(test_mrr, rel=1e-9)
    assert mlrun.data.metrics["test/hits_at_10"] == pytest.approx(run.metrics["test"]["both"]["hits@10"], rel=1e-9)
    artifacts = {a.path for a in client.list_artifacts(mlrun.info.run_id)}
    assert {"config.yaml", "metrics.json", "model.safetensors", "trace.jsonl", "metrics.csv"} <= artifacts
    assert "checkpoints" not in artifacts
    assert (tmp_path / "mlartifacts").is_dir()  # next to the SQLite file, not in the current folder

    # CSV: one row per value, the final metrics at the last step
    rows = _csv(run.path)
    assert {int(r["step"]): float(r["value"]) for r in rows if r["name"] == "epoch/loss"} == \
        pytest.approx(losses, rel=1e-6)
    final = {r["name"]: float(r["value"]) for r in rows if r["event"] == "final"}
    assert final["test/mrr"] == pytest.approx(test_mrr, rel=1e-9)


def test_distillation_logs_one_tracker_run_per_stage_and_resume_continues_the_csv(tmp_path: Path,
                                                                                    tiny_kg: KGDataset) -> None:
    from mlflow.tracking import MlflowClient

    teacher = kgdistill.train(tiny_kg, tmp_path / "teacher", **FAST)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    status = main(["distill", "--method", "kd", "--teacher", str(teacher.path), "--out", str(tmp_path / "kd"),
                   "--dims", "4", "--epochs", "2", "--eval-every", "1", "--no-progress", "--threads", "1",
                   "--tracker", "mlflow", "--tracker", "csv", "--tracker-uri", uri,
                   "--tracker-experiment", "distillation"])
    assert status == 0
    summary = json.loads((tmp_path / "kd" / "summary.json").read_text())
    (stage,) = [Path(p) for p in summary["run_folders"]]
    client = MlflowClient(tracking_uri=uri)
    (mlrun,) = client.search_runs([client.get_experiment_by_name("distillation").experiment_id])
    assert mlrun.info.run_name == stage.name
    assert mlrun.data.tags["kgdistill.method"] == "kd"
    assert mlrun.data.params["distill.temperature"] == "1.0"  # the method's options are parameters too
    assert {m.step for m in client.get_metric_history(mlrun.info.run_id, "validation/mrr")} == {1, 2}
    stage_metrics = json.loads((stage / "metrics.json").read_text())
    assert mlrun.data.metrics["test/mrr"] == pytest.approx(stage_metrics["test"]["both"]["mrr"], rel=1e-9)

    # a resumed training run: the CSV keeps each epoch once and goes on
    kgdistill.train(tiny_kg, tmp_path / "short", trackers=["csv"], **{**FAST, "epochs": 2})
    assert main(["train", "--resume", str(tmp_path / "short"), "--epochs", "3", "--no-progress",
                 "--tracker", "csv"]) == 0
    steps = [int(r["step"]) for r in _csv(tmp_path / "short") if r["name"] == "epoch/loss"]
    assert steps == [1, 2, 3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, no traceback
    return err[0]


def test_bad_tracker_input_is_one_line_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["train", "--dataset", "kinship", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "run")]
    line = _error_line(capsys, [*base, "--tracker", "mlfow"])
    assert "unknown tracker 'mlfow'" in line and "Did you mean 'mlflow'" in line
    line = _error_line(capsys, [*base, "--tracker", "mlflow", "--tracker-uri", f"http://127.0.0.1:{_free_port()}"])
    assert "cannot reach 127.0.0.1" in line
    line = _error_line(capsys, [*base, "--tracker", "mlflow", "--tracker-uri",
                                f"sqlite:///{tmp_path / 'no' / 'such' / 'mlflow.db'}"])
    assert "does not exist" in line

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Quiet)  # a server that answers, but not as MLflow
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        line = _error_line(capsys, [*base, "--tracker", "mlflow", "--tracker-uri",
                                    f"http://127.0.0.1:{server.server_address[1]}"])
    finally:
        server.shutdown()
    assert "not an MLflow tracking server (HTTP 404" in line
    assert _error_line(capsys, [*base, "--tracker-uri", "sqlite:///x.db"]).endswith("add --tracker mlflow")
    assert not (tmp_path / "run").exists()  # nothing trained

    with pytest.raises(ConfigError, match="Did you mean 'tensorboard'"), tracking(["tensorbord"]):
        pass


def test_a_tracker_whose_library_is_missing_is_one_line(tmp_path: Path) -> None:
    # a fresh interpreter where importing mlflow / tensorboard fails, as when they are not installed
    code = ("import sys; sys.modules['mlflow'] = None; sys.modules['tensorboard'] = None\n"
            "from kgdistill.cli import main\n"
            "codes = [main(['train', '--dataset', 'kinship', '--epochs', '1', '--out', sys.argv[1], '--tracker', name])"
            " for name in ('mlflow', 'tensorboard')]\n"
            "sys.exit(0 if codes == [2, 2] else 1)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"kgdistill train: error: tracker {name}: the {name} package is not installed; install it with pip install "
        f"'kgdistill[tracking]' (or pip install {name})" for name in ("mlflow", "tensorboard")]
    assert not (tmp_path / "r").exists()


def test_text_train_logs_its_epochs_to_csv(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    out = tmp_path / "text"
    assert main(["text-train", "--plm", "tiny:layers=2,hidden=32,heads=2,intermediate=64", "--max-length", "16",
                 "--steps-per-epoch", "2", "--epochs", "2", "--batch-size", "32", "--self-negatives", "false",
                 "--dataset", "umls", "--set", "evaluation.eval_splits=[valid]", "--out", str(out), "--no-progress",
                 "--num-threads", "1", "--tracker", "csv"]) == 0
    rows = _csv(out)
    assert {int(r["step"]): float(r["value"]) for r in rows if r["name"] == "epoch/loss"} == \
        pytest.approx(_trace(out, "epoch", "loss"), rel=1e-6)
    final = {r["name"]: float(r["value"]) for r in rows if r["event"] == "final"}
    assert final["valid/mrr"] == pytest.approx(json.loads((out / "metrics.json").read_text())["valid"]["both"]["mrr"])


def test_a_tracker_failing_mid_run_is_switched_off_and_training_goes_on(tmp_path: Path, tiny_kg: KGDataset,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    from kgdistill.tracking import Tracker

    class Flaky(Tracker):  # a user's own tracker: sees the run's records until it fails
        name = "flaky"

        def __init__(self) -> None:
            self.seen: list[str] = []

        def log(self, run_dir: Path, record: dict, values: dict, step: int) -> None:
            self.seen.append(record["event"])
            if len(self.seen) == 2:
                raise ConnectionError("server went away")

    flaky = Flaky()
    run = kgdistill.train(tiny_kg, tmp_path / "run", trackers=[flaky, "csv"], **FAST)
    assert run.metrics["test"]["both"]["mrr"] > 0 and flaky.seen == ["epoch", "epoch"]
    assert "tracker flaky failed (server went away)" in caplog.text
    assert sorted(int(r["step"]) for r in _csv(run.path) if r["name"] == "epoch/loss") == [1, 2, 3, 4]
