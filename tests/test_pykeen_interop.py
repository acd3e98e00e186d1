"""PyKEEN interoperability against the real PyKEEN: tiny models trained by PyKEEN's pipeline in the test (nations,
1 epoch, dim 8), imported as kgdistill runs with scores equal on both sides (≤ 1e-5) for every test triple, a
distillation from an imported teacher, students exported back to PyKEEN model objects, the bad inputs, and folders
(pickles) refused unless trusted explicitly."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pykeen  # the pykeen extra is part of the dev extra: a missing PyKEEN fails here, it is not skipped
import pytest
import torch
from pykeen.pipeline import pipeline
from pykeen.triples import TriplesFactory

from kgdistill.cli import main
from kgdistill.data.datasets import load_dataset
from kgdistill.interop.pykeen import (
    PyKEENError,
    UntrustedPickleError,
    from_pykeen,
    import_pykeen,
    read_pykeen_folder,
    to_pykeen,
)
from kgdistill.runs import load_run

BUNDLED = Path(__file__).resolve().parents[1] / "src" / "kgdistill" / "data" / "bundled" / "nations"
#: (PyKEEN model, model kwargs, inverse triples)
CASES = {"TransE": ({"scoring_fct_norm": 1}, False), "DistMult": ({}, True), "ComplEx": ({}, True),
         "RotatE": ({}, False)}
TOL = 1e-5


def _train(name: str, out: Path, inverse: bool, model_kwargs: dict[str, Any], model: Any = None) -> Any:
    logging.getLogger("pykeen").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    # PyKEEN reads the same nations files, so its labels are kgdistill's; its own ids are assigned by PyKEEN
    training = TriplesFactory.from_path(BUNDLED / "train.tsv", create_inverse_triples=inverse)
    testing = TriplesFactory.from_path(BUNDLED / "test.tsv", entity_to_id=training.entity_to_id,
                                       relation_to_id=training.relation_to_id)
    result = pipeline(training=training, testing=testing, model=model or name,
                      model_kwargs={"embedding_dim": 8, **model_kwargs},
                      training_kwargs={"num_epochs": 1, "batch_size": 256, "use_tqdm": False},
                      evaluation_kwargs={"use_tqdm": False, "batch_size": 256}, random_seed=0)
    result.save_to_directory(out)
    return result


@pytest.fixture(scope="module")
def pykeen_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    root = tmp_path_factory.mktemp("pykeen")
    return {name: (root / name, _train(name, root / name, inverse, kwargs))
            for name, (kwargs, inverse) in CASES.items()}


def _pykeen_ids(result: Any, dataset: Any, triples: torch.Tensor) -> torch.Tensor:
    e = torch.tensor([result.training.entity_to_id[x] for x in dataset.entities])
    r = torch.tensor([result.training.relation_to_id[x] for x in dataset.relations])
    return torch.stack([e[triples[:, 0]], r[triples[:, 1]], e[triples[:, 2]]], 1)


def _check_equal(ours: Any, theirs: Any, ours_test: torch.Tensor, theirs_test: torch.Tensor,
                 entity_perm: torch.Tensor | None) -> float:
    """Largest |Δ| over triple scores and all-entity tail and head scores of every test triple."""
    with torch.no_grad():
        a = ours.score_hrt(ours_test)
        b = theirs.predict_hrt(theirs_test).squeeze(1)
        at = ours.score_t(ours_test[:, 0], ours_test[:, 1])
        bt = theirs.predict_t(theirs_test[:, :2])
        ah = ours.score_h(ours_test[:, 1], ours_test[:, 2])
        bh = theirs.predict_h(theirs_test[:, 1:])
    if entity_perm is not None:  # PyKEEN's columns in kgdistill's entity order
        bt, bh = bt[:, entity_perm], bh[:, entity_perm]
    return max(float((a - b).abs().max()), float((at - bt).abs().max()), float((ah - bh).abs().max()))


@pytest.mark.parametrize("name", list(CASES))
def test_import_scores_equal_and_back(name: str, pykeen_dirs: dict[str, tuple[Path, Any]], tmp_path: Path) -> None:
    folder, result = pykeen_dirs[name]
    run = import_pykeen(folder, "nations", tmp_path / "run", trust_pickle=True)
    dataset = load_dataset("nations")
    test = dataset.splits["test"]
    assert run.dataset is not None and run.dataset.entities == dataset.entities
    assert run.model.interaction_name == name.lower()
    assert run.model.reciprocal == CASES[name][1]
    if name == "RotatE":
        assert run.model.interaction.extra_options()["norm"] == "l2"
    perm = torch.tensor([result.training.entity_to_id[x] for x in dataset.entities])
    # PyKEEN → kgdistill: every test triple, triple / tail / head scores
    err = _check_equal(run.model, result.model, test, _pykeen_ids(result, dataset, test), perm)
    print(f"{name}: PyKEEN → kgdistill max |Δscore| {err:.2e}")
    assert err <= TOL, f"{name}: max |Δscore| {err}"
    # the run is a normal run folder with kgdistill's metrics of the imported model
    reloaded = load_run(tmp_path / "run")
    assert torch.equal(reloaded.model.entity, run.model.entity)
    assert 0 < reloaded.metrics["test"]["both"]["mrr"] <= 1
    # kgdistill → PyKEEN: a PyKEEN model over kgdistill's ids, same scores
    back = to_pykeen(reloaded)
    assert type(back).__name__ == name and back.use_inverse_triples == CASES[name][1]
    err_back = _check_equal(reloaded.model, back, test, test, None)
    print(f"{name}: kgdistill → PyKEEN max |Δscore| {err_back:.2e}")
    assert err_back <= TOL, f"{name} back to PyKEEN: max |Δscore| {err_back}"


def test_model_object_in_python(pykeen_dirs: dict[str, tuple[Path, Any]]) -> None:
    """from_pykeen with a model object and its triples factory; PyKEEN's ids shuffled against kgdistill's."""
    _, result = pykeen_dirs["ComplEx"]
    dataset = load_dataset("nations")
    ours = from_pykeen(result.model, dataset, triples_factory=result.training)
    test = dataset.splits["test"]
    with torch.no_grad():
        diff = ours.score_hrt(test) - result.model.predict_hrt(_pykeen_ids(result, dataset, test)).squeeze(1)
    assert float(diff.abs().max()) <= TOL
    with pytest.raises(PyKEENError, match="triples factory"):
        from_pykeen(result.model, dataset)


def test_distill_from_imported_teacher_cli(pykeen_dirs: dict[str, tuple[Path, Any]], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = pykeen_dirs["DistMult"]
    # without --trust-pickle the folder is refused (one line, exit 2), nothing is written
    for argv in (["import-pykeen", str(folder), "--dataset", "nations", "--out", str(tmp_path / "teacher")],
                 ["distill", "--method", "kd", "--teacher", str(folder), "--dataset", "nations", "--out",
                  str(tmp_path / "kd2"), "--dims", "4"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(folder / "trained_model.pkl") in err and "--trust-pickle" in err
    assert not (tmp_path / "teacher").exists() and not (tmp_path / "kd2").exists()
    assert main(["import-pykeen", str(folder), "--dataset", "nations", "--out", str(tmp_path / "teacher"),
                 "--trust-pickle"]) == 0
    printed = capsys.readouterr().out
    assert "DistMult" in printed and "test" in printed
    assert main(["distill", "--method", "kd", "--teacher", str(tmp_path / "teacher"), "--out",
                 str(tmp_path / "kd"), "--dims", "4", "--epochs", "2", "--no-progress", "--threads", "1"]) == 0
    student = load_run(next(p for p in (tmp_path / "kd").iterdir() if (p / "model.json").exists()))
    assert student.model.dim == 4 and student.model.interaction_name == "distmult"
    assert 0 < student.metrics["test"]["both"]["mrr"] <= 1
    # --teacher also takes the PyKEEN folder itself (imported into OUT/teacher-pykeen first)
    assert main(["distill", "--method", "kd", "--teacher", str(folder), "--dataset", "nations", "--out",
                 str(tmp_path / "kd2"), "--dims", "4", "--epochs", "1", "--no-progress", "--threads", "1",
                 "--trust-pickle"]) == 0
    assert (tmp_path / "kd2" / "teacher-pykeen" / "model.json").exists()
    # an existing import is reused (e.g. --resume) without unpickling anything again: no opt-in needed
    from kgdistill.interop.teacher import teacher_folder

    assert teacher_folder(str(folder), "nations", tmp_path / "kd2") == str(tmp_path / "kd2" / "teacher-pykeen")
    # its model card names the PyKEEN teacher
    from kgdistill.export_hf import export_hf

    export_hf(student.path, tmp_path / "card")
    card = (tmp_path / "card" / "README.md").read_text()
    assert "imported from PyKEEN DistMult" in card and "import-pykeen" in card
    # the student goes back to PyKEEN (reciprocal DistMult: inverse triples)
    back = to_pykeen(student)
    test = student.dataset.splits["test"]  # type: ignore[union-attr]
    with torch.no_grad():
        assert float((back.predict_hrt(test).squeeze(1) - student.model.score_hrt(test)).abs().max()) <= TOL


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conve = tmp_path / "conve"
    training = TriplesFactory.from_path(BUNDLED / "train.tsv", create_inverse_triples=True)
    model = pykeen.models.ConvE(triples_factory=training, embedding_dim=8, output_channels=2)
    conve.mkdir()
    torch.save(model, conve / "trained_model.pkl")
    training.to_path_binary(conve / "training_triples")
    assert main(["import-pykeen", str(conve), "--dataset", "nations", "--out", str(tmp_path / "a"),
                 "--trust-pickle"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ConvE is not supported" in err
    assert "TransE, DistMult, ComplEx, RotatE" in err
    assert not (tmp_path / "a").exists()
    assert main(["distill", "--method", "kd", "--teacher", str(conve), "--dataset", "nations", "--out",
                 str(tmp_path / "kd"), "--dims", "4", "--trust-pickle"]) == 2  # refused before anything is created
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ConvE is not supported" in err and not (tmp_path / "kd").exists()
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hello")
    assert main(["import-pykeen", str(tmp_path / "plain"), "--dataset", "nations", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a PyKEEN result folder" in err
    assert not (tmp_path / "b").exists()
    # a kgdistill RotatE with the paper's complex L1 norm has no PyKEEN counterpart
    from kgdistill.models.embedding import EmbeddingModel

    class Fake:
        path = tmp_path
        model = EmbeddingModel("rotate", 14, 55, 4)
        dataset = load_dataset("nations")

    with pytest.raises(PyKEENError, match="norm l2|L2 norm"):
        to_pykeen(Fake())


def test_readme_pykeen_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The README's PyKEEN section, verbatim but for the budgets (1 epoch): PyKEEN's own Nations (packaged with
    PyKEEN, same labels), import, both distill forms, and the student back to PyKEEN."""
    import shlex

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text.split("### PyKEEN models as teachers", 1)[1].split("\n### ", 1)[0]
    blocks = section.split("```")
    pipeline_code, commands, use_code = blocks[1], blocks[3], blocks[5]
    assert pipeline_code.startswith("python") and commands.startswith("bash") and use_code.startswith("python")
    monkeypatch.chdir(tmp_path)
    logging.getLogger("pykeen").setLevel(logging.ERROR)
    exec(pipeline_code.removeprefix("python").replace('"num_epochs": 100', '"num_epochs": 1'), {})  # noqa: S102
    for line in commands.removeprefix("bash").replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        assert words[0] == "kgdistill"
        extra = ["--epochs", "1", "--threads", "1", "--no-progress"] if words[1] == "distill" else []
        assert main([*words[1:], *extra]) == 0, words
    assert (tmp_path / "runs" / "pykeen-kd2" / "teacher-pykeen" / "model.json").exists()
    capsys.readouterr()
    exec(use_code.removeprefix("python"), {})  # noqa: S102
    assert capsys.readouterr().out.strip() == "RotatE torch.Size([2, 14])"


@pytest.mark.parametrize("name,kwargs,inverse", [("TransE", {"scoring_fct_norm": 2}, True),
                                                 ("DistMult", {}, False), ("ComplEx", {}, False),
                                                 ("RotatE", {}, True)])
def test_other_variants_in_python(name: str, kwargs: dict[str, Any], inverse: bool) -> None:
    """The variants the trained fixtures leave out (TransE-L2, inverse triples flipped), as fresh PyKEEN model
    objects: PyKEEN → kgdistill → PyKEEN, all scores equal."""
    torch.manual_seed(1)
    training = TriplesFactory.from_path(BUNDLED / "train.tsv", create_inverse_triples=inverse)
    theirs = getattr(pykeen.models, name)(triples_factory=training, embedding_dim=6, **kwargs)
    dataset = load_dataset("nations")
    ours = from_pykeen(theirs, dataset, triples_factory=training)
    assert ours.reciprocal == inverse
    if name == "TransE":
        assert ours.interaction.extra_options() == {"p": 2}

    class Result:
        model, training = theirs, None

    Result.training = training  # type: ignore[assignment]
    test = dataset.splits["test"]
    perm = torch.tensor([training.entity_to_id[x] for x in dataset.entities])
    assert _check_equal(ours, theirs, test, _pykeen_ids(Result, dataset, test), perm) <= TOL

    class Run:
        path, model = "model", ours

    Run.dataset = dataset  # type: ignore[attr-defined]
    back = to_pykeen(Run())
    assert _check_equal(ours, back, test, test, None) <= TOL


def test_entities_pykeen_never_saw_get_zero_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """PyKEEN trained without any triple of 'usa' and of one relation: those rows are zero, counted, reported."""
    lines = [line.split("\t") for line in (BUNDLED / "train.tsv").read_text().splitlines()]
    dropped_rel = lines[0][1]
    kept = [x for x in lines if "usa" not in (x[0], x[2]) and x[1] != dropped_rel]
    import numpy as np

    training = TriplesFactory.from_labeled_triples(np.array(kept, dtype=str))
    theirs = pykeen.models.DistMult(triples_factory=training, embedding_dim=4)
    run = import_pykeen(theirs, "nations", tmp_path / "run", triples_factory=training)
    dataset = run.dataset
    assert dataset is not None
    assert not run.model.entity.detach()[dataset.entities.index("usa")].any()
    assert not run.model.relation.detach()[dataset.relations.index(dropped_rel)].any()
    import json

    info = json.loads((tmp_path / "run" / "meta.json").read_text())["pykeen"]
    assert info["missing_entities"] == 1
    assert info["missing_relations"] == len(set(dataset.relations) - {x[1] for x in kept}) >= 1


def test_more_bad_input(pykeen_dirs: dict[str, tuple[Path, Any]], tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = pykeen_dirs["TransE"]

    def one_line(argv: list[str], *needles: str) -> None:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        for needle in needles:
            assert needle in err, err

    # a PyKEEN --teacher without --dataset; a graph with other labels; an existing run folder
    one_line(["distill", "--method", "kd", "--teacher", str(folder), "--out", str(tmp_path / "kd"), "--dims", "4"],
             "--dataset")
    one_line(["import-pykeen", str(folder), "--dataset", "kinship", "--out", str(tmp_path / "k"), "--trust-pickle"],
             "not in the dataset 'kinship'")
    assert not (tmp_path / "k").exists()
    assert main(["import-pykeen", str(folder), "--dataset", "nations", "--out", str(tmp_path / "run"),
                 "--trust-pickle"]) == 0
    one_line(["import-pykeen", str(folder), "--dataset", "nations", "--out", str(tmp_path / "run"),
              "--trust-pickle"], "already holds")
    one_line(["import-pykeen", str(tmp_path / "nowhere"), "--dataset", "nations", "--out", str(tmp_path / "x")],
             "no such folder")
    # TransE with power_norm (the p-th power of the norm) has no kgdistill counterpart
    training = TriplesFactory.from_path(BUNDLED / "train.tsv")
    powered = pykeen.models.TransE(triples_factory=training, embedding_dim=4, power_norm=True)
    with pytest.raises(PyKEENError, match="power_norm"):
        from_pykeen(powered, "nations", triples_factory=training)


def test_to_pykeen_from_an_artifact_leaves_the_rng_alone(pykeen_dirs: dict[str, tuple[Path, Any]],
                                                         tmp_path: Path) -> None:
    folder, _ = pykeen_dirs["RotatE"]
    run = import_pykeen(folder, "nations", tmp_path / "run", trust_pickle=True)
    import kgdistill

    art = kgdistill.load(kgdistill.export(run, tmp_path / "rotate.safetensors"))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    back = to_pykeen(art)
    assert torch.equal(torch.rand(3), expected)
    test = run.dataset.splits["test"]  # type: ignore[union-attr]
    with torch.no_grad():
        assert float((back.predict_hrt(test).squeeze(1) - run.model.score_hrt(test)).abs().max()) <= TOL


class _Payload:
    """Unpickling it runs ``os.mkdir(marker)``: the stand-in for a malicious pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return os.mkdir, (str(self.marker),)


def test_pickles_are_loaded_only_when_trusted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A PyKEEN folder whose pickles run code when loaded: refused without the opt-in (Python and both CLI verbs),
    before anything is unpickled or any output folder is created; with the opt-in its code does run."""
    folder, marker = tmp_path / "evil", tmp_path / "pwned"
    (folder / "training_triples").mkdir(parents=True)
    torch.save(_Payload(marker), folder / "trained_model.pkl")
    torch.save(_Payload(tmp_path / "pwned-triples"), folder / "training_triples" / "base.pth")
    model_file = str(folder / "trained_model.pkl")
    for call in (lambda: read_pykeen_folder(folder), lambda: from_pykeen(folder, "nations"),
                 lambda: import_pykeen(folder, "nations", tmp_path / "out")):
        with pytest.raises(UntrustedPickleError) as info:
            call()
        assert model_file in str(info.value) and "trust_pickle=True" in str(info.value)
    for argv in (["import-pykeen", str(folder), "--dataset", "nations", "--out", str(tmp_path / "out")],
                 ["distill", "--method", "kd", "--teacher", str(folder), "--dataset", "nations", "--out",
                  str(tmp_path / "kd"), "--dims", "4"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and model_file in err and "arbitrary code" in err, err
        assert "--trust-pickle" in err
    assert not marker.exists() and not (tmp_path / "pwned-triples").exists()
    assert not (tmp_path / "out").exists() and not (tmp_path / "kd").exists()
    # the payload is live: trusting the folder unpickles it (then it is no PyKEEN model)
    with pytest.raises(PyKEENError, match="NoneType is not supported"):
        read_pykeen_folder(folder, trust_pickle=True)
    assert marker.is_dir()
