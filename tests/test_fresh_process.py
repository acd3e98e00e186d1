"""What a fresh Python process sees: registries that do not depend on import order, and imports without
process-wide side effects. Every check runs in a new interpreter (``subprocess``), where nothing was imported
before the code under test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from kgdistill import runs
from kgdistill.config import DataConfig, EvaluationConfig, ModelConfig, RunConfig, TrainingConfig

TINY = "tiny:layers=2,hidden=32,heads=2,intermediate=64"


def fresh(code: str, cwd: Path | None = None) -> str:
    """Run ``code`` in a new interpreter; returns its stdout (fails the test on a non-zero exit)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def embedding_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "nations-distmult"
    config = RunConfig(data=DataConfig(dataset="nations"), model=ModelConfig(model="distmult", dim=8),
                       training=TrainingConfig(epochs=1, batch_size=256, eval_every=0, patience=0),
                       evaluation=EvaluationConfig(eval_splits=["test"]), output_dir=str(out), progress=False)
    runs.train(config)
    return out


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    import importlib.resources

    from kgdistill.text.config import TextModelConfig, TextRunConfig, TextTrainingConfig
    from kgdistill.text.trainer import train_text

    bundled = Path(str(importlib.resources.files("kgdistill.data").joinpath("bundled", "umls")))
    folder = tmp_path_factory.mktemp("umls_small")
    for name in ("train.tsv", "entity2text.tsv", "entity2description.tsv", "relation2text.tsv"):
        shutil.copy(bundled / name, folder / name)
    for split in ("valid", "test"):
        lines = (bundled / f"{split}.tsv").read_text().splitlines()[:20]
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    out = tmp_path_factory.mktemp("runs") / "umls-text"
    threads = torch.get_num_threads()
    config = TextRunConfig(
        data=DataConfig(dataset=str(folder)), model=TextModelConfig(plm=TINY, max_length=16),
        training=TextTrainingConfig(epochs=1, batch_size=32, lr=2e-3, warmup_steps=1, steps_per_epoch=2,
                                    self_negatives=False, log_every=1, num_threads=1),
        evaluation=EvaluationConfig(eval_splits=["test"]), output_dir=str(out))
    try:
        train_text(config)
    finally:
        torch.set_num_threads(threads)
    return out


def test_registries_list_every_name_without_importing_them() -> None:
    """Declared entries are listed before any module defining them was imported, and transformers stays unloaded."""
    out = fresh("""
        import json, sys
        from kgdistill.models.base import model_classes
        from kgdistill.distill.method import methods
        loaded = sorted(m for m in ("kgdistill.distill.kd", "kgdistill.distill.dualde", "kgdistill.distill.iterde",
                                    "kgdistill.distill.metasd", "kgdistill.distill.combo", "kgdistill.text.biencoder",
                                    "transformers") if m in sys.modules)
        print(json.dumps({"models": model_classes.names(), "methods": methods.names(), "loaded": loaded,
                          "lazy": [n for n in methods.names() if not methods.is_loaded(n)]}))
    """)
    seen = json.loads(out)
    assert seen["models"] == ["biencoder", "embedding"]
    assert seen["methods"] == ["dualde", "hrkd", "iterde", "iterde-metasd", "kd", "kd-huber", "logit", "metasd",
                               "patient", "pmd", "scratch"]
    assert seen["loaded"] == [] and seen["lazy"] == seen["methods"]


def test_every_distillation_method_resolves_in_a_fresh_process() -> None:
    out = fresh("""
        import json
        from kgdistill.distill.method import methods
        print(json.dumps({n: [methods.get(n).__name__, methods.get(n).name] for n in methods.names()}
                         | {"alias": methods.get("from_scratch").__name__}))
    """)
    got = json.loads(out)
    assert got == {"dualde": ["DualDE", "dualde"], "iterde": ["IterDE", "iterde"],
                   "iterde-metasd": ["IterDEMetaSD", "iterde-metasd"], "kd": ["KD", "kd"],
                   "kd-huber": ["KDHuber", "kd-huber"], "metasd": ["MetaSD", "metasd"],
                   "scratch": ["Scratch", "scratch"], "hrkd": ["HRKD", "hrkd"], "logit": ["LogitKDMethod", "logit"],
                   "patient": ["PatientKDMethod", "patient"], "pmd": ["PMD", "pmd"], "alias": "Scratch"}


def test_text_methods_resolve_in_the_one_method_registry_without_importing_transformers() -> None:
    """Every text method is an entry of ``kgdistill.distill.method.methods``: resolved, its options built and the
    ``distill`` command's parser and per-method help made, all without importing transformers (only training does)."""
    out = fresh("""
        import contextlib, io, json, sys
        from kgdistill.distill.method import make_config, methods
        got = {n: [methods.get(n).family, methods.get(n).objective, type(make_config(n, {"epochs": "2"})).__name__]
               for n in ("pmd", "hrkd", "logit", "patient")}
        got["pkd"] = methods.get("pkd").__name__
        got["logit-kd"] = methods.get("logit-kd").__name__
        from kgdistill import cli
        cli.build_cli()
        with contextlib.redirect_stdout(io.StringIO()):
            cli.main(["distill", "--method", "pmd", "--help"])
        got["transformers"] = "transformers" in sys.modules
        print(json.dumps(got))
    """)
    got = json.loads(out)
    assert got == {"pmd": ["text", "pmd", "PMDConfig"], "hrkd": ["text", "hrkd", "HRKDConfig"],
                   "logit": ["text", "logit", "LogitKDConfig"], "patient": ["text", "patient", "PatientKDConfig"],
                   "pkd": "PatientKDMethod", "logit-kd": "LogitKDMethod", "transformers": False}


def test_text_objectives_resolve_in_a_fresh_process() -> None:
    pytest.importorskip("transformers")
    out = fresh("""
        import json
        from kgdistill.text.objective import objectives
        print(json.dumps({n: objectives.get(n).__name__ for n in objectives.names()}
                         | {"pkd": objectives.get("pkd").__name__}))
    """)
    assert json.loads(out) == {"hrkd": "HRKDObjective", "logit": "LogitKD", "none": "Objective",
                               "patient": "PatientKD", "pmd": "PMDObjective", "pkd": "PatientKD"}


def test_load_model_and_load_run_of_an_embedding_run_in_a_fresh_process(embedding_run: Path) -> None:
    out = fresh(f"""
        from kgdistill.models.base import load_model
        model = load_model({str(embedding_run)!r})
        print(type(model).__name__, model.num_entities)
    """)
    assert out.split() == ["EmbeddingModel", "14"]
    out = fresh(f"""
        from kgdistill.runs import load_run
        run = load_run({str(embedding_run)!r})
        print(type(run.model).__name__, run.dataset.name, run.dataset.num_entities)
    """)
    assert out.split() == ["EmbeddingModel", "nations", "14"]


def test_load_model_and_load_run_of_a_text_run_in_a_fresh_process(text_run: Path) -> None:
    out = fresh(f"""
        from kgdistill.models.base import load_model
        print(type(load_model({str(text_run)!r})).__name__)
        from kgdistill.runs import load_run
        run = load_run({str(text_run)!r})
        print(type(run.model).__name__, run.dataset.num_entities)
    """)
    assert out.split() == ["BiEncoder", "BiEncoder", "135"]


def test_a_registered_name_cannot_be_taken_twice_and_declared_entries_resolve() -> None:
    from kgdistill.registry import Registry, UnknownNameError

    reg: Registry[object] = Registry("thing")
    reg.declare("join", "os.path:join", "path-join")
    assert reg.names() == ["join"] and not reg.is_loaded("Path_Join")
    assert reg.get("path-join") is os.path.join and reg.is_loaded("join")
    with pytest.raises(ValueError, match="registered twice"):
        reg.declare("pathjoin", "os.path:join")
    with pytest.raises(ValueError, match="module:object"):
        reg.declare("other", "os.path.join")
    with pytest.raises(UnknownNameError, match="Did you mean 'join'"):
        reg.get("jion")
    # a module that registers a declared name with the decorator fills the entry (no second registration)
    reg.declare("exists", "os.path:exists")
    reg.register("exists")(os.path.exists)
    assert reg.get("exists") is os.path.exists
    with pytest.raises(ValueError, match="not declared"):
        reg.declare("isdir", "os.path:isdir")
        reg.register("isdir", "folder")(os.path.isdir)


def test_importing_the_library_leaves_the_process_environment_alone() -> None:
    """No module sets environment variables (offline switches and the like) when it is imported."""
    out = fresh("""
        import importlib, json, os
        before = dict(os.environ)
        names = ["kgdistill", "kgdistill.runs", "kgdistill.cli", "kgdistill.distill", "kgdistill.export",
                 "kgdistill.kernels", "kgdistill.evaluate", "kgdistill.reference", "kgdistill.text",
                 "kgdistill.text.plm", "kgdistill.text.biencoder", "kgdistill.text.trainer",
                 "kgdistill.distill.text_pmd", "kgdistill.distill.text_hrkd", "kgdistill.distill.text_kd",
                 "kgdistill.distill.text_method", "kgdistill.cli.text"]
        imported = []
        for name in names:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as err:  # an optional extra that is not installed
                if not (err.name or "").startswith(("transformers", "tokenizers")):
                    raise
                continue
            imported.append(name)
        import kgdistill.cli
        kgdistill.cli.build_cli()
        changed = sorted(k for k in {*before, *os.environ} if before.get(k) != os.environ.get(k))
        print(json.dumps({"changed": changed, "imported": imported}))
    """)
    seen = json.loads(out)
    assert seen["changed"] == []
    assert "kgdistill.runs" in seen["imported"] and "kgdistill.text" in seen["imported"]


def test_library_training_makes_no_process_wide_memory_setting(tmp_path: Path) -> None:
    """``runs.train`` leaves glibc's allocator alone; the ``kgdistill train`` command applies retain_memory."""
    out = fresh(f"""
        import json
        from kgdistill import cli, runs
        from kgdistill.config import DataConfig, ModelConfig, RunConfig, TrainingConfig, EvaluationConfig
        from kgdistill.training import memory
        config = RunConfig(data=DataConfig(dataset="nations"), model=ModelConfig(model="distmult", dim=4),
                           training=TrainingConfig(epochs=1, eval_every=0, patience=0),
                           evaluation=EvaluationConfig(eval_splits=["test"]), output_dir={str(tmp_path / "lib")!r},
                           progress=False)
        runs.train(config)
        after_library = memory._done
        cli.main(["train", "--dataset", "nations", "--model", "distmult", "--dim", "4", "--epochs", "1",
                  "--eval-every", "0", "--eval-splits", "test", "--out", {str(tmp_path / "cli")!r}])
        print(json.dumps([after_library, memory._done]))
    """)
    assert json.loads(out.strip().splitlines()[-1]) == [False, True]


def test_the_kernel_switch_is_scoped_to_its_context() -> None:
    import threading

    from kgdistill import kernels

    outer = kernels.enabled()
    seen: list[bool] = []
    with kernels.use(False):
        assert not kernels.enabled()
        worker = threading.Thread(target=lambda: seen.append(kernels.enabled()))
        worker.start()
        worker.join()
        with kernels.use(True):
            assert kernels.enabled()
        assert not kernels.enabled()
    assert kernels.enabled() == outer
    assert seen == [outer]  # another thread keeps its own setting


def test_a_declared_entry_whose_extra_is_missing_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kgdistill.errors import ConfigError
    from kgdistill.registry import Registry

    (tmp_path / "needs_extra.py").write_text("import a_package_that_is_not_installed\nthing = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry[object] = Registry("model class")
    reg.declare("fancy", "needs_extra:thing")
    assert reg.names() == ["fancy"]
    with pytest.raises(ConfigError, match="model class 'fancy' needs the package 'a_package_that_is_not_installed'"):
        reg.get("fancy")


def test_public_api_loads_evaluates_distils_and_exports_a_text_run_in_a_fresh_process(text_run: Path,
                                                                                     tmp_path: Path) -> None:
    """``import kgdistill`` alone, in a fresh process: a text run loaded, evaluated, distilled (patient KD, one step)
    and exported (artifact and hf folder), and the exports loaded back with the same test metrics."""
    out = fresh(f"""
        import json, torch
        torch.set_num_threads(1)
        import kgdistill
        run = kgdistill.load({str(text_run)!r})
        base = kgdistill.evaluate(run)["both"]["mrr"]
        report = kgdistill.distill("patient", run, {str(tmp_path / "pkd")!r}, layers=[0], steps_per_epoch=1,
                                   epochs=1, batch_size=16)
        student = report.results[-1].path
        art = kgdistill.export(student, {str(tmp_path / "s.safetensors")!r})
        hf = kgdistill.export(student, {str(tmp_path / "hf")!r}, format="hf")
        srun = kgdistill.load(student)
        mrr = lambda target: kgdistill.evaluate(target, srun.dataset)["both"]["mrr"]
        print(json.dumps({{"kind": type(run.model).__name__, "base": base, "student": mrr(srun),
                          "layers": srun.model.num_layers, "plm": srun.config.model.plm,
                          "art": mrr(kgdistill.load(art)), "hf": mrr(kgdistill.load(hf))}}))
    """)
    got = json.loads(out.splitlines()[-1])
    assert got["kind"] == "BiEncoder" and 0 < got["base"] <= 1 and got["layers"] == 1
    assert got["plm"] == TINY  # the student keeps the teacher's PLM without being told
    assert got["art"] == pytest.approx(got["student"], abs=1e-6)
    assert got["hf"] == pytest.approx(got["student"], abs=1e-6)
