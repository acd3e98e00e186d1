"""compare / report on tiny runs: the table holds the runs' own metrics, the files agree with it, and the plots
carry the expected series (read from the figures' data, not only that a PNG exists); teacher → student lineage,
stage boundaries of a real IterDE chain, queries/s measured afresh for every row, links of the HTML report."""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import os
import re
import shutil
import statistics
from pathlib import Path

import pytest
import torch

from kgdistill import runs
from kgdistill.cli import main
from kgdistill.config import DataConfig, EvaluationConfig, ModelConfig, RunConfig, TrainingConfig
from kgdistill.distill import distill
from kgdistill.models.base import load_model, save_model
from kgdistill.report import (chain_stages, collect_runs, compare, lineage_pairs, pareto_front, plot_pareto,
                              plot_training_curves, plot_validation_curves, table, write_html)


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
    assert rows[2]["queries_per_second"] != 1234.5  # measured here, not the figure metrics.json stored
    assert rows[2]["parameters_nonzero"] < rows[0]["parameters_nonzero"]
    assert [c["epoch"] for c in rows[0]["validation"]] == [1, 2, 3, 4]


def test_compare_writes_markdown_csv_json_and_plots(rows: list[dict], tmp_path: Path) -> None:
    result = compare(rows, tmp_path)
    assert set(result.files) == {"markdown", "csv", "json", "pareto", "curves"}
    with open(result.files["csv"], newline="") as f:
        table = list(csv.DictReader(f))
    assert [float(r["mrr"]) for r in table] == [r["mrr"] for r in rows]
    assert [int(r["parameters_nonzero"]) for r in table] == [r["parameters_nonzero"] for r in rows]
    assert json.loads(result.files["json"].read_text()) == rows
    md = result.files["markdown"].read_text()
    assert "| run " in md and f"{rows[0]['mrr']:.4f}" in md and "metasd" in md
    for key in ("pareto", "curves"):
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
    assert not [a for a in ax.texts if str(a.get_gid()).startswith("lineage:")]  # no teacher among these rows


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
    assert page.count("<tr") == 1 + len(rows)
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
    assert main(["compare", *dirs, "-o", str(tmp_path / "q"), "--qps-rounds", "2", "--no-plots"]) == 0
    rows = json.loads((tmp_path / "q" / "compare.json").read_text())
    assert all(r["qps_rounds"] == 2 and len(r["qps_samples"]) == 2 and r["queries_per_second"] > 0 for r in rows)
    assert main(["compare", *dirs, "--qps-rounds", "0"]) == 2


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


# ---- lineage, training curves across stages, fresh queries/s, links -------------------------------------------
@pytest.fixture(scope="module")
def family(run_dirs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real KD student and a real two-step IterDE chain (32 → 16 → 8) of the 32-dim teacher: 2 epochs per stage,
    validated every epoch."""
    tmp = tmp_path_factory.mktemp("family")
    common = dict(epochs=2, eval_every=1, patience=0, with_teacher_row=False)
    kd = distill("kd", run_dirs[0], tmp / "kd", dims=[4], **common).results[-1].path
    steps = distill("iterde", run_dirs[0], tmp / "iterde", dims=[16, 8], **common).results
    return {"teacher": run_dirs[0], "kd": kd, "step1": steps[0].path, "step2": steps[1].path}


@pytest.fixture(scope="module")
def family_rows(family: dict[str, Path]) -> list[dict]:
    return collect_runs([family[k] for k in ("teacher", "kd", "step1", "step2")], measure=False)


def _trace(run_dir: Path, event: str, key: str) -> list[tuple[int, float]]:
    records = [json.loads(x) for x in (run_dir / "trace.jsonl").read_text().splitlines() if x.strip()]
    return [(r["epoch"], r[key]) for r in records if r["event"] == event]


def test_lineage_teacher_column_and_arrows(family: dict[str, Path], family_rows: list[dict]) -> None:
    rows = family_rows
    assert [r["run"] for r in rows] == ["distmult-32", "kd-4", "iterde-32-16", "iterde-16-8"]
    # IterDE's second step is taught by the first step's student, not by the chain's teacher
    assert [r["teacher"] for r in rows] == [None, "distmult-32", "distmult-32", "iterde-32-16"]
    assert rows[3]["teacher_path"] == str(family["step1"].resolve())
    assert lineage_pairs(rows) == [(1, 0), (2, 0), (3, 2)]
    assert (yaml_teacher := (family["kd"] / "distill.yaml").read_text()) and \
        f"teacher_path: {family['teacher'].resolve()}" in yaml_teacher
    md = table(rows)
    assert md.splitlines()[0].split("|")[3].strip() == "teacher"
    assert md.splitlines()[-1].split("|")[3].strip() == "iterde-32-16"
    ax = plot_pareto(rows).axes[0]
    arrows = {a.get_gid(): a for a in ax.texts if str(a.get_gid()).startswith("lineage:")}
    assert set(arrows) == {"lineage:distmult-32->kd-4", "lineage:distmult-32->iterde-32-16",
                           "lineage:iterde-32-16->iterde-16-8"}
    kd, teacher = rows[1], rows[0]
    arrow = arrows["lineage:distmult-32->kd-4"]
    assert arrow.xy == (kd["parameters_nonzero"], kd["mrr"])  # the head at the student
    assert arrow.xyann == (teacher["parameters_nonzero"], teacher["mrr"])  # the tail at the teacher
    assert "teacher → student" in {t.get_text() for t in ax.get_legend().get_texts()}


def test_lineage_of_a_folder_recording_a_relative_teacher(family: dict[str, Path], tmp_path: Path) -> None:
    """Folders written before ``teacher_path`` was recorded hold the teacher as given on the command line, relative
    to where the command ran: it is found in a folder above the student."""
    root = tmp_path / "exp"
    shutil.copytree(family["teacher"], root / "teachers" / "t32")
    student = root / "students" / "kd" / "kd-4"
    shutil.copytree(family["kd"], student)
    step = (student / "distill.yaml").read_text().splitlines()
    step = [("teacher: teachers/t32" if x.startswith("teacher:") else x) for x in step
            if not x.startswith("teacher_path:")]
    (student / "distill.yaml").write_text("\n".join(step) + "\n")
    rows = collect_runs([root / "teachers" / "t32", student], measure=False)
    assert rows[1]["teacher"] == "t32" and rows[1]["teacher_path"] == str((root / "teachers" / "t32").resolve())
    assert lineage_pairs(rows) == [(1, 0)]
    shutil.rmtree(root / "teachers")  # the teacher gone: its recorded name is still shown, no arrow
    rows = collect_runs([student], measure=False)
    assert rows[0]["teacher"] == "t32" and rows[0]["teacher_path"] is None


def test_stage_boundaries_of_an_iterde_chain(family: dict[str, Path], family_rows: list[dict]) -> None:
    step1, step2 = family["step1"].resolve(), family["step2"].resolve()
    assert chain_stages(step2) == [step1, step2] and chain_stages(step1) == [step1]
    assert chain_stages(family["kd"]) == [family["kd"].resolve()]
    curves = family_rows[3]["curves"]
    assert [(s["name"], s["first_epoch"], s["last_epoch"]) for s in curves["stages"]] == \
        [("iterde-32-16", 1, 2), ("iterde-16-8", 3, 4)]
    # the chain's curve is the first step's trace, then the second step's, on one epoch axis
    loss = _trace(step1, "epoch", "loss") + [(e + 2, v) for e, v in _trace(step2, "epoch", "loss")]
    mrr = _trace(step1, "validation", "mrr") + [(e + 2, v) for e, v in _trace(step2, "validation", "mrr")]
    assert [(c["epoch"], c["loss"]) for c in curves["loss"]] == loss and len(loss) == 4
    assert [(c["epoch"], c["mrr"]) for c in curves["validation"]] == mrr and len(mrr) == 4
    assert [(c["epoch"], c["loss"]) for c in family_rows[0]["curves"]["loss"]] == \
        _trace(family["teacher"], "epoch", "loss")

    fig = plot_training_curves(family_rows)
    ax_loss, ax_val = fig.axes
    lines = {line.get_gid(): line for line in ax_loss.get_lines()}
    # the first step is drawn within the chain's curve, not again on its own
    assert {g for g in lines if str(g).startswith("loss:")} == {"loss:distmult-32", "loss:kd-4", "loss:iterde-16-8"}
    chain = lines["loss:iterde-16-8"]
    points = [(x, y) for x, y in zip(chain.get_xdata(), chain.get_ydata()) if not math.isnan(y)]
    assert points == loss
    assert [x for x, y in zip(chain.get_xdata(), chain.get_ydata()) if math.isnan(y)] == [2.5]  # not joined
    for ax in (ax_loss, ax_val):
        bounds = [line for line in ax.get_lines() if str(line.get_gid()).startswith("stage:")]
        assert [line.get_gid() for line in bounds] == ["stage:iterde-16-8:iterde-16-8"]
        assert list(bounds[0].get_xdata()) == [2.5, 2.5]
    labels = [t for t in ax_loss.texts if str(t.get_gid()).startswith("stage-label:")]
    assert [t.get_text() for t in labels] == ["iterde-16-8"]
    val = {line.get_gid(): line for line in ax_val.get_lines()}["validation:iterde-16-8"]
    assert [(x, y) for x, y in zip(val.get_xdata(), val.get_ydata()) if not math.isnan(y)] == mrr


def test_queries_per_second_measured_afresh_for_every_row(rows: list[dict], run_dirs: list[Path],
                                                           tmp_path: Path) -> None:
    for r in rows:  # measured by collect_runs (5 rounds over every row), the stored figure of "pruned" not used
        assert r["qps_source"] == "measured" and r["qps_rounds"] == 5 and len(r["qps_samples"]) == 5
        assert r["queries_per_second"] == statistics.median(r["qps_samples"])
        assert r["qps_min"] == min(r["qps_samples"]) <= r["queries_per_second"] <= r["qps_max"] == \
            max(r["qps_samples"])
        assert r["qps_threads"] == torch.get_num_threads() and r["qps_batch"] == 128
    md = table(rows)
    assert "q/s min–max" in md.splitlines()[0] and "(stored)" not in md
    quick = collect_runs(run_dirs, rounds=2, round_seconds=0.01)
    assert [len(r["qps_samples"]) for r in quick] == [2, 2, 2]
    # measuring switched off: only stored figures, marked as such; runs without one have none
    stored = collect_runs(run_dirs, measure=False)
    assert [r["queries_per_second"] for r in stored] == [None, None, 1234.5]
    assert [r["qps_source"] for r in stored] == [None, None, "stored"]
    assert table(stored).splitlines()[-1].count("1,234 (stored)") == 1
    result = compare(stored, tmp_path, plots=False)
    assert "not measured" in result.files["markdown"].read_text()
    with open(result.files["csv"], newline="") as f:
        assert [r["qps_source"] for r in csv.DictReader(f)] == ["", "", "stored"]
    with pytest.raises(Exception, match="rounds must be at least 1"):
        collect_runs(run_dirs[:1], rounds=0)


def test_html_rows_link_config_and_metrics(family_rows: list[dict], tmp_path: Path) -> None:
    out = tmp_path / "site" / "report"
    page = write_html(family_rows, out).read_text()
    trs = re.findall(r'<tr id="([^"]+)">(.*?)</tr>', page, flags=re.S)
    assert [anchor for anchor, _ in trs] == [f"run-{r['run']}" for r in family_rows]
    for (_, tr), r in zip(trs, family_rows):
        hrefs = dict((name, html.unescape(href)) for href, name in re.findall(r'<a href="([^"#]+)">([^<]+)</a>', tr))
        assert set(hrefs) == {"config.yaml", "metrics.json"}
        for name, href in hrefs.items():
            assert not os.path.isabs(href) and href.endswith(name)
            assert (out / href).resolve() == (Path(r["path"]) / name).resolve() and (out / href).is_file()
    # a teacher that is a row of the table links to that row
    assert '<td><a href="#run-iterde-32-16">iterde-32-16</a></td>' in trs[3][1]
    assert "<h2>Training loss and validation MRR per epoch</h2>" in page
