"""The distiller core, MetaSD's meta step and quiz split, an end-to-end distillation and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from kgdistill import runs
from kgdistill.cli import main
from kgdistill.config import DataConfig, EvaluationConfig, ModelConfig, RunConfig, TrainingConfig
from kgdistill.data.triples import KGDataset
from kgdistill.distill import distill, terms
from kgdistill.distill.distiller import DistillModel, Distiller, LossTerm
from kgdistill.distill.metasd import MetaSDConfig, MetaSDStep, queries_of, split_quiz
from kgdistill.distill.pruning import PrunedModel
from kgdistill.distill.schedules import make_schedule
from kgdistill.distill.benchmark import benchmark, check_teacher
from kgdistill.distill.stage import make_student
from kgdistill.evaluate import evaluate
from kgdistill.models.embedding import EmbeddingModel
from kgdistill.training.loop import Trainer


def _trainer(model, dataset: KGDataset, step, **cfg) -> Trainer:
    config = TrainingConfig(**{"epochs": 1, "batch_size": 16, "eval_every": 0, "patience": 0,
                               "adversarial_temperature": 0.0, **cfg})
    return Trainer(model, dataset, config, step_loss=step)


def test_distiller_combines_weighted_terms_and_freezes_teacher(tiny_kg: KGDataset) -> None:
    torch.manual_seed(0)
    teacher = EmbeddingModel("distmult", tiny_kg.num_entities, tiny_kg.num_relations, 16)
    student = make_student(teacher, 4, seed=1)
    const = LossTerm("const", lambda ctx: torch.tensor(2.0), make_schedule("constant", 0.25))
    huber = LossTerm("huber", lambda ctx: terms.huber_scores(ctx.student.candidates, ctx.teacher.candidates))
    d = Distiller(student, teacher, [const, huber])
    tr = _trainer(DistillModel(student), tiny_kg, d, num_negatives=4)
    d.bind(tr)
    batch = tiny_kg.train[:8]
    gen = torch.Generator().manual_seed(3)
    total = d(tr.model, batch, gen)
    assert all(not p.requires_grad for p in teacher.parameters()) and not teacher.training
    # recompute by hand with the same negatives
    neg, _ = tr.sampler.sample(batch, torch.Generator().manual_seed(3))
    from kgdistill.training.steps import negative_sampling_scores

    sp, sn, _ = negative_sampling_scores(student, batch, neg, None, tr.sampler.num_head_negatives)
    tp, tn, _ = negative_sampling_scores(teacher, batch, neg, None, tr.sampler.num_head_negatives)
    expected = tr.loss_fn(sp, sn) + 0.25 * 2.0 + terms.huber_scores(torch.cat([sp[:, None], sn], 1),
                                                                   torch.cat([tp[:, None], tn], 1))
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    total.backward()
    assert student.entity.grad is not None and teacher.entity.grad is None


def _metasd_parts(tiny_kg: KGDataset, **cfg):
    torch.manual_seed(0)
    base = EmbeddingModel("complex", tiny_kg.num_entities, tiny_kg.num_relations, 8, reciprocal=True)
    model = PrunedModel(base)
    config = MetaSDConfig(**{"sparsity": 0.5, "quiz_fraction": 0.2, "seed": 5, **cfg})
    supervised, quiz = split_quiz(tiny_kg.train, config.quiz_fraction, config.seed)
    train_ds = KGDataset("tiny", tiny_kg.entities, tiny_kg.relations, {**tiny_kg.splits, "train": supervised})
    step = MetaSDStep(model, config, quiz)
    tr = Trainer(model, train_ds, TrainingConfig(training_mode="1vsall", epochs=3, batch_size=16, optimizer="adagrad",
                                                 lr=0.1, eval_every=0, patience=0), step_loss=step)
    step.bind(tr)
    return model, step, tr, supervised, quiz


def test_meta_step_updates_teacher_through_lookahead(tiny_kg: KGDataset) -> None:
    model, step, tr, supervised, _ = _metasd_parts(tiny_kg)
    model.update_masks(0.5)
    before = model.base.entity.detach().clone()
    q = queries_of(supervised[:8], tiny_kg.num_relations)
    step.meta_step(q)
    assert not torch.equal(before, model.base.entity.detach())  # the quiz loss moved the dense (teacher) tables
    assert model.base.entity.grad is None  # the meta step leaves no gradient behind for the trainer's step
    # the second-order path: with the KD term the quiz gradient differs from a plain first-order one
    dense = step.dense_params()
    masked = model.masked_params(dense)
    s_loss, s = step.supervised(masked, q)
    inner = s_loss + step.kd(s, step.scores(dense, q))
    g = torch.autograd.grad(inner, list(masked.values()), create_graph=True)
    assert g[0].requires_grad  # the lookahead keeps the graph (create_graph)


def test_quiz_never_in_supervised_loss_and_mask_changes(tiny_kg: KGDataset) -> None:
    model, step, tr, supervised, quiz = _metasd_parts(tiny_kg)
    step.record_batches = True
    tr.run_dir = None
    masks = []
    for epoch in range(1, 4):
        tr.train_epoch(epoch)
        tr.state.epoch = epoch
        masks.append(model.entity_mask.clone())
    key = lambda t: {tuple(x) for x in t.tolist()}  # noqa: E731
    quiz_q, sup_q = key(queries_of(quiz, tiny_kg.num_relations)), key(queries_of(supervised, tiny_kg.num_relations))
    assert key(torch.cat(step.supervised_seen)) <= sup_q
    assert not key(torch.cat(step.supervised_seen)) & quiz_q
    assert key(torch.cat(step.quiz_seen)) <= quiz_q
    assert len(quiz) == math.ceil(0.2 * len(tiny_kg.train)) and not key(quiz) & key(supervised)  # disjoint
    n = model.entity_mask.numel() + model.relation_mask.numel()
    assert int(model.entity_mask.sum() + model.relation_mask.sum()) == n - round(0.5 * n)  # exact sparsity
    assert any(not torch.equal(masks[0], m) for m in masks[1:])  # recomputed every epoch, and it moves


@pytest.mark.parametrize("reciprocal", [True, False])
def test_metasd_sampled_candidates(tiny_kg: KGDataset, reciprocal: bool) -> None:
    """num_candidates=K: CE over the batch's targets and K sampled entities (shared), scores = 1-N scores' columns."""
    model, step, tr, supervised, _ = _metasd_parts(tiny_kg, num_candidates=5)
    if not reciprocal:
        model.base.reciprocal = False
    q = queries_of(supervised[:8], tiny_kg.num_relations)
    cands = step.candidates(q)
    assert cands.shape == (16 + 5,) and torch.equal(cands[:16], q[:, 2])
    dense = step.dense_params()
    full = step.scores(dense, q)
    torch.testing.assert_close(step.scores(dense, q, cands), full[:, cands])
    loss, _ = step.supervised(dense, q, cands)
    expected = torch.nn.functional.cross_entropy(full[:, cands], torch.arange(16))
    assert loss.item() == pytest.approx(expected.item() + step.reg(dense, q).item(), rel=1e-5)
    model.update_masks(0.5)
    before = model.base.entity.detach().clone()
    tr.run_dir = None
    tr.train_epoch(1)  # the whole step (supervised, meta, mutual) runs on sampled candidates
    assert not torch.equal(before, model.base.entity.detach())


def test_metasd_sampled_step_on_touched_rows_equals_full_tables(tiny_kg: KGDataset, monkeypatch) -> None:
    """The step on the gathered rows (row-sparse Adagrad) leaves the same weights as the step on whole tables."""
    weights = []
    for local in (True, False):
        model, step, tr, _, _ = _metasd_parts(tiny_kg, num_candidates=4)
        if not local:
            monkeypatch.setattr(step, "touched_rows", lambda *batches: (None, list(batches)))
        assert step.row_sparse_updates()
        model.update_masks(0.5)
        tr.run_dir = None
        tr.train_epoch(1)
        weights.append((model.base.entity.detach().clone(), model.base.relation.detach().clone()))
    torch.testing.assert_close(weights[0][0], weights[1][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(weights[0][1], weights[1][1], rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def kinship_teacher(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("distill") / "teacher"
    cfg = RunConfig(data=DataConfig(dataset="kinship"), model=ModelConfig(model="complex", dim=32),
                    training=TrainingConfig(training_mode="1vsall", optimizer="adagrad", lr=0.1, regularizer="n3",
                                            regularizer_weight=0.01, epochs=30, batch_size=256, eval_every=0,
                                            patience=0),
                    evaluation=EvaluationConfig(eval_splits=["test"]), output_dir=str(out), progress=False)
    runs.train(cfg)
    return out


def test_iterde_student_beats_scratch_student(kinship_teacher: Path, tmp_path: Path) -> None:
    """Seeded, mean over 3 seeds: an 8-dim sLCWA student distilled from a 32-dim 1-N teacher (5 epochs) vs the same
    student trained from scratch for the same 5 epochs (dry run, seeds 1-2: 0.505, 0.459 vs 0.345, 0.327 MRR)."""
    common = dict(dims=[8], epochs=5, training_mode="slcwa", num_negatives=32, eval_every=0, with_teacher_row=False)
    scratch, iterde = [], []
    for seed in (1, 2, 3):
        scratch.append(distill("scratch", kinship_teacher, tmp_path / f"s{seed}", seed=seed, **common).rows[-1]["MRR"])
        iterde.append(distill("iterde", kinship_teacher, tmp_path / f"i{seed}", seed=seed, **common).rows[-1]["MRR"])
    assert sum(iterde) / 3 > sum(scratch) / 3 + 0.05, (iterde, scratch)


#: every distillation method and the options of its CLI run below (test_registries checks the list is complete)
CLI_METHODS = {"iterde": ["--dims", "4,2"], "kd": ["--dims", "4"], "kd-huber": ["--dims", "4"],
               "dualde": ["--dims", "4", "--num-negatives", "4"],
               "metasd": ["--sparsity", "0.8", "--pruning", "global"],
               "iterde-metasd": ["--dims", "4"], "scratch": ["--dims", "4"]}


def test_cli_distill_all_methods(tmp_path: Path, capsys) -> None:
    teacher = tmp_path / "teacher"
    assert main(["train", "--dataset", "nations", "--model", "complex", "--dim", "8", "--training-mode", "1vsall",
                 "--optimizer", "adagrad", "--lr", "0.1", "--epochs", "2", "--eval-every", "0", "--out",
                 str(teacher), "--progress", "false"]) == 0
    out = tmp_path / "iterde"
    assert main(["distill", "--method", "iterde", "--teacher", str(teacher), *CLI_METHODS["iterde"], "--epochs", "1",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "iterde-8-4" in printed and "iterde-4-2" in printed and "queries/s" in printed
    for stage in ("iterde-8-4", "iterde-4-2"):
        folder = out / stage
        for name in ("config.yaml", "distill.yaml", "entities.tsv", "relations.tsv", "trace.jsonl", "metrics.json",
                     "model.safetensors", "model.json", "checkpoints/last.pt"):
            assert (folder / name).exists(), name
    assert main(["evaluate", str(out / "iterde-4-2")]) == 0
    assert runs.load_run(out / "iterde-4-2").model.dim == 2
    for method, extra in CLI_METHODS.items():
        if method == "iterde":
            continue
        assert main(["distill", "--method", method, "--teacher", str(teacher), "--epochs", "1", "--out",
                     str(tmp_path / method), *extra]) == 0, method
    summary = json.loads((tmp_path / "metasd" / "summary.json").read_text())
    pruned = summary["rows"][-1]
    assert pruned["nonzero"] == pruned["params"] - round(0.8 * pruned["params"])
    assert pruned["bytes"] < 0.5 * summary["rows"][0]["bytes"]
    assert (tmp_path / "metasd" / "metasd-8-s0.8" / "sparse" / "model.sparse.safetensors").exists()
    # an option the method does not have is a clear error (exit code 2)
    assert main(["distill", "--method", "kd", "--teacher", str(teacher), "--sparsity", "0.5", "--out",
                 str(tmp_path / "bad")]) == 2
    assert "options of this method" in capsys.readouterr().err
    # a text method on this embedding teacher: one line naming the methods that fit, no folder left behind
    assert main(["distill", "--method", "pmd", "--teacher", str(teacher), "--out", str(tmp_path / "text")]) == 2
    err = capsys.readouterr().err
    assert "method 'pmd' distils text models, but" in err and "is an embedding run (model 'complex')" in err
    assert "kd" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "text").exists()
    from kgdistill.errors import ConfigError

    with pytest.raises(ConfigError, match="'patient' distils text models, but .* is an embedding run"):
        distill("patient", teacher, tmp_path / "text")


def test_stage_training_presets_follow_the_mode_change() -> None:
    """A 1-N stage from a sampled-loss teacher takes Adagrad 0.1, an sLCWA stage from a 1-N teacher a sampled loss;
    the user's options win over both."""
    from types import SimpleNamespace

    from kgdistill.distill.method import CommonConfig, stage_training
    from kgdistill.distill.metasd import MetaSDConfig

    def run(mode: str):
        cfg = RunConfig(data=DataConfig(dataset="kinship"), model=ModelConfig(model="transe", dim=8),
                        training=TrainingConfig(training_mode=mode, optimizer="adam", lr=1e-3, loss="nssa"))
        return SimpleNamespace(config=cfg, model=EmbeddingModel("transe", 4, 2, 8))

    one_n = stage_training(run("slcwa"), MetaSDConfig(), mode="1vsall")
    assert (one_n.training_mode, one_n.optimizer, one_n.lr) == ("1vsall", "adagrad", 0.1)
    mine = stage_training(run("slcwa"), MetaSDConfig(optimizer="adam", lr=0.01), mode="1vsall")
    assert (mine.optimizer, mine.lr) == ("adam", 0.01)
    same = stage_training(run("slcwa"), CommonConfig(), mode="slcwa")
    assert (same.optimizer, same.lr, same.loss) == ("adam", 1e-3, "nssa")
    sampled = stage_training(run("1vsall"), CommonConfig(), mode="slcwa")
    assert (sampled.loss, sampled.margin, sampled.optimizer) == ("nssa", 6.0, "adam")


def test_resume_check_reads_a_later_added_option_as_its_default(tmp_path: Path) -> None:
    import yaml

    from kgdistill.distill.stage import _check_same_stage
    from kgdistill.errors import ConfigError

    saved = {k: v for k, v in json.loads(json.dumps(MetaSDConfig().__dict__)).items() if k != "num_candidates"}
    (tmp_path / "distill.yaml").write_text(yaml.safe_dump({"method": "metasd", "stage": "s", "config": saved}))
    _check_same_stage(tmp_path, "s", "metasd", MetaSDConfig())  # the new option at its default: same stage
    with pytest.raises(ConfigError, match="num_candidates"):
        _check_same_stage(tmp_path, "s", "metasd", MetaSDConfig(num_candidates=8))
    with pytest.raises(ConfigError, match="sparsity"):
        _check_same_stage(tmp_path, "s", "metasd", MetaSDConfig(sparsity=0.5))


def test_iterde_soft_loss_choice() -> None:
    """The released Huber term (``soft_loss="huber"``); ``"kl"`` (the default) is KD's KL, at weight 1 even for
    TransE."""
    from kgdistill.distill.distiller import Scores, StepContext
    from kgdistill.distill.iterde import IterDEConfig, iterde_term, soft_weight
    from kgdistill.errors import ConfigError

    torch.manual_seed(0)
    s, t = Scores(pos=torch.randn(3), neg=torch.randn(3, 4)), Scores(pos=torch.randn(3), neg=torch.randn(3, 4))
    ctx = StepContext(torch.zeros(3, 3, dtype=torch.long), s, t, 1, 2)
    huber = iterde_term(IterDEConfig(soft_loss="huber"), 1.0)
    assert huber.name == "soft_huber"
    assert IterDEConfig().soft_loss == "kl" and IterDEConfig().temperature == 1.0
    assert IterDEConfig().schedule == "constant"  # measured ahead of the release's swda (BENCHMARKS.md)
    assert iterde_term(IterDEConfig(), 1.0).schedule.weight(1, 10) == 1.0
    swda = iterde_term(IterDEConfig(schedule="swda"), 1.0).schedule  # the release's, as an option
    assert swda.weight(1, 10, 0.5, 0.5) == pytest.approx(1.0 / 2.5)
    assert huber.fn(ctx).item() == pytest.approx(terms.huber_scores(s.candidates, t.candidates).item())
    kl = iterde_term(IterDEConfig(soft_loss="kl", temperature=3.0), 1.0)
    assert kl.name == "soft_kl"
    assert kl.fn(ctx).item() == pytest.approx(terms.kl_with_temperature(s.candidates, t.candidates, 3.0).item())
    assert soft_weight(IterDEConfig(soft_loss="huber"), "transe", 0, 4) == 0.001
    assert soft_weight(IterDEConfig(soft_loss="kl"), "transe", 0, 4) == 1.0
    with pytest.raises(ConfigError, match="soft_loss"):
        iterde_term(IterDEConfig(soft_loss="mse"), 1.0)


def test_multi_teacher_kd_scores_every_teacher_on_the_same_candidates(tiny_kg: KGDataset) -> None:
    torch.manual_seed(0)
    teacher = EmbeddingModel("distmult", tiny_kg.num_entities, tiny_kg.num_relations, 16)
    other = EmbeddingModel("transe", tiny_kg.num_entities, tiny_kg.num_relations, 8)
    student = make_student(teacher, 4, seed=1)
    seen = []

    def ensemble(ctx):  # type: ignore[no-untyped-def]
        seen.append(ctx)
        return terms.ensemble_kl(ctx.student.candidates, [ctx.teacher.candidates,
                                                           *(t.candidates for t in ctx.more_teachers)])

    d = Distiller(student, teacher, [LossTerm("kd", ensemble)], more_teachers=[other])
    tr = _trainer(DistillModel(student), tiny_kg, d, num_negatives=4)
    d.bind(tr)
    batch = tiny_kg.train[:8]
    d(tr.model, batch, torch.Generator().manual_seed(3)).backward()
    assert all(not p.requires_grad for p in other.parameters()) and not other.training and other.entity.grad is None
    neg, _ = tr.sampler.sample(batch, torch.Generator().manual_seed(3))
    from kgdistill.training.steps import negative_sampling_scores

    op, on, _ = negative_sampling_scores(other, batch, neg, None, tr.sampler.num_head_negatives)
    assert len(seen[0].more_teachers) == 1
    assert torch.allclose(seen[0].more_teachers[0].candidates, torch.cat([op[:, None], on], 1))


def test_cli_multi_teacher_kd(tmp_path: Path, capsys) -> None:
    """``--more-teachers``: two teachers of other kinds and sizes on one graph; refused for another graph and for the
    Huber soft loss; the option is recorded with the stage."""
    common = ["--dataset", "nations", "--training-mode", "1vsall", "--optimizer", "adagrad", "--lr", "0.1",
              "--epochs", "3", "--eval-every", "0", "--progress", "false"]
    a, b, c = tmp_path / "complex", tmp_path / "distmult", tmp_path / "kinship"
    assert main(["train", *common, "--model", "complex", "--dim", "16", "--out", str(a)]) == 0
    assert main(["train", *common, "--model", "distmult", "--dim", "8", "--out", str(b)]) == 0
    out = tmp_path / "kd2"
    assert main(["distill", "--method", "kd", "--teacher", str(a), "--more-teachers", str(b), "--dims", "4",
                 "--epochs", "2", "--out", str(out)]) == 0
    import yaml

    saved = yaml.safe_load((out / "kd-4" / "distill.yaml").read_text())
    assert saved["config"]["more_teachers"] == [str(b)]
    single = distill("kd", a, tmp_path / "kd1", dims=[4], epochs=2, with_teacher_row=False)
    two = runs.load_run(out / "kd-4").model
    assert not torch.allclose(single.results[-1].model.entity, two.entity)  # the second teacher changed the targets
    capsys.readouterr()
    assert main(["train", "--dataset", "kinship", "--model", "distmult", "--dim", "4", "--epochs", "1",
                 "--eval-every", "0", "--progress", "false", "--out", str(c)]) == 0
    assert main(["distill", "--method", "kd", "--teacher", str(a), "--more-teachers", str(c), "--dims", "4",
                 "--epochs", "1", "--out", str(tmp_path / "bad")]) == 2
    assert "teachers must share the graph" in capsys.readouterr().err
    assert main(["distill", "--method", "kd", "--teacher", str(a), "--more-teachers", str(b), "--kd-loss", "huber",
                 "--epochs", "1", "--out", str(tmp_path / "bad2")]) == 2
    assert "needs kd_loss kl" in capsys.readouterr().err


def test_students_are_evaluated_on_test_when_the_teacher_config_lists_valid_only(tmp_path: Path) -> None:
    """A teacher trained with ``eval_splits [valid]`` (test evaluated afterwards, as the FB15k-237 reference teacher
    was) used to give students without a test row: the leaderboard's MRR came out empty."""
    teacher = tmp_path / "teacher"
    cfg = RunConfig(data=DataConfig(dataset="nations"), model=ModelConfig(model="distmult", dim=8),
                    training=TrainingConfig(epochs=1, batch_size=64, eval_every=0, patience=0),
                    evaluation=EvaluationConfig(eval_splits=["valid"]), output_dir=str(teacher), progress=False)
    runs.train(cfg)
    result = distill("scratch", teacher, tmp_path / "scratch", dims=[4], epochs=1)
    assert result.rows[-1]["MRR"] is not None
    # the teacher's row is evaluated on test now (its metrics.json has valid only), and check_teacher accepts it
    loaded = runs.load_run(teacher)
    assert "test" not in loaded.metrics and result.rows[0]["row"] == "teacher"
    expected = evaluate(loaded.model, loaded.dataset, "test").summary()["both"]["mrr"]
    assert result.rows[0]["MRR"] == pytest.approx(expected)
    assert check_teacher(teacher).metrics["test"]["both"]["mrr"] == pytest.approx(expected)
    board = benchmark(teacher, tmp_path / "bench", methods=["scratch"], dims=[4], seeds=1, epochs=1, progress=False)
    assert board.teacher["MRR"] == pytest.approx(expected)
    stage = json.loads(next((tmp_path / "scratch").glob("*/metrics.json")).read_text())
    assert {"valid", "test"} <= set(stage)
