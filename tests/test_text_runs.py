"""End-to-end tests of text runs on a umls subset with a tiny random BERT: learning, run folders, predict/evaluate,
resume, every distillation method, the PMD chain, HRKD's trained graph, the CLI."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from kgdistill.config import DataConfig, EvaluationConfig  # noqa: E402
from kgdistill.data.datasets import load_dataset  # noqa: E402
from kgdistill.text.config import DistillConfig, TextModelConfig, TextRunConfig, TextTrainingConfig  # noqa: E402
from kgdistill.text.trainer import train_text  # noqa: E402

TINY = "tiny:layers=3,hidden=48,heads=2,intermediate=96"


@pytest.fixture(scope="module")
def umls_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """umls with its full training graph and text, but only 40 valid / 40 test triples (fast evaluation)."""
    import importlib.resources

    bundled = Path(str(importlib.resources.files("kgdistill.data").joinpath("bundled", "umls")))
    folder = tmp_path_factory.mktemp("umls_small")
    for name in ("train.tsv", "entity2text.tsv", "entity2description.tsv", "relation2text.tsv"):
        shutil.copy(bundled / name, folder / name)
    for split in ("valid", "test"):
        lines = (bundled / f"{split}.tsv").read_text().splitlines()[:40]
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def base_config(folder: Path, out: Path, steps: int = 3, **training: object) -> TextRunConfig:
    return TextRunConfig(
        data=DataConfig(dataset=str(folder)),
        model=TextModelConfig(plm=TINY, max_length=20),
        training=TextTrainingConfig(epochs=1, batch_size=48, lr=2e-3, warmup_steps=5, steps_per_epoch=steps,
                                    self_negatives=False, log_every=1, num_threads=1, **training),  # type: ignore
        evaluation=EvaluationConfig(eval_splits=["test"]), output_dir=str(out))


@pytest.fixture(scope="module")
def teacher_run(umls_small: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("runs") / "teacher"
    return train_text(base_config(umls_small, out, steps=60))


def test_end_to_end_learns(teacher_run, umls_small: Path) -> None:  # type: ignore[no-untyped-def]
    from kgdistill.evaluate import evaluate
    from kgdistill.text.trainer import build_text_model

    mrr = teacher_run.metrics["test"]["both"]["mrr"]
    ds = load_dataset(str(umls_small))
    untrained, _, _ = build_text_model(base_config(umls_small, Path("unused")), ds)
    random_mrr = evaluate(untrained.eval(), ds, "test").summary()["both"]["mrr"]
    assert mrr > 0.12 and mrr > 2 * random_mrr, (mrr, random_mrr)
    trace = teacher_run.trace()
    losses = [r["loss"] for r in trace if r["event"] == "step"]
    assert sum(losses[-10:]) < sum(losses[:10])


def test_run_folder_load_predict_evaluate(teacher_run, capsys) -> None:  # type: ignore[no-untyped-def]
    from kgdistill import cli
    from kgdistill.predict import predict
    from kgdistill.runs import load_run

    path = teacher_run.path
    for name in ("config.yaml", "entities.tsv", "relations.tsv", "trace.jsonl",
                 "checkpoints/last.pt", "model.safetensors", "model.json", "metrics.json", "meta.json"):
        assert (path / name).exists(), name
    run = load_run(path)
    assert run.model.entity_cache.shape[0] == run.dataset.num_entities  # cached encodings reloaded
    preds = predict(run.model, run.dataset, "affects", head="alga", k=5)
    assert len(preds) == 5 and preds[0].rank == 1
    assert cli.main(["predict", str(path), "--head", "alga", "--relation", "affects", "-k", "3"]) == 0
    assert cli.main(["evaluate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "mrr" in out
    m = json.loads((path / "metrics.json").read_text())
    assert m["encoder_layers"] == 3 and m["entity_encoding_per_s"] > 0


def test_resume_continues(umls_small: Path, tmp_path: Path) -> None:
    from kgdistill.text.trainer import resume_text

    cfg = base_config(umls_small, tmp_path / "r", steps=2)
    train_text(cfg)
    run = resume_text(tmp_path / "r", epochs=2)
    epochs = [r["epoch"] for r in run.trace() if r["event"] == "epoch"]
    assert epochs == [1, 2] and any(r["event"] == "resume" for r in run.trace())


METHOD_CASES = [("none", "input-mask"), ("logit", "input-mask"), ("patient", "input-mask"), ("pmd", "input-mask"),
                ("pmd", "feature-generator"), ("hrkd", "input-mask")]  # every text objective (test_registries)


@pytest.mark.parametrize("method,variant", METHOD_CASES)
def test_distillation_methods(teacher_run, umls_small: Path, tmp_path: Path, method: str, variant: str) -> None:  # type: ignore[no-untyped-def]
    cfg = base_config(umls_small, tmp_path / method, steps=3)
    cfg = replace(cfg, distill=DistillConfig(method=method, teacher=str(teacher_run.path), layers=[0, 2],
                                             mgfd_variant=variant, hrkd_meta_every=2, mask_rate=0.2))
    run = train_text(cfg)
    assert run.metrics["encoder_layers"] == 2
    assert run.metrics["num_parameters"] < teacher_run.metrics["num_parameters"]
    steps = [r for r in run.trace() if r["event"] == "step"]
    assert len(steps) == 3 and all(torch.isfinite(torch.tensor(r["loss"])) for r in steps)
    if method != "none":
        assert "logit" in steps[0]
    if method in ("patient", "pmd", "hrkd"):
        assert "feature" in steps[0] and steps[0]["feature"] >= 0
    if method == "hrkd":
        assert any("meta_val_ce" in r for r in steps)
    # the student starts from the teacher's layers 0 and 2
    assert run.model.num_layers == 2


def test_hrkd_domain_graph_is_trained(teacher_run) -> None:  # type: ignore[no-untyped-def]
    from kgdistill.distill.text_hrkd import HRKDObjective
    from kgdistill.text.students import make_student
    from kgdistill.text.textdata import KnownTails, make_batch, with_inverses

    teacher = teacher_run.model
    ds = teacher_run.dataset
    from kgdistill.text.biencoder import BiEncoder

    teacher = BiEncoder(**teacher.with_args(attn_implementation="eager"))
    teacher.load_state_dict(teacher_run.model.state_dict())
    student = make_student(teacher, [0, 2])
    cfg = TextRunConfig(distill=DistillConfig(method="hrkd", hrkd_meta_every=1, hrkd_meta_lr=1e-2),
                        training=TextTrainingConfig(lr=1e-3))
    examples = with_inverses(ds.train, ds.num_relations)
    known = KnownTails(examples, ds.num_entities, ds.num_relations)
    obj = HRKDObjective(student, teacher, cfg, known, [0, 2], holdout=ds.train[:64])
    before = [p.detach().clone() for p in obj.meta.parameters()]
    batch = make_batch(student.tokenizer, student.entity_texts, student.relation_texts, examples[:16], 20)
    loss, logs = obj.loss(batch, 0)
    assert torch.isfinite(loss) and {"ce", "logit", "feature"} <= set(logs)
    w = obj.weights(obj.forward(student, batch, output_hidden_states=True), obj.domains(batch))
    assert w.shape == (2, ds.num_relations) and torch.allclose(w.sum(-1), torch.ones(2))
    obj.after_step(batch, 0)
    changed = [not torch.equal(a, b) for a, b in zip(before, obj.meta.parameters())]
    assert sum(changed) >= len(changed) // 2  # the meta step moved the domain-relational graph


def test_cli_text_train_and_pmd_chain(umls_small: Path, teacher_run, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from kgdistill import cli

    common = ["--plm", TINY, "--max-length", "16", "--steps-per-epoch", "2", "--epochs", "1", "--batch-size", "32",
              "--self-negatives", "false", "--dataset", str(umls_small), "--set", "evaluation.eval_splits=[test]"]
    assert cli.main(["text-train", *common, "--out", str(tmp_path / "t")]) == 0
    assert cli.main(["text-distill", "--method", "pmd", "--teacher", str(teacher_run.path), "--grades",
                     "2,1", "--mask-rates", "0.2,0.1,0", *common, "--out", str(tmp_path / "pmd")]) == 0
    summary = json.loads((tmp_path / "pmd" / "pmd_summary.json").read_text())
    assert [s["layers"] for s in summary] == [3, 2, 1]
    assert [s["mask_rate"] for s in summary] == [0.2, 0.1, 0.0]
    assert summary[1]["teacher"] == summary[0]["run"]  # each grade learns from the previous one
    assert "run folder" in capsys.readouterr().out


def test_teacher_of_another_graph_of_the_same_size_is_refused(teacher_run, umls_small: Path, tmp_path: Path
                                                              ) -> None:  # type: ignore[no-untyped-def]
    """Same entity and relation counts but other ids (e.g. another subgraph seed): a clear error, not a silent
    distillation across graphs."""
    from kgdistill.errors import ConfigError
    from kgdistill.text.trainer import build_text_model

    dataset = load_dataset(str(umls_small))
    shuffled = replace(dataset, entities=list(reversed(dataset.entities)))
    config = replace(base_config(umls_small, tmp_path / "student"),
                     distill=DistillConfig(method="none", teacher=str(teacher_run.path), student_layers=2))
    student, _, _ = build_text_model(config, dataset)
    assert student.num_layers == 2
    with pytest.raises(ConfigError, match="another graph of the same size"):
        build_text_model(config, shuffled)


def test_cli_text_train_reads_a_text_config_file(teacher_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``text-train --config RUN/config.yaml`` repeats a run (flags still override): the YAML is read as a text
    config, not as a KGE one."""
    from kgdistill import cli
    from kgdistill.text.trainer import load_text_config

    assert cli.main(["text-train", "--config", str(teacher_run.path / "config.yaml"),
                     "--steps-per-epoch", "1", "--out", str(tmp_path / "again")]) == 0
    first, again = load_text_config(teacher_run.path / "config.yaml"), \
        load_text_config(tmp_path / "again" / "config.yaml")
    assert again.model == first.model and again.data == first.data
    assert again.training == replace(first.training, steps_per_epoch=1)


def test_keep_checkpoint_false_deletes_it_at_the_end(umls_small: Path, tmp_path: Path) -> None:
    """A finished run without its checkpoint: model and metrics stay, the folder is still refused as a new run's
    target, and resuming it says why it cannot."""
    from kgdistill.errors import RunFolderError
    from kgdistill.text.trainer import resume_text

    config = base_config(umls_small, tmp_path / "run", steps=2)
    config = replace(config, training=replace(config.training, keep_checkpoint=False))
    run = train_text(config)
    assert not (run.path / "checkpoints" / "last.pt").exists()
    assert (run.path / "model.safetensors").exists() and run.metrics["test"]["both"]["mrr"] > 0
    with pytest.raises(RunFolderError, match="already holds a run"):
        train_text(config)
    with pytest.raises(RunFolderError, match="keep_checkpoint false"):
        resume_text(run.path)
    kept = train_text(base_config(umls_small, tmp_path / "kept", steps=2))
    assert (kept.path / "checkpoints" / "last.pt").exists()


@pytest.mark.parametrize("method", ["logit", "patient"])
def test_cached_teacher_gives_the_same_loss_and_skips_seen_texts(teacher_run,  # type: ignore[no-untyped-def]
                                                                 method: str) -> None:
    """``cache_teacher``: the loss equals the uncached one (first sight and from the cache), and a batch of texts
    already seen does not run the teacher again; a batch mixing seen and new texts runs it on the new rows only."""
    from kgdistill.errors import ConfigError
    from kgdistill.text.objective import objectives
    from kgdistill.text.students import make_student
    from kgdistill.text.textdata import KnownTails, make_batch, with_inverses

    teacher, ds = teacher_run.model, teacher_run.dataset
    examples = with_inverses(ds.train, ds.num_relations)
    known = KnownTails(examples, ds.num_entities, ds.num_relations)
    student = make_student(teacher, [0, 2])
    student.eval()  # no dropout: two forwards of the student agree
    plain = objectives.get(method)(student, teacher, TextRunConfig(distill=DistillConfig(method=method)), known,
                                   [0, 2])
    cached = objectives.get(method)(student, teacher, TextRunConfig(distill=DistillConfig(method=method,
                                                                                          cache_teacher=True)),
                                    known, [0, 2])
    rows_seen: list[int] = []
    encode = teacher.encode

    def counting(which, inputs, **kw):  # type: ignore[no-untyped-def]
        rows_seen.append(int(inputs["input_ids"].shape[0]))
        return encode(which, inputs, **kw)

    teacher.encode = counting  # type: ignore[method-assign]
    try:
        batch = make_batch(student.tokenizer, student.entity_texts, student.relation_texts, examples[:16], 20)
        expected, logs = plain.loss(batch, 0)
        rows_seen.clear()
        first, _ = cached.loss(batch, 0)
        assert sum(rows_seen) > 0
        rows_seen.clear()
        again, logs_again = cached.loss(batch, 1)
        assert rows_seen == []  # every text of the batch was cached
        assert first.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
        assert again.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
        assert logs_again["logit"] == pytest.approx(logs["logit"], rel=1e-5, abs=1e-6)
        mixed = make_batch(student.tokenizer, student.entity_texts, student.relation_texts,
                           torch.cat([examples[:4], examples[1000:1004]]), 20)
        rows_seen.clear()
        cached.loss(mixed, 2)
        assert 0 < sum(rows_seen) < 3 * 8  # only the new (h, r) texts and entities went through the teacher
    finally:
        del teacher.encode
    with pytest.raises(ConfigError, match="cache_teacher"):
        objectives.get("pmd")(student, teacher, TextRunConfig(distill=DistillConfig(method="pmd", cache_teacher=True)),
                              known, [0, 2])


# ---- the text methods in the one distillation framework (kgdistill distill / kgdistill.distill) --------------------
#: every text method of kgdistill.distill.method.methods, run end to end by the ``distill`` command (test_registries)
DISTILL_METHODS = {"logit": ["--layers", "0,2", "--cache-teacher"], "patient": ["--layers", "0", "2"],
                   "hrkd": ["--layers", "0,2", "--hrkd-meta-every", "1"],
                   "pmd": ["--grades", "2", "--mask-rates", "0.2,0", "--mgfd-variant", "feature-generator"]}
DISTILL_COMMON = ["--plm", TINY, "--max-length", "16", "--steps-per-epoch", "2", "--epochs", "1", "--batch-size", "32",
                  "--no-self-negatives", "--eval-splits", "test", "--num-threads", "1", "--log-every", "1",
                  "--no-progress"]


@pytest.mark.parametrize("method", list(DISTILL_METHODS))
def test_cli_distill_runs_every_text_method(teacher_run, tmp_path: Path, capsys, method: str) -> None:  # type: ignore[no-untyped-def]
    """``kgdistill distill --method M`` on a text teacher: the graph is the teacher's (no --dataset), a single-stage
    method writes its run folder at --out, the PMD chain one folder per stage; summary.json / .md as for the
    embedding methods, the teacher's row first."""
    from kgdistill import cli, runs

    out = tmp_path / method
    assert cli.main(["distill", "--method", method, "--teacher", str(teacher_run.path), *DISTILL_COMMON,
                     *DISTILL_METHODS[method], "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == method and summary["rows"][0]["row"] == "teacher"
    assert (out / "summary.md").exists() and "teacher" in printed and "MRR" in printed
    folders = [Path(f) for f in summary["run_folders"]]
    if method == "pmd":
        assert [f.name for f in folders] == ["pmd-L3-m0.2", "pmd-L2-m0"]
        assert [s["layers"] for s in json.loads((out / "pmd_summary.json").read_text())] == [3, 2]
    else:
        assert folders == [out]
    student = runs.load_run(folders[-1])
    assert student.model.num_layers == 2 and student.dataset.num_entities == teacher_run.dataset.num_entities
    assert student.metrics["method"] == method
    steps = [r for r in student.trace() if r["event"] == "step"]
    assert len(steps) == 2 and "logit" in steps[0]
    if method != "logit":
        assert "feature" in steps[0]
    if method == "hrkd":
        assert any("meta_val_ce" in r for r in steps)
    # the same command through the text-distill alias (same options as before) trains the same student
    if method == "patient":
        alias = tmp_path / "alias"
        assert cli.main(["text-distill", "--method", method, "--teacher", str(teacher_run.path), "--dataset",
                         str(teacher_run.config.data.dataset), "--plm", TINY, "--max-length", "16",
                         "--steps-per-epoch", "2", "--epochs", "1", "--batch-size", "32", "--self-negatives", "false",
                         "--set", "evaluation.eval_splits=[test]", "--num-threads", "1", "--log-every", "1",
                         "--layers", "0,2", "--out", str(alias)]) == 0
        again = runs.load_run(alias)
        assert [again.metrics["test"][side] for side in ("both", "head", "tail")] == \
            [student.metrics["test"][side] for side in ("both", "head", "tail")]
        # distill reads such a text run config too (--config; --set and the flags override it)
        from_file = tmp_path / "from-file"
        assert cli.main(["distill", "--method", "pkd", "--teacher", str(teacher_run.path), "--config",
                         str(alias / "config.yaml"), "--set", "training.epochs=1", "--out", str(from_file)]) == 0
        assert [runs.load_run(from_file).metrics["test"][side] for side in ("both", "head", "tail")] == \
            [student.metrics["test"][side] for side in ("both", "head", "tail")]
        assert cli.main(["distill", "--method", "kd", "--teacher", str(teacher_run.path), "--config",
                         str(alias / "config.yaml"), "--out", str(tmp_path / "kd")]) == 2


def test_distill_api_runs_pmd_on_a_text_teacher(teacher_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``kgdistill.distill("pmd", teacher, out, ...)`` picks the text family by the teacher's model kind; options
    are the method's typed fields; an embedding method on this teacher is refused in one line."""
    import kgdistill
    from kgdistill.errors import ConfigError

    report = kgdistill.distill("pmd", teacher_run.path, tmp_path / "pmd", plm=TINY, max_length=16, steps_per_epoch=2,
                               epochs=1, batch_size=32, self_negatives=False, eval_splits=["test"], num_threads=1,
                               layers=[0, 2], mask_rate=0.1, log_every=1)
    assert report.method == "pmd" and [r.path for r in report.results] == [tmp_path / "pmd"]
    assert report.config.mask_rate == 0.1 and report.rows[0]["row"] == "teacher"
    run = report.results[0]
    assert run.model.num_layers == 2 and run.metrics["method"] == "pmd"
    assert "MRR" in report.table() and (tmp_path / "pmd" / "summary.json").exists()
    text_config = (tmp_path / "pmd" / "config.yaml").read_text()
    assert "mask_rate: 0.1" in text_config and "method: pmd" in text_config
    with pytest.raises(ConfigError, match="distils embedding models.*is a text run.*pmd"):
        kgdistill.distill("kd", teacher_run.path, tmp_path / "kd", dims=[4])
    assert not (tmp_path / "kd").exists()
    with pytest.raises(ConfigError, match="pmd: unknown option 'sparsity'"):
        kgdistill.distill("pmd", teacher_run.path, tmp_path / "bad", sparsity=0.5)
