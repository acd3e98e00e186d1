"""Every embedding model: shapes, and scoring all entities equals scoring each triple (both sides)."""

from __future__ import annotations

import pytest
import torch

from kgdistill.models.base import load_model, model_classes, save_model
from kgdistill.models.embedding import EmbeddingModel
from kgdistill.models.interactions import interactions

VARIANTS = [
    ("transe", {}), ("transe", {"p": 2}), ("distmult", {}), ("complex", {}),
    ("rotate", {}), ("rotate", {"norm": "l2"}), ("simple", {}),
]
E, R, D = 9, 4, 6


def test_every_registered_interaction_has_a_case() -> None:
    assert {name for name, _ in VARIANTS} == set(interactions.names())


@pytest.fixture(params=[(n, o, rec) for n, o in VARIANTS for rec in (False, True)],
                ids=lambda p: f"{p[0]}-{p[1]}-{'rec' if p[2] else 'plain'}")
def model(request: pytest.FixtureRequest) -> EmbeddingModel:
    name, options, reciprocal = request.param
    torch.manual_seed(0)
    return EmbeddingModel(name, E, R, D, reciprocal=reciprocal, interaction_options=options)


def _all_triples() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.stack([torch.randint(E, (20,), generator=g), torch.randint(R, (20,), generator=g),
                        torch.randint(E, (20,), generator=g)], dim=1)


def test_shapes(model: EmbeddingModel) -> None:
    hrt = _all_triples()
    assert model.score_hrt(hrt).shape == (20,)
    assert model.score_t(hrt[:, 0], hrt[:, 1]).shape == (20, E)
    assert model.score_h(hrt[:, 1], hrt[:, 2]).shape == (20, E)
    assert model.score_t(hrt[:, 0], hrt[:, 1], torch.tensor([0, 3, 5])).shape == (20, 3)
    assert model.score_h(hrt[:, 1], hrt[:, 2], torch.randint(E, (20, 4))).shape == (20, 4)


def test_all_entities_equal_single_triples(model: EmbeddingModel) -> None:
    hrt = _all_triples()
    h, r, t = hrt.unbind(1)
    tails, heads = model.score_t(h, r), model.score_h(r, t)
    if model.reciprocal:  # heads come from the inverse relation: compare with explicit inverse triples
        inverse = torch.stack([t, r + R, h], dim=1)
        expected_h = model.score_hrt(inverse)
    else:
        expected_h = model.score_hrt(hrt)
    for i in range(hrt.shape[0]):
        single_t = model.score_hrt(torch.stack([h[i].repeat(E), r[i].repeat(E), torch.arange(E)], 1))
        torch.testing.assert_close(tails[i], single_t, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tails[torch.arange(20), t], model.score_hrt(hrt), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(heads[torch.arange(20), h], expected_h, rtol=1e-5, atol=1e-5)


def test_candidates_equal_all_entities(model: EmbeddingModel) -> None:
    hrt = _all_triples()
    h, r, t = hrt.unbind(1)
    cand = torch.randint(E, (20, 5), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(model.score_t(h, r, cand), model.score_t(h, r).gather(1, cand), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.score_h(r, t, cand), model.score_h(r, t).gather(1, cand), rtol=1e-5, atol=1e-5)
    shared = torch.tensor([1, 4, 8])
    torch.testing.assert_close(model.score_t(h, r, shared), model.score_t(h, r)[:, shared], rtol=1e-5, atol=1e-5)


def test_known_values() -> None:
    m = EmbeddingModel("transe", 2, 1, 2, entity_constraint="none")
    with torch.no_grad():
        m.entity.copy_(torch.tensor([[0.0, 0.0], [1.0, 2.0]]))
        m.relation.copy_(torch.tensor([[1.0, 1.0]]))
    # ||e0 + r - e1||_1 = |1 - 1| + |1 - 2| = 1
    assert m.score_hrt(torch.tensor([[0, 0, 1]])).item() == pytest.approx(-1.0)
    c = EmbeddingModel("complex", 2, 1, 1)
    with torch.no_grad():
        c.entity.copy_(torch.tensor([[1.0, 2.0], [3.0, -1.0]]))  # e0 = 1+2i, e1 = 3-i
        c.relation.copy_(torch.tensor([[0.5, 1.0]]))  # r = 0.5+i
    # Re((1+2i)(0.5+i)conj(3-i)) = Re((-1.5+2i)(3+i)) = Re(-4.5 - 1.5i + 6i - 2) = -6.5
    assert c.score_hrt(torch.tensor([[0, 0, 1]])).item() == pytest.approx(-6.5)


def test_unit_norm_constraint_and_parameter_count() -> None:
    m = EmbeddingModel("transe", 10, 3, 8)
    assert torch.allclose(m.entity.norm(dim=1), torch.ones(10))
    assert m.num_parameters() == 10 * 8 + 3 * 8
    c = EmbeddingModel("complex", 10, 3, 8, reciprocal=True)
    assert c.num_parameters() == 10 * 16 + 6 * 16
    with torch.no_grad():
        c.entity[:5] = 0
    assert c.num_parameters(nonzero=True) == 5 * 16 + 6 * 16


def test_save_load_round_trip(tmp_path, model: EmbeddingModel) -> None:  # type: ignore[no-untyped-def]
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    assert type(loaded) is model_classes.get("embedding")
    hrt = _all_triples()
    torch.testing.assert_close(loaded.score_hrt(hrt), model.score_hrt(hrt))
    torch.testing.assert_close(loaded.score_t(hrt[:, 0], hrt[:, 1]), model.score_t(hrt[:, 0], hrt[:, 1]))
