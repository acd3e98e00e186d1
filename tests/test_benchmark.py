"""``kgdistill benchmark``: budgets per stage, the leaderboard and its paired statistics, resume, bad input, progress.

One tiny teacher (nations, ComplEx-16, 2 epochs) and one tiny benchmark (4 methods × 2 seeds, budget total, E = 2,
students of dim 4) are shared by the tests; the scoring-throughput timer is shortened (it is measured, not tested).
"""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import kgdistill.distill.benchmark as bm
from kgdistill import runs
from kgdistill.cli import main
from kgdistill.config import DataConfig, EvaluationConfig, ModelConfig, RunConfig, TrainingConfig
from kgdistill.distill import stage
from kgdistill.distill.benchmark_progress import BenchmarkProgress
from kgdistill.errors import ConfigError
from kgdistill.runs import load_run

METHODS = ["scratch", "kd", "iterde", "metasd"]
EPOCHS = 2


@pytest.fixture(scope="module", autouse=True)
def quick_throughput():
    real = stage.scoring_throughput
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stage, "scoring_throughput",
                   lambda model, dataset, **kw: real(model, dataset, min_seconds=0.01, max_queries=64))
        yield


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("bench") / "teacher"
    cfg = RunConfig(data=DataConfig(dataset="nations"), model=ModelConfig(model="complex", dim=16),
                    training=TrainingConfig(training_mode="1vsall", optimizer="adagrad", lr=0.1, epochs=2,
                                            batch_size=256, eval_every=0, patience=0),
                    evaluation=EvaluationConfig(eval_splits=["test"]), output_dir=str(out), progress=False)
    runs.train(cfg)
    return out


@pytest.fixture(scope="module")
def bench(teacher: Path) -> Path:
    """The shared tiny benchmark, run through the CLI (KD with IterDE's Huber loss: one method's own option)."""
    out = teacher.parent / "bench"
    assert main(["benchmark", "--teacher", str(teacher), "--methods", ",".join(METHODS), "--dims", "4", "--seeds",
                 "2", "--budget", "total", "--epochs", str(EPOCHS), "--out", str(out), "--set", "eval_every=0",
                 "--set", "kd.kd_loss=huber", "--progress", "false"]) == 0
    return out


def test_budgets_give_the_expected_epochs_per_stage(teacher: Path) -> None:
    """Teacher dim 16, student dim 4: IterDE chains 16→8→4 (2 stages), DualDE 2 stages, MetaSD and KD one,
    IterDE→MetaSD chains 16→8 then prunes (2); final: E per stage; total: ⌊E/k⌋ per stage, DualDE ⌈E/2⌉ + ⌊E/2⌋."""
    run = load_run(teacher)
    expected = {"final": {"scratch": [5], "kd": [5], "iterde": [5, 5], "dualde": [5, 5], "metasd": [5],
                          "iterde-metasd": [5, 5]},
                "total": {"scratch": [5], "kd": [5], "iterde": [2, 2], "dualde": [3, 2], "metasd": [5],
                          "iterde-metasd": [2, 2]}}
    for budget, per_method in expected.items():
        for method, stage_epochs in per_method.items():
            plan = bm.plan_method(method, run, 4, budget, 5, {})
            assert plan.stage_epochs == stage_epochs, (budget, method)
            assert plan.options["epochs"] == stage_epochs[0]
    dualde = bm.plan_method("dualde", run, 4, "total", 5, {})
    assert (dualde.options["epochs"], dualde.options["stage2_epochs"], dualde.options["dims"]) == (3, 2, [4])
    assert bm.plan_method("iterde", run, 4, "total", 5, {}).options["target_dim"] == 4
    assert bm.plan_method("dualde", run, 4, "total", 5, {"stage2": False}).stage_epochs == [5]
    # MetaSD prunes the 16-dim model to the non-zeros of a dense 4-dim one: 1 - 4/16 (ComplEx, same tables)
    assert bm.plan_method("metasd", run, 4, "final", 5, {}).options["sparsity"] == pytest.approx(0.75)
    assert bm.plan_method("iterde-metasd", run, 4, "final", 5, {}).options["sparsity"] == pytest.approx(0.5)
    assert bm.plan_method("metasd", run, 4, "final", 5, {}, metasd_sparsity=0.9).options["sparsity"] == 0.9
    with pytest.raises(ConfigError, match="below the 2 stages"):
        bm.plan_method("iterde", run, 4, "total", 1, {})


def test_leaderboard_files_and_paired_statistics(bench: Path, teacher: Path) -> None:
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json", "leaderboard_pareto.png",
                 "benchmark.json"):
        assert (bench / name).exists(), name
    board = json.loads((bench / "leaderboard.json").read_text())
    rows = {r["method"]: r for r in board["rows"]}
    assert list(rows) == METHODS and board["teacher"]["dim"] == 16
    # by hand from the runs' own summaries: d_s = MRR(kd, s) - MRR(scratch, s); two seeds: se = |d1 - d2| / 2
    mrr = {(m, s): json.loads((bench / m / f"seed-{s}" / "summary.json").read_text())["rows"][-1]["MRR"]
           for m in ("kd", "scratch") for s in (1, 2)}
    d1, d2 = mrr["kd", 1] - mrr["scratch", 1], mrr["kd", 2] - mrr["scratch", 2]
    paired = rows["kd"]["vs scratch"]
    assert paired["mean"] == pytest.approx((d1 + d2) / 2)
    assert paired["se"] == pytest.approx(abs(d1 - d2) / 2)
    assert paired["ahead"] == (d1 > 0) + (d2 > 0) and paired["n"] == 2
    assert rows["scratch"]["vs kd"]["mean"] == pytest.approx(-(d1 + d2) / 2)
    assert rows["kd"]["MRR mean"] == pytest.approx((mrr["kd", 1] + mrr["kd", 2]) / 2)
    csv_text = (bench / "leaderboard.csv").read_text()
    assert f"{(d1 + d2) / 2}" in csv_text
    md = (bench / "leaderboard.md").read_text()
    assert "students' recipe (the final stage of scratch): training_mode 1vsall, optimizer adagrad, lr 0.1, " \
           "batch_size 256" in md  # what scratch was given, so that an under-trained scratch row shows
    assert f"{(d1 + d2) / 2:+.4f} ± {abs(d1 - d2) / 2:.4f} ({paired['ahead']}/2)" in md
    # budget bookkeeping: total E = 2 over the chain's 2 stages, one epoch each; epochs × training triples
    train = load_run(teacher).dataset.train.shape[0]  # type: ignore[union-attr]
    for run in board["runs"]:
        epochs = [s["epochs"] for s in run["stages"]]
        assert epochs == ([1, 1] if run["method"] == "iterde" else [EPOCHS])
        if run["method"] != "metasd":  # MetaSD trains on train minus its quiz set
            assert run["epoch_examples"] == run["student_epochs"] * train
    assert rows["iterde"]["stage_epochs"] == "1 + 1"
    # the options reach the runs: every method's eval_every, KD's own loss
    for method, stage_name in (("kd", "kd-4"), ("scratch", "scratch-4")):
        saved = yaml.safe_load((bench / method / "seed-1" / stage_name / "distill.yaml").read_text())["config"]
        assert saved["eval_every"] == 0 and saved.get("kd_loss", "huber") == "huber"
    # MetaSD's non-zeros match the dense 4-dim student's (coordinate pruning, the default: it is a dense 4-dim
    # model); the leaderboard says so
    assert rows["metasd"]["nonzero mean"] == rows["scratch"]["nonzero mean"] == rows["metasd"]["params mean"]
    assert any("sparsity 0.7500" in n for n in board["notes"])


def test_pareto_labels_do_not_overlap(bench: Path) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.text import Text

    from kgdistill.distill.leaderboard_plot import plot_leaderboard

    board = json.loads((bench / "leaderboard.json").read_text())
    # and a crowded one: eight methods on one size, two of them on the same spot
    crowded = [{"method": f"method-{i}", "nonzero mean": 992, "MRR mean": 0.60 + 0.01 * min(i, 6), "MRR sd": 0.02}
               for i in range(8)]
    for teacher, rows in ((board["teacher"], board["rows"]), (board["teacher"], crowded)):
        fig = plot_leaderboard(teacher, rows)
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        ax = fig.axes[0]
        frame = ax.get_window_extent(renderer)
        boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]  # the text, not its leader line
        assert sorted(t.get_text() for t in ax.texts) == sorted(["teacher", *(r["method"] for r in rows)])
        for i, a in enumerate(boxes):
            assert frame.x0 <= a.x0 and a.x1 <= frame.x1 and frame.y0 <= a.y0 and a.y1 <= frame.y1
            assert not any(a.overlaps(b) for b in boxes[i + 1:])


def test_resume_skips_finished_runs(bench: Path, teacher: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "bench"
    shutil.copytree(bench, out)
    # kd seed 2 was interrupted in its last stage (a checkpoint, no metrics, no summary)
    (out / "kd" / "seed-2" / "summary.json").unlink()
    (out / "kd" / "seed-2" / "kd-4" / "metrics.json").unlink()
    (out / "leaderboard.json").unlink()
    kept = {p: p.stat().st_mtime_ns for p in out.glob("*/seed-*/*/metrics.json")}
    calls = []
    real = bm.distill
    monkeypatch.setattr(bm, "distill", lambda method, t, run_dir, **kw: calls.append((method, Path(run_dir).name,
                                                                                       kw["resume"]))
                        or real(method, t, run_dir, **kw))
    args = dict(methods=METHODS, dims=[4], seeds=2, budget="total", epochs=EPOCHS,
                method_options={"*": {"eval_every": 0}, "kd": {"kd_loss": "huber"}})  # the CLI's "0" alike
    with pytest.raises(ConfigError, match="pass --resume"):
        bm.benchmark(teacher, out, **args)
    board = bm.benchmark(teacher, out, resume=True, **args)
    assert calls == [("kd", "seed-2", True)]
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    assert (out / "kd" / "seed-2" / "summary.json").exists() and (out / "leaderboard.json").exists()
    assert [r["seeds"] for r in board.rows] == [2, 2, 2, 2]
    calls.clear()
    bm.benchmark(teacher, out, resume=True, **args)  # all finished: nothing runs, the leaderboard is rewritten
    assert calls == []


def test_resume_extends_a_benchmark_by_more_methods(bench: Path, teacher: Path, tmp_path: Path, monkeypatch) -> None:
    """``--resume`` with more ``--methods`` runs only the new methods' (method, seed) runs and keeps the others;
    changing a kept method's options is still another benchmark."""
    out = tmp_path / "bench"
    shutil.copytree(bench, out)
    kept = {p: p.stat().st_mtime_ns for p in out.glob("*/seed-*/*/metrics.json")}
    calls = []
    real = bm.distill
    monkeypatch.setattr(bm, "distill", lambda method, t, run_dir, **kw: calls.append((method, Path(run_dir).name))
                        or real(method, t, run_dir, **kw))
    options = {"*": {"eval_every": 0}, "kd": {"kd_loss": "huber"}}
    args = dict(dims=[4], seeds=2, budget="total", epochs=EPOCHS, method_options=options)
    board = bm.benchmark(teacher, out, resume=True, methods=[*METHODS, "kd-huber"], **args)
    assert calls == [("kd-huber", "seed-1"), ("kd-huber", "seed-2")]
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    assert [r["method"] for r in board.rows][-1] == "kd-huber" and len(board.rows) == len(METHODS) + 1
    changed = {**options, "kd": {"kd_loss": "kl"}}
    with pytest.raises(ConfigError, match="holds another benchmark"):
        bm.benchmark(teacher, out, resume=True, methods=[*METHODS, "kd-huber", "dualde"],
                     **{**args, "method_options": changed})


@pytest.mark.parametrize("case", ["unknown method", "unfinished teacher", "dims", "seeds", "other benchmark",
                                  "option"])
def test_bad_input_is_one_line_and_exit_2(case: str, bench: Path, teacher: Path, tmp_path: Path, capsys) -> None:
    unfinished = tmp_path / "unfinished"
    if case == "unfinished teacher":
        shutil.copytree(teacher, unfinished, ignore=shutil.ignore_patterns("metrics.json"))
    out = tmp_path / "new"
    argv = {"teacher": str(teacher), "methods": "scratch,kd", "dims": "4", "seeds": "1", "out": str(out)}
    argv.update({"unknown method": {"methods": "scratch,kdd"}, "unfinished teacher": {"teacher": str(unfinished)},
                 "dims": {"dims": "16"}, "seeds": {"seeds": "0"},
                 "other benchmark": {"methods": ",".join(METHODS), "out": str(bench)},
                 "option": {"methods": "scratch,kd"}}[case])
    extra = ["--set", "kd.sparsity=0.5"] if case == "option" else []
    expected = {"unknown method": "Did you mean 'kd'", "unfinished teacher": "not a finished run (missing "
                "metrics.json)", "dims": "below the teacher's dim 16", "seeds": "at least 1",
                "other benchmark": "holds another benchmark (different budget, epochs, options, seeds)",
                "option": "unknown option 'sparsity'"}[case]
    rc = main(["benchmark", *[x for k, v in argv.items() for x in (f"--{k}", v)], "--epochs", "1", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err, err
    assert err.startswith("kgdistill benchmark: error:") and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_progress_names_method_seed_stage_and_time_left(tmp_path: Path, caplog) -> None:
    run_dir = tmp_path / "iterde" / "seed-1"
    stream = io.StringIO()
    progress = BenchmarkProgress([("scratch", 1, [3]), ("iterde", 1, [3, 3])], stream=stream)
    progress.begin(0, tmp_path / "scratch" / "seed-1")
    progress.end(0)
    progress.begin(1, run_dir)
    (run_dir / "iterde-16-8").mkdir(parents=True)
    for name in ("config.yaml", "metrics.json"):
        (run_dir / "iterde-16-8" / name).write_text("{}")
    (run_dir / "iterde-8-4").mkdir()
    (run_dir / "iterde-8-4" / "config.yaml").write_text("{}")
    (run_dir / "iterde-8-4" / "trace.jsonl").write_text('{"event": "epoch", "epoch": 1}\n' * 2)
    status = progress.status()
    progress.close()
    assert "[2/2] iterde seed 1: stage 2/2 iterde-8-4, epoch 2/3" in status and "left" in status
    assert progress.seconds_left() is not None
    assert "scratch seed 1: done in" in stream.getvalue()
    with caplog.at_level(logging.INFO, logger="kgdistill.benchmark"):  # no stream: log lines (stderr in the CLI)
        BenchmarkProgress([("kd", 3, [2])]).skip(0)
    assert "[1/1] kd seed 3: finished earlier, kept" in caplog.text


def test_recipe_notes_name_the_students_recipe_and_each_method_that_differs() -> None:
    from kgdistill.distill.leaderboard import _recipe_notes

    base = {"training_mode": "slcwa", "optimizer": "adam", "lr": 0.01, "batch_size": 512}
    records = [{"method": "kd", "label": "kd", "recipe": base},
               {"method": "scratch", "label": "scratch", "recipe": base},
               {"method": "iterde", "label": "iterde", "recipe": {**base, "lr": 0.001}},
               {"method": "dualde", "label": "dualde", "recipe": {**base, "lr": 0.1 * 0.1}},  # the same lr
               {"method": "metasd", "label": "metasd", "recipe": {**base, "lr": 0.1 * 0.3}}]
    notes = _recipe_notes(records)
    assert notes[0].startswith("students' recipe (the final stage of scratch): training_mode slcwa, optimizer adam, "
                               "lr 0.01, batch_size 512;")
    assert notes[1:] == ["iterde: its final stage trained with lr 0.001",
                         "metasd: its final stage trained with lr 0.03"]  # not 0.030000000000000002
    assert _recipe_notes([{"method": "kd", "label": "kd"}]) == []  # records of an older benchmark: no recipe
