"""Distillation loss terms, schedules and pruning against hand-computed values on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from kgdistill.distill import terms
from kgdistill.distill.distiller import structure_of
from kgdistill.distill.pruning import export_sparse, global_magnitude_masks, load_sparse
from kgdistill.distill.schedules import make_schedule, sparsity_at, unit_decade
from kgdistill.models.embedding import EmbeddingModel

LN2, LN3 = math.log(2.0), math.log(3.0)
KL_75_50 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)  # KL([.75, .25] || [.5, .5])
KL_50_75 = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(2.0)  # KL([.5, .5] || [.75, .25])


def test_kl_with_temperature() -> None:
    s = torch.zeros(1, 2)
    assert terms.kl_with_temperature(s, torch.tensor([[LN3, 0.0]]), 1.0).item() == pytest.approx(KL_75_50, abs=1e-6)
    # T = 2: the same distributions after dividing by T, times T² = 4
    val = terms.kl_with_temperature(s, torch.tensor([[2 * LN3, 0.0]]), 2.0).item()
    assert val == pytest.approx(4 * KL_75_50, abs=1e-6)
    assert terms.kl_with_temperature(torch.randn(3, 5), torch.randn(3, 5) * 0, 1.0).item() >= 0


def test_ensemble_kl_averages_the_teachers_distributions() -> None:
    s = torch.zeros(1, 2)
    # teachers [.75, .25] and [.25, .75] average to [.5, .5]: the uniform student matches it exactly
    both = [torch.tensor([[LN3, 0.0]]), torch.tensor([[0.0, LN3]])]
    assert terms.ensemble_kl(s, both, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    # [.75, .25] and [.5, .5] average to [.625, .375]
    mean = [0.625, 0.375]
    expected = sum(p * math.log(p / 0.5) for p in mean)
    assert terms.ensemble_kl(s, [torch.tensor([[LN3, 0.0]]), torch.zeros(1, 2)], 1.0).item() == \
        pytest.approx(expected, abs=1e-6)
    # one teacher, or the same teacher twice, is plain KD at any temperature
    st, t = torch.randn(4, 6), torch.randn(4, 6)
    one = terms.kl_with_temperature(st, t, 2.0)
    assert terms.ensemble_kl(st, [t], 2.0).item() == pytest.approx(one.item(), rel=1e-5)
    assert terms.ensemble_kl(st, [t, t.clone()], 2.0).item() == pytest.approx(one.item(), rel=1e-5)
    with pytest.raises(ValueError):
        terms.ensemble_kl(st, [], 1.0)


def test_symmetric_kl_metasd() -> None:
    val = terms.symmetric_kl(torch.zeros(1, 2), torch.tensor([[3 * LN3, 0.0]]), temperature=3.0)
    assert val.item() == pytest.approx(3 * KL_75_50 + KL_50_75, abs=1e-6)


def test_huber_scores() -> None:
    val = terms.huber_scores(torch.tensor([0.0, 3.0]), torch.tensor([0.5, 0.0]))
    assert val.item() == pytest.approx((0.5 * 0.25 + 2.5) / 2)


def test_dualde_score_and_structure_distances() -> None:
    d = terms.dualde_score_distance(torch.tensor([0.0]), torch.tensor([LN3]))  # σ: 0.5 vs 0.75
    assert d.item() == pytest.approx(0.5 * 0.25**2)
    s = terms.dualde_structure_distance(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]]),
                                        torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[3.0, 0.0, 0.0]]))
    # cos 0 vs 1 → SmoothL1(1) = 0.5; length ratio 0.5 vs 1/3 → 0.5 · (1/6)²
    assert s.item() == pytest.approx(0.5 + 0.5 * (1 / 6) ** 2)


@pytest.mark.parametrize("random_layout", [False, True])
def test_structure_of_equals_features_of_the_corrupted_rows(random_layout: bool) -> None:
    """The shortcut (one dot product per candidate) = cos / norm ratio of explicitly built corrupted triples."""
    torch.manual_seed(3)
    model = EmbeddingModel("complex", 20, 3, 4)
    B, N, k = 5, 6, 2
    batch = torch.stack([torch.randint(0, 20, (B,)), torch.randint(0, 3, (B,)), torch.randint(0, 20, (B,))], 1)
    neg = torch.randint(0, 20, (B, N))
    corrupt = torch.rand(B, N) < 0.5 if random_layout else None
    got = structure_of(model, batch, neg, corrupt, k)
    h, t, c = model.entity_rows(batch[:, 0]), model.entity_rows(batch[:, 2]), model.entity_rows(neg)
    ch = (corrupt if random_layout else torch.arange(N).expand(B, N) < k)[..., None]
    heads = torch.where(ch, c, h[:, None].expand_as(c))
    tails = torch.where(ch, t[:, None].expand_as(c), c)
    cos_neg, ratio_neg = terms.structure_features(heads, tails)
    cos_pos, ratio_pos = terms.structure_features(h, t)
    torch.testing.assert_close(got.cos_neg, cos_neg)
    torch.testing.assert_close(got.ratio_neg, ratio_neg)
    torch.testing.assert_close(got.cos_pos, cos_pos)
    torch.testing.assert_close(got.ratio_pos, ratio_pos)
    assert torch.allclose(cos_pos, torch.nn.functional.cosine_similarity(h, t, dim=-1))


def test_soft_label_weight_is_detached_and_loss_matches_eq10() -> None:
    a = torch.ones((), requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    p = terms.soft_label_weight(torch.zeros(1, requires_grad=True), a, b)
    assert p.item() == pytest.approx(0.5) and not p.requires_grad
    loss = terms.dualde_soft_label_loss(
        d_pos=torch.tensor([0.2]), d_neg=torch.tensor([[0.4, 0.0]]), student_pos=torch.zeros(1),
        student_neg=torch.zeros(1, 2), p_pos=torch.tensor([0.5]), p_neg=torch.tensor([[0.25, 1.0]]),
        adversarial_weights=torch.tensor([[0.5, 0.5]]))
    pos = 0.5 * 0.2 + 0.5 * LN2
    neg = 0.5 * (0.75 * 0.4 + 0.25 * LN2) + 0.5 * (0.0 + 1.0 * LN2)
    assert loss.item() == pytest.approx(0.5 * (pos + neg), abs=1e-6)
    cal = terms.soft_label_calibration(torch.zeros(1), torch.zeros(1, 3), a, b)
    assert cal.item() == pytest.approx(LN2, abs=1e-6)
    cal.backward()
    assert a.grad is not None and b.grad is not None  # the module learns from calibration, not from the mixture


def test_feature_mse() -> None:
    assert terms.feature_mse(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0])).item() == pytest.approx(5.0)


# ---- schedules ----------------------------------------------------------------------------------------------------
def test_unit_decade_never_loops() -> None:
    assert unit_decade(0.0123) == pytest.approx(1.23)
    assert unit_decade(456.0) == pytest.approx(4.56)
    assert unit_decade(1000.0) == pytest.approx(1.0)
    assert unit_decade(0.0) == 1.0 and unit_decade(float("nan")) == 1.0 and unit_decade(float("inf")) == 1.0


def test_swda_two_phase() -> None:
    s = make_schedule("swda", 1.0)
    assert s.weight(3, 10, soft=0.5, hard=0.1) == pytest.approx(1.0 / 5.0)  # 0.05 → 5
    assert s.weight(5, 10, soft=0.5, hard=0.1) == pytest.approx(0.2)  # still the first half
    assert s.weight(6, 10, soft=0.5, hard=0.1) == 1.0
    assert s.weight(2, 10, soft=0.0, hard=3.0) == 1.0  # norm(0) = 1 instead of an endless loop
    assert isinstance(s.weight(1, 10, soft=0.3, hard=0.7), float)


def test_ramps_and_constant() -> None:
    lin = make_schedule("linear", 2.0)
    assert [lin.weight(e, 10) for e in (1, 3, 5, 8)] == pytest.approx([0.4, 1.2, 2.0, 2.0])
    step = make_schedule("step", 1.0)
    assert [step.weight(e, 8) for e in range(1, 9)] == [0.5, 0.5, 0.75, 0.75, 1.0, 1.0, 1.0, 1.0]
    assert make_schedule("constant", 0.3).weight(7, 10, 1.0, 1.0) == 0.3


def test_sparsity_schedule() -> None:
    assert sparsity_at(1, 0.9) == 0.9
    assert sparsity_at(5, 0.9, ramp_epochs=10) == pytest.approx(0.9 * (1 - 0.5**3))
    assert sparsity_at(10, 0.9, ramp_epochs=10) == 0.9 and sparsity_at(0, 0.9, 10) == 0.0


# ---- pruning ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.97])
def test_global_magnitude_masks_exact(sparsity: float) -> None:
    a, b = torch.randn(37, 8), torch.ones(5, 16)  # ties in b
    ma, mb = global_magnitude_masks([a, b], sparsity)
    n = a.numel() + b.numel()
    assert int(ma.sum() + mb.sum()) == n - round(sparsity * n)
    kept = torch.cat([a[ma].abs(), b[mb].abs()])
    dropped = torch.cat([a[~ma].abs(), b[~mb].abs()])
    if dropped.numel() and kept.numel():
        assert kept.min() >= dropped.max()  # global: the largest magnitudes over both tables survive


def test_sparse_export_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    model = EmbeddingModel("complex", 50, 4, 16)
    (me, mr) = global_magnitude_masks([model.entity, model.relation], 0.9)
    with torch.no_grad():
        model.entity.mul_(me)
        model.relation.mul_(mr)
    path = export_sparse(model, tmp_path)
    back = load_sparse(tmp_path)
    assert torch.equal(back.entity, model.entity) and torch.equal(back.relation, model.relation)
    dense_bytes = 4 * model.num_parameters()
    assert path.stat().st_size < 0.2 * dense_bytes
    assert back.num_parameters(nonzero=True) == model.num_parameters(nonzero=True)
