"""The public Python API (``kgdistill.train / distill / evaluate / load / export / Dataset``): the README's snippet
runs as written, ``import kgdistill`` is cheap, and a dataset built in memory stays usable after training."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import kgdistill
from kgdistill.api import Dataset

README = Path(__file__).resolve().parents[1] / "README.md"


def fresh(code: str, cwd: Path) -> str:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def readme_snippet() -> str:
    section = README.read_text(encoding="utf-8").split("\n## Python API\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)  # type: ignore[union-attr]


def test_the_readme_snippet_runs_as_written(tmp_path: Path) -> None:
    """train → distil → evaluate → export → predict in at most 10 lines, run verbatim on the bundled nations."""
    code = readme_snippet()
    assert len([line for line in code.splitlines() if line.strip()]) <= 10
    out = fresh("import torch; torch.set_num_threads(1)\n" + code, tmp_path).splitlines()
    mrr = float(out[-2])
    assert 0.3 < mrr <= 1.0  # nations: 14 entities, a random ranking gives about 0.2
    assert "Prediction" in out[-1] and out[-1].count("rank=") == 3
    for folder in ("api-teacher", "api-kd"):
        assert (tmp_path / "runs" / folder).is_dir()
    assert (tmp_path / "runs" / "api-kd.safetensors").is_file()


def test_import_kgdistill_is_cheap_and_side_effect_free(tmp_path: Path) -> None:
    out = fresh("""
        import json, os, sys
        before = dict(os.environ)
        import kgdistill
        names = sorted(kgdistill.__all__)
        cheap = "torch" not in sys.modules and dict(os.environ) == before
        import kgdistill.api
        docs = all(getattr(kgdistill.api, n).__doc__ for n in kgdistill.__all__ if n != "__version__")
        print(json.dumps({"cheap": cheap, "env": dict(os.environ) == before, "all": names, "docs": docs}))
    """, tmp_path)
    seen = json.loads(out)
    assert seen == {"cheap": True, "env": True, "docs": True,
                    "all": ["Dataset", "__version__", "distill", "evaluate", "export", "load", "train"]}


def test_functions_named_like_submodules_stay_callable_and_the_modules_importable() -> None:
    from kgdistill.distill.api import DistillReport
    from kgdistill.evaluate import DatasetEvaluator
    from kgdistill.export import load_artifact

    assert DatasetEvaluator and DistillReport and load_artifact
    for name in ("distill", "evaluate", "export"):
        assert callable(getattr(kgdistill, name))
    assert kgdistill.train is kgdistill.api.train and kgdistill.load is kgdistill.api.load


def _toy() -> dict[str, list[tuple[str, str, str]]]:
    steps = {"r0": (1, 2, 3), "r1": (5, 6), "r2": (7, 9)}
    triples = sorted((f"e{i:02d}", r, f"e{(i + s) % 12:02d}") for r, ss in steps.items() for s in ss for i in range(12))
    return {"train": [t for k, t in enumerate(triples) if k % 8 not in (3, 7)],
            "valid": [t for k, t in enumerate(triples) if k % 8 == 3],
            "test": [t for k, t in enumerate(triples) if k % 8 == 7]}


class Frame:
    """The part of a pandas DataFrame that ``Dataset.from_dataframe`` reads: ``frame[column]`` → values."""

    def __init__(self, columns: dict[str, list[str]]) -> None:
        self.columns = columns

    def __getitem__(self, key: str) -> list[str]:
        return self.columns[key]


def test_datasets_from_triples_and_frames_agree() -> None:
    toy = _toy()
    a = Dataset.from_triples(toy["train"], toy["valid"], toy["test"], name="toy",
                             entity_names={"e00": "entity zero"})
    rows = [(*t, s) for s in ("train", "valid", "test") for t in toy[s]]
    one = Frame({"h": [r[0] for r in rows], "rel": [r[1] for r in rows], "t": [r[2] for r in rows],
                 "split": [r[3] for r in rows]})
    b = Dataset.from_dataframe(one, columns=("h", "rel", "t"), name="toy")
    per = {s: Frame({"head": [t[0] for t in toy[s]], "relation": [t[1] for t in toy[s]],
                     "tail": [t[2] for t in toy[s]]}) for s in toy}
    c = Dataset.from_dataframe(per["train"], per["valid"], per["test"])
    for ds in (a, b, c):
        assert isinstance(ds, Dataset) and ds.num_entities == 12 and ds.num_relations == 3
        assert {s: ds.splits[s].tolist() for s in toy} == {s: a.splits[s].tolist() for s in toy}
    assert a.entity_name(0) == "entity zero"
    with pytest.raises(kgdistill.api.DataError, match="empty"):
        Dataset.from_triples(toy["train"], [], toy["test"])
    with pytest.raises(kgdistill.api.DataError, match="tab"):
        Dataset.from_triples([("a\tb", "r", "c")], toy["valid"], toy["test"])


def test_dataset_from_a_pandas_frame() -> None:
    pd = pytest.importorskip("pandas")
    toy = _toy()
    frame = pd.DataFrame([(*t, s) for s in toy for t in toy[s]], columns=["head", "relation", "tail", "split"])
    ds = Dataset.from_dataframe(frame)
    assert ds.num_entities == 12 and len(ds.train) == len(toy["train"])


def test_an_in_memory_dataset_is_kept_with_its_run(tmp_path: Path) -> None:
    """Its run folder holds the data and its config points there: load, evaluate, distil and export work later,
    from a fresh process and from the command line."""
    toy = _toy()
    ds = Dataset.from_triples(toy["train"], toy["valid"], toy["test"], name="toy")
    threads = torch.get_num_threads()
    try:
        run = kgdistill.train(ds, tmp_path / "run", model="distmult", dim=8, epochs=3, eval_every=0, batch_size=32,
                              num_threads=1)
    finally:
        torch.set_num_threads(threads)
    data = tmp_path / "run" / "data"
    assert sorted(p.name for p in data.iterdir()) == ["test.tsv", "train.tsv", "valid.tsv"]
    assert (tmp_path / "run" / "config.yaml").read_text().count(str(data.resolve())) == 1
    assert run.dataset is not None and run.dataset.entities == ds.entities
    out = fresh(f"""
        import json, torch
        torch.set_num_threads(1)
        import kgdistill
        run = kgdistill.load({str(tmp_path / "run")!r})
        metrics = kgdistill.evaluate(run)
        report = kgdistill.distill("kd", run, {str(tmp_path / "kd")!r}, dims=[4], epochs=1)
        art = kgdistill.load(kgdistill.export(report.results[-1].path, {str(tmp_path / "kd.safetensors")!r}))
        on_art = kgdistill.evaluate(art, run.dataset)
        student = kgdistill.evaluate(report.results[-1].path)
        print(json.dumps({{"entities": run.dataset.num_entities, "mrr": metrics["both"]["mrr"],
                          "same": abs(on_art["both"]["mrr"] - student["both"]["mrr"]) < 1e-6,
                          "top": len(art.predict("r0", head="e00", k=3))}}))
    """, tmp_path)
    seen = json.loads(out)
    assert seen["entities"] == 12 and 0 < seen["mrr"] <= 1 and seen["same"] and seen["top"] == 3
    cli = subprocess.run([sys.executable, "-m", "kgdistill.cli", "evaluate", str(tmp_path / "run"), "--no-progress"],
                         capture_output=True, text=True, timeout=300, cwd="/", check=False)
    assert cli.returncode == 0, cli.stderr
    assert "run folder" in cli.stdout


def test_train_refuses_an_in_memory_dataset_without_a_folder() -> None:
    toy = _toy()
    ds = Dataset.from_triples(toy["train"], toy["valid"], toy["test"])
    with pytest.raises(kgdistill.api.ConfigError, match="output folder"):
        kgdistill.train(ds)


def test_a_named_dataset_is_recorded_by_name(tmp_path: Path) -> None:
    run = kgdistill.train(Dataset.load("nations"), tmp_path / "run", model="distmult", dim=4, epochs=1,
                          eval_every=0, eval_splits=["test"])
    assert run.config.data.dataset == "nations" and not (tmp_path / "run" / "data").exists()
