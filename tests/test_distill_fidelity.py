"""The released behaviour and the default of every KGE method option that deviates from a release (issue 14):
DualDE's hard/soft weighting and its 1-N form, MetaSD's init / lookahead / quiz set / KL direction / pruning /
ramp, IterDE's SWDA weight, Huber reduction and last margin, the matched KD-Huber baseline, teacher-derived
defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kgdistill.config import TrainingConfig
from kgdistill.data.triples import KGDataset
from kgdistill.distill import terms
from kgdistill.distill.distiller import Scores, StepContext, query_scores, \
    structure_of_queries
from kgdistill.distill.dualde import DualDEConfig, SoftLabelEvaluator, label_view, negative_weights, \
    soft_label_loss, stage_terms
from kgdistill.distill.iterde import IterDEConfig, chain, huber_soft, iterde_term, release_swda
from kgdistill.distill.kd import KDConfig, KDHuberConfig, kd_term
from kgdistill.distill.method import make_config, methods
from kgdistill.distill.metasd import MetaSDConfig, MetaSDStep, dense_dim, queries_of, ramp_epochs, split_quiz
from kgdistill.distill.pruning import PrunedModel, coordinate_magnitude_masks, row_magnitude_masks
from kgdistill.errors import ConfigError
from kgdistill.models.embedding import EmbeddingModel
from kgdistill.training.loop import Trainer


# ---- DualDE -----------------------------------------------------------------------------------------------------
def _one_n_scores(tiny_kg: KGDataset, dim: int, seed: int) -> tuple[EmbeddingModel, torch.Tensor]:
    torch.manual_seed(seed)
    model = EmbeddingModel("complex", tiny_kg.num_entities, tiny_kg.num_relations, dim, reciprocal=True)
    return model, queries_of(tiny_kg.train[:6], tiny_kg.num_relations)


def test_structure_of_queries_equals_the_rows_of_every_triple(tiny_kg: KGDataset) -> None:
    model, q = _one_n_scores(tiny_kg, 4, 0)
    st = structure_of_queries(model, q)
    R = tiny_kg.num_relations
    for i in range(q.shape[0]):
        a, r, t = q[i].tolist()
        for e in range(tiny_kg.num_entities):
            h_id, t_id = (a, e) if r < R else (e, a)  # an inverse query's answer is the head
            cos, ratio = terms.structure_features(model.entity[h_id], model.entity[t_id])
            assert st.cos_neg[i, e].item() == pytest.approx(cos.item(), abs=1e-5)
            assert st.ratio_neg[i, e].item() == pytest.approx(ratio.item(), rel=1e-5)
        assert st.cos_pos[i] == st.cos_neg[i, t] and st.ratio_pos[i] == st.ratio_neg[i, t]


def test_dualde_one_n_view_excludes_the_target_from_the_negatives(tiny_kg: KGDataset) -> None:
    model, q = _one_n_scores(tiny_kg, 4, 0)
    s = query_scores(model, q)
    view = label_view(s, q)
    w = negative_weights(view, 1.0)
    assert torch.all(w.gather(1, q[:, 2:3]) == 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(q.shape[0]))


def _dualde_pair(tiny_kg: KGDataset) -> tuple[Scores, Scores, torch.Tensor]:
    student, q = _one_n_scores(tiny_kg, 4, 0)
    teacher, _ = _one_n_scores(tiny_kg, 8, 1)
    return query_scores(student, q, with_structure=True), query_scores(teacher, q, with_structure=True), q


def test_dualde_additive_is_the_trusted_soft_part_only(tiny_kg: KGDataset) -> None:
    """additive: ½ (mean p⁺ d⁺ + mean Σ w (1 - p⁻) d⁻), no hard part (the distiller adds the hard loss at 1)."""
    s, t, q = _dualde_pair(tiny_kg)
    ev = SoftLabelEvaluator()
    got = soft_label_loss(s, t, ev, False, 1.0, q, "additive")
    view, label = label_view(s, q), label_view(t, q)
    d_pos = terms.dualde_score_distance(s.pos, t.pos)
    d_neg = terms.dualde_score_distance(s.all, t.all)
    p_pos, p_neg = torch.sigmoid(label.pos), torch.sigmoid(label.neg)
    w = negative_weights(view, 1.0)
    want = 0.5 * ((p_pos * d_pos).mean() + (w * (1 - p_neg) * d_neg).sum(-1).mean())
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    eq10 = soft_label_loss(s, t, ev, False, 1.0, q, "eq10")
    assert eq10.item() > got.item()  # eq. 10 adds the (1 - p)-weighted hard labels


def test_dualde_release_weighting_trains_the_evaluator_through_the_mixture(tiny_kg: KGDataset) -> None:
    s, t, q = _dualde_pair(tiny_kg)
    for mode, reaches in (("release", True), ("eq10", False), ("additive", False)):
        ev = SoftLabelEvaluator()
        loss = soft_label_loss(s, t, ev, True, 1.0, q, mode)
        grads = torch.autograd.grad(loss, [ev.a, ev.b], allow_unused=True)
        assert (grads[0] is not None) == reaches, mode
    # the release reuses the positive's p for every negative: the loss equals eq. 10 with p⁻ := p⁺
    ev = SoftLabelEvaluator()
    view, label = label_view(s, q), label_view(t, q)
    d_pos = terms.dualde_score_distance(s.pos, t.pos)
    d_neg = terms.dualde_score_distance(s.all, t.all)
    p = torch.sigmoid(label.pos)
    want = terms.dualde_soft_label_loss(d_pos, d_neg, view.pos, view.neg, p, p[:, None].expand_as(d_neg),
                                        negative_weights(view, 1.0))
    assert soft_label_loss(s, t, ev, False, 1.0, q, "release").item() == pytest.approx(want.item(), rel=1e-5)


def test_dualde_terms_per_weighting() -> None:
    ev_t, ev_s = SoftLabelEvaluator(), SoftLabelEvaluator()
    names = lambda mode: [t.name for t in stage_terms(DualDEConfig(weighting=mode), ev_t, ev_s, False)]  # noqa
    assert names("additive") == ["soft_student", "calibration_t", "soft_teacher", "calibration_s", "hard_teacher"]
    assert names("release") == ["soft_student", "soft_teacher"]
    assert DualDEConfig().weighting == "additive" and DualDEConfig().soft_weight == pytest.approx(0.3)
    with pytest.raises(ConfigError, match="weighting"):
        stage_terms(DualDEConfig(weighting="nope"), ev_t, None, False)


# ---- MetaSD -----------------------------------------------------------------------------------------------------
def _metasd(tiny_kg: KGDataset, **cfg) -> tuple[PrunedModel, MetaSDStep, torch.Tensor]:
    torch.manual_seed(0)
    base = EmbeddingModel("complex", tiny_kg.num_entities, tiny_kg.num_relations, 8, reciprocal=True)
    model = PrunedModel(base)
    config = MetaSDConfig(**{"sparsity": 0.5, "quiz_fraction": 0.2, "seed": 5, "sparsity_ramp_epochs": 0, **cfg})
    supervised, quiz = split_quiz(tiny_kg.train, config.quiz_fraction, config.seed)
    step = MetaSDStep(model, config, quiz)
    tr = Trainer(model, tiny_kg, TrainingConfig(training_mode="1vsall", epochs=3, batch_size=16,
                                                optimizer="adagrad", lr=0.1, eval_every=0, patience=0),
                 step_loss=step)
    step.bind(tr)
    model.update_masks(0.5)
    return model, step, queries_of(supervised[:8], tiny_kg.num_relations)


def test_metasd_defaults_follow_the_release_but_prune_whole_coordinates() -> None:
    c = MetaSDConfig()
    assert (c.init, c.lookahead, c.quiz, c.mutual_kl) == ("scratch", "copy", "set", "release")
    assert c.pruning == "dims" and ramp_epochs(60, "dims") == 0  # the measured default (BENCHMARKS.md)
    assert ramp_epochs(60, "global") == ramp_epochs(60) == 40
    assert make_config("iterde-metasd", {}).pruning == "global"  # the combination as measured


@pytest.mark.parametrize("lookahead", ["copy", "live"])
def test_metasd_lookahead_copy_reaches_the_teacher_only_through_kd(tiny_kg: KGDataset, lookahead: str) -> None:
    """Without KD in the lookahead (both KL weights 0), a copied S' has no path to the dense tables: the meta step
    leaves them unchanged; built from the live tables, the first-order quiz gradient moves them."""
    model, step, q = _metasd(tiny_kg, lookahead=lookahead, kl_forward=0.0, kl_reverse=0.0)
    before = model.base.entity.detach().clone()
    step.meta_step(q)
    moved = not torch.equal(before, model.base.entity.detach())
    assert moved == (lookahead == "live")
    model, step, q = _metasd(tiny_kg, lookahead=lookahead)  # with KD: the second-order path moves them
    before = model.base.entity.detach().clone()
    step.meta_step(q)
    assert not torch.equal(before, model.base.entity.detach())


def test_metasd_quiz_set_or_batch(tiny_kg: KGDataset) -> None:
    _, step, q = _metasd(tiny_kg, quiz="set")
    assert torch.equal(step.quiz_batch(q), step.quiz_queries)
    _, step, q = _metasd(tiny_kg, quiz="batch")
    assert step.quiz_batch(q).shape[0] == min(q.shape[0], step.quiz_queries.shape[0])


def test_metasd_mutual_kl_direction(tiny_kg: KGDataset) -> None:
    torch.manual_seed(0)
    a, b = torch.randn(4, 7), torch.randn(4, 7)
    _, release, _ = _metasd(tiny_kg, mutual_kl="release")
    _, same, _ = _metasd(tiny_kg, mutual_kl="same")
    log_a, log_b = F.log_softmax(a / 3, -1), F.log_softmax(b / 3, -1)
    kl_b_a = (log_b.exp() * (log_b - log_a)).sum(-1).mean()  # KL(target || learner)
    kl_a_b = (log_a.exp() * (log_a - log_b)).sum(-1).mean()  # KL(learner || target)
    assert release.mutual_kd(a, b).item() == pytest.approx((3 * kl_a_b + kl_b_a).item(), rel=1e-5)
    assert same.mutual_kd(a, b).item() == pytest.approx((3 * kl_b_a + kl_a_b).item(), rel=1e-5)
    assert same.kd(a, b).item() == release.kd(a, b).item()  # the lookahead's KD is the same in both


def test_metasd_teacher_weight_adds_the_teachers_kl_to_the_pruned_branch(tiny_kg: KGDataset) -> None:
    """``teacher_weight`` w (beyond the paper) adds ``w · KL(softmax(teacher) || softmax(pruned))`` to the mutual
    step; at 0 (released) the step never reads the teacher."""
    from kgdistill.training.steps import score_queries

    torch.manual_seed(1)
    teacher = EmbeddingModel("complex", tiny_kg.num_entities, tiny_kg.num_relations, 8, reciprocal=True)
    losses = {}
    for w in (0.0, 2.0):  # no supervised step, no meta step: the call only returns the mutual loss
        model, step, q = _metasd(tiny_kg, teacher_weight=w, supervised_step=False, meta_every=2)
        step.teacher, step.batches = (teacher if w else None), 1
        losses[w] = step(model, q, torch.Generator()).item()
    with torch.no_grad():
        s = model.call(model.masked_params(), "queries", q[:, 0], q[:, 1])
        log_s, log_t = F.log_softmax(s, -1), F.log_softmax(score_queries(teacher, q[:, 0], q[:, 1]), -1)
        kl = (log_t.exp() * (log_t - log_s)).sum(-1).mean().item()
    assert kl > 0 and losses[2.0] - losses[0.0] == pytest.approx(2.0 * kl, rel=1e-4)
    assert MetaSDConfig().teacher_weight == 6.0  # the measured default; 0 is the release
    with pytest.raises(ConfigError, match="teacher_weight"):
        from kgdistill.distill.metasd import check_config
        check_config(MetaSDConfig(teacher_weight=-1.0))


def test_row_pruning_keeps_the_same_count_in_every_row() -> None:
    torch.manual_seed(0)
    e, r = torch.randn(10, 8), torch.randn(3, 8)
    e[0] *= 1e-3  # a row of small entries: global pruning would empty it, row pruning keeps 2 entries
    me, mr = row_magnitude_masks([e, r], 0.75)
    assert me.sum(-1).tolist() == [2] * 10 and mr.sum(-1).tolist() == [2] * 3
    top = torch.topk(e[3].abs(), 2).indices
    assert me[3, top].all()


def test_dims_pruning_keeps_whole_coordinates_of_the_largest_importance() -> None:
    """ComplEx rows are [re | im]: coordinate i is columns i and i + dim in both tables."""
    e, r = torch.full((5, 8), 0.1), torch.full((3, 8), 0.1)  # dim 4
    e[:, 2] = 5.0  # coordinate 2 (re part) dominates the entity table
    r[:, 4 + 1] = 5.0  # coordinate 1 (im part) dominates the relation table
    me, mr = coordinate_magnitude_masks([e, r], 0.5, dim=4)
    want = torch.tensor([False, True, True, False] * 2)
    assert (me == want).all() and (mr == want).all()
    (k_only,) = coordinate_magnitude_masks([e], 0.75, dim=4)[:1]
    assert k_only[0].tolist() == [False, False, True, False] * 2


@pytest.mark.parametrize("interaction", ["complex", "rotate", "transe", "distmult", "simple"])
def test_dims_pruned_model_scores_as_its_compact_dense_copy(tiny_kg: KGDataset, interaction: str) -> None:
    torch.manual_seed(3)
    base = EmbeddingModel(interaction, tiny_kg.num_entities, tiny_kg.num_relations, 8, reciprocal=True)
    pm = PrunedModel(base)
    pm.update_masks(0.75, "dims")
    compact = pm.compact_copy()
    assert compact.dim == 2 and compact.num_parameters() == base.num_parameters() // 4
    assert pm.pruned_copy().num_parameters(nonzero=True) <= compact.num_parameters()
    h, rel = tiny_kg.train[:5, 0], tiny_kg.train[:5, 1]
    torch.testing.assert_close(compact.score_t(h, rel), pm.score_t(h, rel), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(compact.score_h(rel, h), pm.score_h(rel, h), rtol=1e-5, atol=1e-5)
    pm.update_masks(0.75, "global")  # entries, not coordinates: no dense copy of a smaller dim exists
    with pytest.raises(ValueError, match="whole coordinates"):
        pm.compact_copy()


def test_metasd_ramp_validations_cannot_select_the_model(tiny_kg: KGDataset) -> None:
    _, step, _ = _metasd(tiny_kg, sparsity_ramp_epochs=3)
    assert [step.trainer.selectable(e) for e in (1, 2, 3, 4)] == [False, False, True, True]


def test_metasd_nonzeros_per_entity_sets_the_dense_dim() -> None:
    teacher = EmbeddingModel("complex", 10, 2, 64)
    assert dense_dim(teacher, MetaSDConfig(sparsity=0.9, nonzeros_per_entity=400)) == 2000  # the release's rank
    assert dense_dim(teacher, MetaSDConfig()) == 64
    assert dense_dim(teacher, MetaSDConfig(dims=[16])) == 16


# ---- IterDE and KD ----------------------------------------------------------------------------------------------
def test_release_swda_gradient_cancels_the_soft_direction() -> None:
    """First half: ∇(w L_s) with w = l / norm(L_s L_h) not detached is -(w L_s / L_h) ∇L_h (METHODS.md §7)."""
    x = torch.tensor([0.3, -1.2], requires_grad=True)
    soft, hard = (x**2).sum() * 0.37, (x - 2).abs().sum() * 1.9
    term = release_swda(1.0, soft, hard, epoch=1, num_epochs=10)
    g_term, = torch.autograd.grad(term, x, retain_graph=True)
    g_hard, = torch.autograd.grad(hard, x, retain_graph=True)
    ratio = (term / hard).item()
    torch.testing.assert_close(g_term, -ratio * g_hard)
    late = release_swda(0.5, soft, hard, epoch=8, num_epochs=10)  # second half: l · L_s
    assert late.item() == pytest.approx(0.5 * soft.item())


def test_iterde_release_swda_term_uses_the_hard_loss() -> None:
    cfg = IterDEConfig(swda_weight="release", soft_loss="huber", schedule="swda")
    term = iterde_term(cfg, 1.0)
    s = Scores(pos=torch.tensor([1.0, 2.0]), neg=torch.tensor([[0.5], [0.1]]))
    t = Scores(pos=torch.tensor([3.0, 1.0]), neg=torch.tensor([[0.0], [0.4]]))
    hard = torch.tensor(0.8)
    ctx = StepContext(torch.zeros(2, 3, dtype=torch.long), s, t, 1, 10, hard=hard)
    soft = terms.huber_scores(s.candidates, t.candidates)
    assert term.fn(ctx).item() == pytest.approx(release_swda(1.0, soft, hard, 1, 10).item())
    assert term.schedule.weight(1, 10) == 1.0
    assert IterDEConfig().swda_weight == "detached"
    with pytest.raises(ConfigError, match="needs schedule swda"):  # never a silent no-op under the constant default
        iterde_term(IterDEConfig(swda_weight="release"), 1.0)


def test_huber_reduction_mean_and_sum() -> None:
    s, t = torch.tensor([[0.0, 3.0, 0.5]]), torch.tensor([[1.0, 0.0, 0.5]])  # SmoothL1: 0.5, 2.5, 0
    assert huber_soft(IterDEConfig(), s, t).item() == pytest.approx(3.0 / 3)
    assert huber_soft(IterDEConfig(huber_reduction="sum"), s, t).item() == pytest.approx(3.0)
    ctx = StepContext(torch.zeros(1, 3, dtype=torch.long), Scores(pos=s[:, 0], all=s), Scores(pos=t[:, 0], all=t), 1, 1)
    assert kd_term(KDHuberConfig(huber_reduction="sum")).fn(ctx).item() == pytest.approx(3.0)
    assert kd_term(KDHuberConfig()).fn(ctx).item() == pytest.approx(1.0)


def test_chain_defaults_derive_from_the_teacher() -> None:
    assert chain(512, IterDEConfig()) == [256, 128, 64, 32]
    assert chain(64, IterDEConfig()) == [32]
    assert chain(32, IterDEConfig()) == [16]
    with pytest.raises(ConfigError, match="decrease"):
        chain(64, IterDEConfig(dims=[64, 8]))
    with pytest.raises(ConfigError, match="target_dim"):
        chain(64, IterDEConfig(target_dim=48))


def test_kd_huber_is_registered_with_its_loss_and_kd_defaults_to_temperature_1() -> None:
    assert methods.get("kd-huber").Config is KDHuberConfig and methods.get("bkd").name == "kd-huber"
    assert make_config("kd-huber", {}).kd_loss == "huber"
    assert KDConfig().temperature == 1.0


# ---- end to end on a 16-dim teacher: README-style commands run with teacher-derived defaults -------------------------
@pytest.fixture(scope="module")
def small_teacher(tmp_path_factory) -> Path:
    from kgdistill import runs
    from kgdistill.config import DataConfig, EvaluationConfig, ModelConfig, RunConfig

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("fidelity") / "teacher"
    cfg = RunConfig(data=DataConfig(dataset="nations"), model=ModelConfig(model="complex", dim=16),
                    training=TrainingConfig(training_mode="1vsall", optimizer="adagrad", lr=0.1, regularizer="n3",
                                            regularizer_weight=0.01, epochs=3, batch_size=256, eval_every=0,
                                            patience=0),
                    evaluation=EvaluationConfig(eval_splits=["test"]), output_dir=str(out), progress=False)
    runs.train(cfg)
    return out


def test_defaults_run_on_a_small_teacher(small_teacher: Path, tmp_path: Path) -> None:
    from kgdistill.distill import distill

    common = dict(epochs=2, eval_every=0, with_teacher_row=False)
    combo = distill("iterde-metasd", small_teacher, tmp_path / "combo", **common)
    assert [r.path.name for r in combo.results] == ["iterde-16-8", "iterde-metasd-8-s0.5"]
    dualde = distill("dualde", small_teacher, tmp_path / "dualde", dims=[4], **common)  # 1-N like its teacher
    assert dualde.results[0].path.joinpath("config.yaml").read_text().count("training_mode: 1vsall") == 1
    metasd = distill("metasd", small_teacher, tmp_path / "metasd", sparsity=0.5, pruning="global", **common)
    nonzero = metasd.rows[-1]["nonzero"]
    assert nonzero == pytest.approx(0.5 * metasd.rows[-1]["params"], abs=2)
    dims = distill("metasd", small_teacher, tmp_path / "metasd-dims", sparsity=0.75, **common)  # dims: default
    from kgdistill.models.base import load_model

    saved = load_model(dims.results[-1].path)  # the run folder holds a dense 4-dim model, not a masked 16-dim one
    assert saved.dim == 4 and dims.rows[-1]["params"] == dims.rows[-1]["nonzero"] == saved.num_parameters()
    assert dims.results[-1].metrics["bytes_on_disk"] < metasd.results[-1].metrics["bytes_on_disk"]
    released = distill("metasd", small_teacher, tmp_path / "metasd-released", sparsity=0.75, teacher_weight=0.0,
                       **common)  # the default's teacher KL reaches the student: same seed, other weights
    assert not torch.equal(load_model(released.results[-1].path).entity, saved.entity)


def test_a_refused_distillation_leaves_no_empty_folder(small_teacher: Path, tmp_path: Path) -> None:
    from kgdistill.distill import distill

    with pytest.raises(ConfigError):
        distill("iterde", small_teacher, tmp_path / "bad", target_dim=12)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ConfigError, match="2 learning rates for a chain of 1 steps"):
        distill("iterde", small_teacher, tmp_path / "bad", step_lrs=[0.1, 0.2])  # 16 → 8: one step
    assert not (tmp_path / "bad").exists()


def test_iterde_step_lrs_set_each_steps_learning_rate(small_teacher: Path, tmp_path: Path) -> None:
    import yaml

    from kgdistill.distill import distill

    report = distill("iterde", small_teacher, tmp_path / "chain", dims=[8, 4], step_lrs=[0.05, 0.2], epochs=1,
                     eval_every=0, with_teacher_row=False)
    lrs = [yaml.safe_load((r.path / "config.yaml").read_text())["training"]["lr"] for r in report.results]
    assert lrs == [0.05, 0.2]


def _readme_commands(verb: str) -> list[list[str]]:
    """The README's ``kgdistill VERB`` commands of the "Distilling KG embeddings" section (continuations joined)."""
    import shlex

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## Distilling KG embeddings", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = section.replace("\\\n", " ").splitlines()
    commands = []
    for line in lines:
        words = shlex.split(line, comments=True)
        if words[:2] == ["kgdistill", verb] and "--help" not in words:
            commands.append(words[1:])
    return commands


def test_readme_distill_commands_run_on_the_readme_teacher(tmp_path: Path, monkeypatch) -> None:
    """Every README distillation command works as written on the README's teacher shape (kinship ComplEx-64;
    budgets cut to one epoch here), and the second teacher they name is made by a README command."""
    from kgdistill.cli import main

    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    assert main(["train", "--dataset", "kinship", "--model", "complex", "--dim", "64", "--training-mode", "1vsall",
                 "--optimizer", "adagrad", "--lr", "0.1", "--epochs", "1", "--out", "runs/kinship-complex",
                 "--no-progress"]) == 0
    for words in _readme_commands("train"):
        assert main([*words, "--epochs", "1", "--no-progress"]) == 0, words
    distills = _readme_commands("distill")
    assert len(distills) >= 7
    for i, words in enumerate(distills):
        out = [] if "--out" in words else ["--out", f"runs/readme-{i}"]
        assert main([*words, *out, "--epochs", "1", "--eval-every", "0", "--threads", "1"]) == 0, words


# ---- a frozen teacher scored in bf16 (beyond the papers: speed) ---------------------------------------------------
@pytest.mark.parametrize("mode", ["1vsall", "slcwa"])
def test_bf16_teacher_scores_are_float32_and_close_to_fp32(tiny_kg: KGDataset, mode: str) -> None:
    from kgdistill.distill.distiller import Distiller

    torch.manual_seed(0)
    teacher = EmbeddingModel("complex", tiny_kg.num_entities, tiny_kg.num_relations, 16, reciprocal=True)
    student = EmbeddingModel("complex", tiny_kg.num_entities, tiny_kg.num_relations, 4, reciprocal=True)
    q = queries_of(tiny_kg.train[:6], tiny_kg.num_relations) if mode == "1vsall" else tiny_kg.train[:6]
    sample = None if mode == "1vsall" else (torch.randint(0, tiny_kg.num_entities, (6, 5)),
                                            torch.zeros(6, 5, dtype=torch.bool), 0)
    exact = Distiller(student, teacher, [], with_structure=True)._frozen_scores(teacher, q, sample)
    fast = Distiller(student, teacher, [], with_structure=True, teacher_precision="bf16")
    got = fast._frozen_scores(teacher, q, sample)
    assert got.candidates.dtype == torch.float32 and not got.candidates.requires_grad
    scale = exact.candidates.abs().max().item()
    assert (got.candidates - exact.candidates).abs().max().item() <= 0.02 * scale  # bf16: 8 bits of mantissa
    assert not torch.equal(got.candidates, exact.candidates) or mode == "slcwa"  # 1-N: a bf16 matrix product
    if got.structure is not None:
        assert got.structure.cos_neg.dtype == torch.float32
    with pytest.raises(ConfigError, match="teacher_precision"):
        make_config("kd", {"teacher_precision": "fp16"})
    assert make_config("iterde", {}).teacher_precision == make_config("dualde", {}).teacher_precision == "fp32"
