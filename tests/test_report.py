"""compare / report on tiny runs: the table holds the runs' own metrics, the files agree with it, and the plots
carry the expected series (read from the figures' data, not only that a PNG exists)."""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from kgdistill import runs
from kgdistill.cli import main
from kgdistill.config import DataConfig, EvaluationConfig, ModelConfig, RunConfig, TrainingConfig
from kgdistill.models.base import load_model, save_model
from kgdistill.report import collect_runs, compare, pareto_front, plot_pareto, plot_validation_curves, write_html


def train_tiny(out: Path, model: str, dim: int, epochs: int, eval_every: int) -> Path:
    config = RunConfig(data=DataConfig(dataset="nations"), model=ModelConfig(model=model, dim=dim),
                       training=TrainingConfig(training_mode="1vsall", optimizer="adagrad", lr=0.1, epochs=epochs,
                                               batch_size=256, eval_every=eval_every, patience=0, num_threads=1),
                       evaluation=EvaluationConfig(eval_splits=["valid", "test"]), output_dir=str(out), progress=False)
    return runs.train(config).path


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    tmp = tmp_path_factory.mktemp("report")
    big = train_tiny(tmp / "distmult-32", "distmult", 32, epochs=4, eval_every=1)
    small = train_tiny(tmp / "complex-4", "complex", 4, epochs=3, eval_every=1)
    # a pruned copy of the big run recorded as a distillation run (method in meta.json)
    pruned = tmp / "pruned"
    shutil.copytree(big, pruned)
    model = load_model(pruned)
    with torch.no_grad():
        model.entity[::2] = 0.0  # type: ignore[index]
    save_model(model, pruned)
    meta = json.loads((pruned / "meta.json").read_text())
    (pruned / "meta.json").write_text(json.dumps({**meta, "method": "metasd"}))
    metrics = json.loads((pruned / "metrics.json").read_text())
    (pruned / "metrics.json").write_text(json.dumps({**metrics, "queries_per_second": 1234.5}))
    return [big, small, pruned]


@pytest.fixture(scope="module")
def rows(run_dirs: list[Path]) -> list[dict]:
    return collect_runs(run_dirs)


def test_table_values_equal_the_runs_metrics(rows: list[dict], run_dirs: list[Path]) -> None:
    assert [r["run"] for r in rows] == ["distmult-32", "complex-4", "pruned"]
    for row, d in zip(rows, run_dirs):
        metrics = json.loads((d / "metrics.json").read_text())
        test = metrics["test"]["both"]
        for key in ("mrr", "hits@1", "hits@3", "hits@10"):
            assert row[key] == test[key]
        model = load_model(d)
        assert row["parameters"] == metrics["num_parameters"] == model.num_parameters()
        assert row["parameters_nonzero"] == model.num_parameters(nonzero=True)
        assert row["bytes_on_disk"] == (d / "model.safetensors").stat().st_size + (d / "model.json").stat().st_size
        assert row["train_seconds"] == metrics["train_seconds"]
        assert row["split"] == "test" and row["queries_per_second"] > 0
    assert [r["method"] for r in rows] == ["train", "train", "metasd"]
    assert [r["model"] for r in rows] == ["distmult", "complex", "distmult"]
    assert [r["dim_layers"] for r in rows] == [32, 4, 32]
    assert rows[2]["queries_per_second"] == 1234.5  # read from metrics.json, not measured
    assert rows[2]["parameters_nonzero"] < rows[0]["parameters_nonzero"]
    assert [c["epoch"] for c in rows[0]["validation"]] == [1, 2, 3, 4]


def test_compare_writes_markdown_csv_json_and_plots(rows: list[dict], tmp_path: Path) -> None:
    result = compare(rows, tmp_path)
    assert set(result.files) == {"markdown", "csv", "json", "pareto", "validation"}
    with open(result.files["csv"], newline="") as f:
        table = list(csv.DictReader(f))
    assert [float(r["mrr"]) for r in table] == [r["mrr"] for r in rows]
    assert [int(r["parameters_nonzero"]) for r in table] == [r["parameters_nonzero"] for r in rows]
    assert json.loads(result.files["json"].read_text()) == rows
    md = result.files["markdown"].read_text()
    assert "| run " in md and f"{rows[0]['mrr']:.4f}" in md and "metasd" in md
    for key in ("pareto", "validation"):
        assert result.files[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pareto_front() -> None:
    xs, ys = [100, 1000, 500, 10000, 100], [0.5, 0.6, 0.4, 0.6, 0.45]
    assert pareto_front(xs, ys) == [0, 1]


def test_pareto_plot_series(rows: list[dict]) -> None:
    fig = plot_pareto(rows)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    lines = {line.get_gid(): line for line in ax.get_lines()}
    train, metasd = lines["method:train"], lines["method:metasd"]
    assert list(train.get_xdata()) == [rows[0]["parameters_nonzero"], rows[1]["parameters_nonzero"]]
    assert list(train.get_ydata()) == [rows[0]["mrr"], rows[1]["mrr"]]
    assert list(metasd.get_xdata()) == [rows[2]["parameters_nonzero"]]
    assert train.get_marker() != metasd.get_marker()  # one marker per method
    front = pareto_front([r["parameters_nonzero"] for r in rows], [r["mrr"] for r in rows])
    assert list(lines["pareto"].get_xdata()) == [rows[i]["parameters_nonzero"] for i in front]
    assert list(lines["pareto"].get_ydata()) == [rows[i]["mrr"] for i in front]
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"train", "metasd", "Pareto front"}


def test_validation_curve_series(rows: list[dict], run_dirs: list[Path]) -> None:
    ax = plot_validation_curves(rows).axes[0]
    lines = {line.get_gid(): line for line in ax.get_lines()}
    assert set(lines) == {"run:distmult-32", "run:complex-4", "run:pruned"}
    for row, d in zip(rows, run_dirs):
        trace = [json.loads(x) for x in (d / "trace.jsonl").read_text().splitlines()]
        val = [t for t in trace if t["event"] == "validation"]
        assert list(lines[f"run:{row['run']}"].get_xdata()) == [t["epoch"] for t in val]
        assert list(lines[f"run:{row['run']}"].get_ydata()) == [t["mrr"] for t in val]


def test_html_report(rows: list[dict], tmp_path: Path) -> None:
    page = write_html(rows, tmp_path / "report").read_text()
    assert page.count("<tr>") == 1 + len(rows)
    for r in rows:
        assert f"<td>{r['run']}</td>" in page and f"<td>{r['mrr']:.4f}</td>" in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2 and all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert (tmp_path / "report" / "mrr_vs_parameters.png").exists()


def test_cli_compare_and_report(run_dirs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dirs = [str(d) for d in run_dirs[:2]]
    assert main(["compare", *dirs, "-o", str(tmp_path / "c"), "--no-qps", "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "distmult-32" in out and "complex-4" in out and "compare.csv" in out and ".png" not in out
    assert json.loads((tmp_path / "c" / "compare.json").read_text())[0]["queries_per_second"] is None
    assert main(["report", *dirs, "-o", str(tmp_path / "r"), "--no-qps"]) == 0
    assert (tmp_path / "r" / "index.html").exists()
    assert main(["compare", str(tmp_path / "nope")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_mrr_vs_size_labels_overlap_nothing_and_stay_inside() -> None:
    """The comparison's MRR-vs-size plot: kd-8 and scratch-8 at one size (they overlapped), the largest model at the
    right edge (its label was clipped)."""
    pytest.importorskip("matplotlib")
    from matplotlib.text import Text

    from kgdistill.report.plots import plot_pareto

    rows = [{"run": "teacher", "method": "teacher", "parameters_nonzero": 19712, "mrr": 0.8485},
            {"run": "scratch-8", "method": "scratch", "parameters_nonzero": 2464, "mrr": 0.7173},
            {"run": "kd-8", "method": "kd", "parameters_nonzero": 2464, "mrr": 0.7299},
            {"run": "kd-16", "method": "kd", "parameters_nonzero": 4928, "mrr": 0.79},
            {"run": "metasd-64-s0.875", "method": "metasd", "parameters_nonzero": 2464, "mrr": 0.5874}]
    fig = plot_pareto(rows)
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    ax = fig.axes[0]
    frame = ax.get_window_extent(renderer)
    labels = [t for t in ax.texts if t.get_text() in {r["run"] for r in rows}]
    assert sorted(t.get_text() for t in labels) == sorted(r["run"] for r in rows)
    boxes = [Text.get_window_extent(t, renderer) for t in labels]
    for i, a in enumerate(boxes):
        assert frame.x0 <= a.x0 and a.x1 <= frame.x1 and frame.y0 <= a.y0 and a.y1 <= frame.y1
        assert not any(a.overlaps(b) for b in boxes[i + 1:])
