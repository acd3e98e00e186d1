"""``kgdistill export RUN DIR --format hf``: a Hugging Face-style folder with a model card, loaded back by
``kgdistill.load(DIR)`` with the run's predictions; the card's metrics and lineage; ``--no-known``; refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import kgdistill
from kgdistill.cli import main
from kgdistill.config import DataConfig, EvaluationConfig, ModelConfig, RunConfig, TrainingConfig
from kgdistill.errors import KGDistillError
from kgdistill.export import Artifact, ArtifactError
from kgdistill.export_hf import export_hf, lineage
from kgdistill.runs import load_run, train


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A nations ComplEx-8 teacher (4 epochs) and its KD student of dim 4 (2 epochs): a few seconds."""
    root = tmp_path_factory.mktemp("hf")
    config = RunConfig(data=DataConfig(dataset="nations"), model=ModelConfig(model="complex", dim=8),
                       training=TrainingConfig(training_mode="1vsall", optimizer="adagrad", lr=0.1, epochs=4,
                                               batch_size=256, eval_every=2, num_threads=1),
                       evaluation=EvaluationConfig(eval_splits=["valid", "test"]), output_dir=str(root / "teacher"),
                       progress=False)
    teacher = train(config).path
    report = kgdistill.distill("kd", teacher, root / "kd", dims=[4], epochs=2)
    return {"teacher": teacher, "student": report.results[0].path}


def _same_predictions(run_dir: Path, art: Artifact) -> None:
    run = load_run(run_dir)
    assert run.dataset is not None
    test = run.dataset.splits["test"]
    with torch.no_grad():
        assert torch.equal(run.model.score_t(test[:, 0], test[:, 1]), art.model.score_t(test[:, 0], test[:, 1]))
        assert torch.equal(run.model.score_h(test[:, 1], test[:, 2]), art.model.score_h(test[:, 1], test[:, 2]))
    h, r = run.dataset.entities[int(test[0, 0])], run.dataset.relations[int(test[0, 1])]
    from kgdistill.predict import predict

    want = predict(run.model, run.dataset, r, head=h, k=5, exclude_known=True)
    got = art.predict(r, head=h, k=5, exclude_known=True)
    assert [(p.label, p.score, p.known) for p in got] == [(p.label, p.score, p.known) for p in want]


def test_trained_run_round_trip(runs_dir: dict[str, Path], tmp_path: Path) -> None:
    result = export_hf(runs_dir["teacher"], tmp_path / "hf", license="mit")
    names = {p.name for p in (tmp_path / "hf").iterdir()}
    assert names == {"config.json", "model.safetensors", "entities.tsv", "relations.tsv", "known.safetensors",
                     "README.md"}
    assert result.sizes == {p.name: p.stat().st_size for p in (tmp_path / "hf").iterdir()}
    art = kgdistill.load(tmp_path / "hf")
    assert isinstance(art, Artifact) and art.known is not None and art.known.dtype == torch.int32
    assert art.known.shape[0] == 1592 + 199 + 201  # nations train ∪ valid ∪ test
    assert result.sizes["known.safetensors"] < 1992 * 3 + 200  # uint8 ids (14 entities): 3 bytes a triple
    _same_predictions(runs_dir["teacher"], art)
    card = (tmp_path / "hf" / "README.md").read_text()
    test_mrr = json.loads((runs_dir["teacher"] / "metrics.json").read_text())["test"]["both"]["mrr"]
    assert card.startswith("---\nlicense: mit\n") and f"{test_mrr:.4f}" in card
    assert "filtered" in card and "kgdistill.load(" in card and "## Training configuration" in card
    assert "A trained run (no teacher)" in card


def test_distilled_student_card_and_lineage(runs_dir: dict[str, Path], tmp_path: Path) -> None:
    export_hf(runs_dir["student"], tmp_path / "student")
    art = kgdistill.load(tmp_path / "student")
    _same_predictions(runs_dir["student"], art)
    chain = lineage(runs_dir["student"])
    assert [e["method"] for e in chain] == ["train", "kd"] and chain[0]["run"] == str(runs_dir["teacher"])
    card = (tmp_path / "student" / "README.md").read_text()
    teacher_mrr = json.loads((runs_dir["teacher"] / "metrics.json").read_text())["test"]["both"]["mrr"]
    student_mrr = json.loads((runs_dir["student"] / "metrics.json").read_text())["test"]["both"]["mrr"]
    assert "## Lineage" in card and "Teacher → student" in card and "knowledge-distillation" in card
    assert f"{teacher_mrr:.4f}" in card and f"{student_mrr:.4f}" in card
    assert "license: unknown" in card and "method `kd`" in card
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    assert config["lineage"][0]["test"]["mrr"] == teacher_mrr and config["method"] == "kd"


def test_no_known_shrinks_and_cli_reports_sizes(runs_dir: dict[str, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(runs_dir["student"]), str(tmp_path / "full"), "--format", "hf"]) == 0
    full = capsys.readouterr().out
    assert main(["export", str(runs_dir["student"]), str(tmp_path / "small"), "--format", "hf", "--no-known"]) == 0
    small = capsys.readouterr().out
    for name in ("config.json", "model.safetensors", "entities.tsv", "relations.tsv", "README.md"):
        size = (tmp_path / "full" / name).stat().st_size
        assert name in full and f"{size:,}" in full
    assert "known.safetensors" in full and "known triples: left out" in small
    assert not (tmp_path / "small" / "known.safetensors").exists()

    def total(folder: Path) -> int:
        return sum(p.stat().st_size for p in folder.iterdir())

    assert total(tmp_path / "small") < total(tmp_path / "full") - 1992 * 3
    art = kgdistill.load(tmp_path / "small")
    assert isinstance(art, Artifact) and art.known is None
    assert main(["load", str(tmp_path / "small"), "--head", "usa", "--relation", "embassy", "-k", "3"]) == 0
    assert "usa" in capsys.readouterr().out
    # the folder serves as an artifact file does
    from fastapi.testclient import TestClient

    from kgdistill.serve.app import create_app

    reply = TestClient(create_app(tmp_path / "full")).post("/predict/tail",
                                                           json={"head": "usa", "relation": "embassy", "k": 3})
    assert reply.status_code == 200 and len(reply.json()["predictions"]) == 3


def test_known_dtype() -> None:
    from kgdistill.export_hf import known_dtype

    assert [known_dtype(n) for n in (14, 256, 257, 32768, 40943)] == [torch.uint8, torch.uint8, torch.int16,
                                                                       torch.int16, torch.int32]


def test_refusals_and_damage(runs_dir: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(KGDistillError, match="is the run folder"):
        export_hf(runs_dir["teacher"], runs_dir["teacher"])
    out = tmp_path / "hf"
    export_hf(runs_dir["teacher"], out)
    with pytest.raises(KGDistillError, match="--force"):
        export_hf(runs_dir["teacher"], out)
    export_hf(runs_dir["teacher"], out, force=True, include_known=False)
    assert not (out / "known.safetensors").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(KGDistillError, match="holds other files"):
        export_hf(runs_dir["teacher"], other, force=True)
    assert (other / "notes.txt").read_text() == "mine"
    raw = bytearray((out / "model.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (out / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="sha256"):
        kgdistill.load(out)


def test_int8_export_states_its_effect(runs_dir: dict[str, Path], tmp_path: Path) -> None:
    result = export_hf(runs_dir["teacher"], tmp_path / "int8", dtype="int8")
    full = export_hf(runs_dir["teacher"], tmp_path / "f32")
    assert result.sizes["model.safetensors"] < full.sizes["model.safetensors"]
    art = kgdistill.load(tmp_path / "int8")
    run = load_run(runs_dir["teacher"])
    test = run.dataset.splits["test"]  # type: ignore[union-attr]
    with torch.no_grad():
        want = run.model.score_t(test[:, 0], test[:, 1])
        diff = float((art.model.score_t(test[:, 0], test[:, 1]) - want).abs().max())
    assert 0 < diff <= 0.02 * float(want.abs().max())  # int8: ≤ max|row| / 254 per value
    quant = result.config["quantization"]
    assert quant["dtype"] == "int8" and quant["triples"] == 201 and abs(quant["mrr_change"]) < 0.1
    card = (tmp_path / "int8" / "README.md").read_text()
    assert "Stored as int8: test MRR" in card and "| stored as | int8 |" in card


def test_text_model_folder(tmp_path: Path) -> None:
    """A text bi-encoder (tiny random BERT, 2 steps on a umls subset) exports and loads with equal scores."""
    pytest.importorskip("transformers")
    import importlib.resources
    import shutil

    from kgdistill.config import DataConfig as Data
    from kgdistill.text.config import TextModelConfig, TextRunConfig, TextTrainingConfig
    from kgdistill.text.trainer import train_text

    bundled = Path(str(importlib.resources.files("kgdistill.data").joinpath("bundled", "umls")))
    folder = tmp_path / "umls"
    folder.mkdir()
    for name in ("train.tsv", "entity2text.tsv", "entity2description.tsv", "relation2text.tsv"):
        shutil.copy(bundled / name, folder / name)
    for split in ("valid", "test"):
        (folder / f"{split}.tsv").write_text("\n".join((bundled / f"{split}.tsv").read_text().splitlines()[:20]) + "\n")
    torch.set_num_threads(1)
    config = TextRunConfig(data=Data(dataset=str(folder)),
                           model=TextModelConfig(plm="tiny:layers=2,hidden=32,heads=2,intermediate=64", max_length=16),
                           training=TextTrainingConfig(epochs=1, batch_size=32, lr=2e-3, warmup_steps=1,
                                                       steps_per_epoch=2, self_negatives=False, num_threads=1),
                           evaluation=EvaluationConfig(eval_splits=["test"]), output_dir=str(tmp_path / "text"))
    run = train_text(config)
    result = export_hf(run.path, tmp_path / "hf")
    art = kgdistill.load(tmp_path / "hf")
    test = run.dataset.splits["test"]
    with torch.no_grad():
        assert torch.equal(run.model.eval().score_t(test[:, 0], test[:, 1]), art.model.score_t(test[:, 0], test[:, 1]))
    assert result.config["model_class"] == "biencoder"
    assert "biencoder" in (tmp_path / "hf" / "README.md").read_text()


def test_lineage_finds_a_relative_teacher_from_another_directory(runs_dir: dict[str, Path], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder that records only a relative ``teacher`` (as given on the command line, before ``teacher_path`` was
    recorded) finds it next to or above the student, whatever the current directory."""
    import shutil

    import yaml

    shutil.copytree(runs_dir["teacher"], tmp_path / "project" / "teacher")
    student = tmp_path / "project" / "students" / "kd-4"
    shutil.copytree(runs_dir["student"], student)
    step = yaml.safe_load((student / "distill.yaml").read_text())
    step.pop("teacher_path", None)
    step["teacher"] = "teacher"
    (student / "distill.yaml").write_text(yaml.safe_dump(step))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    chain = lineage(student)
    assert [e["method"] for e in chain] == ["train", "kd"]
    assert chain[0]["run"] == str((tmp_path / "project" / "teacher").resolve())


def test_teacher_gone_and_dataset_gone(runs_dir: dict[str, Path], tmp_path: Path) -> None:
    """A student whose teacher folder was removed and whose dataset cannot be found still exports: the lineage says
    the teacher is not found, the known triples are left out with a note, predictions are the run's."""
    import shutil

    import yaml

    student = tmp_path / "student"
    shutil.copytree(runs_dir["student"], student)
    step = yaml.safe_load((student / "distill.yaml").read_text())
    step["teacher"] = step["teacher_path"] = str(tmp_path / "gone")
    (student / "distill.yaml").write_text(yaml.safe_dump(step))
    config = yaml.safe_load((student / "config.yaml").read_text())
    config["data"]["dataset"] = str(tmp_path / "no-such-dataset")
    (student / "config.yaml").write_text(yaml.safe_dump(config))
    result = export_hf(student, tmp_path / "hf")
    assert "known.safetensors" not in result.sizes and any("dataset not available" in n for n in result.config["notes"])
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "gone (not found)" in card and "left out (the run's dataset was not found)" in card
    art = kgdistill.load(tmp_path / "hf")
    run = load_run(runs_dir["student"])
    test = run.dataset.splits["test"]  # type: ignore[union-attr]
    with torch.no_grad():
        assert torch.equal(art.model.score_hrt(test), run.model.score_hrt(test))


def test_python_api_export_format(runs_dir: dict[str, Path], tmp_path: Path) -> None:
    from kgdistill.errors import ConfigError

    path = kgdistill.export(runs_dir["teacher"], tmp_path / "api", format="hf", license="cc-by-4.0",
                            include_known=False)
    assert path == tmp_path / "api" and "license: cc-by-4.0" in (path / "README.md").read_text()
    assert isinstance(kgdistill.load(path), Artifact)
    with pytest.raises(ConfigError, match="format"):
        kgdistill.export(runs_dir["teacher"], tmp_path / "x", format="onnx")
