"""Tests of the evaluator: filtered ranks with ties, the filter index, the chunked evaluator, metrics, categories."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from kgdistill.evaluation import (
    HEAD,
    TAIL,
    EvaluationResult,
    FilterIndex,
    RankingEvaluator,
    metrics_from_ranks,
    ranks_from_scores,
    realistic_ranks,
    relation_categories,
)

# ---------------------------------------------------------------------------------------------------------------------
# ranks_from_scores on hand-computed examples
# ---------------------------------------------------------------------------------------------------------------------
# Five entities, three queries.
#   q0: target 0 (0.5); e1 0.9 greater, e2 and e3 0.5 equal, e4 less.   filter {1, 2}: e3 equal only.
#   q1: all scores 2, target 3: four equal.                                filter {3 (the target), 0}: three equal.
#   q2: target 4 (0.7); e1 0.8 greater, e2 0.7 equal.                     filter {1}: e2 equal only.
HAND_SCORES = torch.tensor(
    [
        [0.5, 0.9, 0.5, 0.5, 0.1],
        [2.0, 2.0, 2.0, 2.0, 2.0],
        [0.3, 0.8, 0.7, 0.2, 0.7],
    ]
)
HAND_TARGETS = torch.tensor([0, 3, 4])
HAND_FILTER_ROWS = torch.tensor([0, 0, 1, 1, 2])
HAND_FILTER_COLS = torch.tensor([1, 2, 3, 0, 1])


def test_hand_ranks_filtered() -> None:
    ranks = ranks_from_scores(HAND_SCORES, HAND_TARGETS, HAND_FILTER_ROWS, HAND_FILTER_COLS)
    assert ranks.optimistic.tolist() == [1.0, 1.0, 1.0]
    assert ranks.pessimistic.tolist() == [2.0, 4.0, 2.0]
    assert ranks.realistic.tolist() == [1.5, 2.5, 1.5]
    assert ranks.realistic.dtype == torch.float64


def test_hand_ranks_raw() -> None:
    ranks = ranks_from_scores(HAND_SCORES, HAND_TARGETS)
    assert ranks.optimistic.tolist() == [2.0, 1.0, 2.0]
    assert ranks.pessimistic.tolist() == [4.0, 5.0, 3.0]
    assert ranks.realistic.tolist() == [3.0, 3.0, 2.5]
    assert realistic_ranks(HAND_SCORES, HAND_TARGETS).tolist() == [3.0, 3.0, 2.5]


def test_duplicate_filter_pairs_are_counted_once() -> None:
    rows = torch.cat([HAND_FILTER_ROWS, HAND_FILTER_ROWS[:2]])
    cols = torch.cat([HAND_FILTER_COLS, HAND_FILTER_COLS[:2]])
    assert realistic_ranks(HAND_SCORES, HAND_TARGETS, rows, cols).tolist() == [1.5, 2.5, 1.5]


def test_scores_not_modified() -> None:
    scores = HAND_SCORES.clone()
    scores[0, 3] = float("nan")
    before = scores.clone()
    ranks_from_scores(scores, HAND_TARGETS, HAND_FILTER_ROWS, HAND_FILTER_COLS, inplace=False)
    realistic_ranks(scores, HAND_TARGETS, HAND_FILTER_ROWS, HAND_FILTER_COLS)
    assert torch.equal(torch.nan_to_num(scores, nan=-7.0), torch.nan_to_num(before, nan=-7.0))
    assert torch.isnan(scores[0, 3])


def test_nan_handling() -> None:
    nan = float("nan")
    scores = torch.tensor(
        [
            [nan, 0.5, nan, 0.7, 0.5],  # NaN candidates count as neither greater nor equal
            [0.1, nan, 0.9, 0.2, 0.3],  # NaN target: worst rank E = 5
            [nan, nan, nan, nan, nan],
        ]
    )
    ranks = ranks_from_scores(scores, torch.tensor([1, 1, 2]), torch.tensor([1]), torch.tensor([2]))
    assert ranks.optimistic.tolist() == [2.0, 5.0, 5.0]
    assert ranks.pessimistic.tolist() == [3.0, 5.0, 5.0]
    assert ranks.realistic.tolist() == [2.5, 5.0, 5.0]


def test_many_entities_counting_blocks() -> None:
    """More than 32767 entities (the int16 counting block) must still count exactly."""
    gen = torch.Generator().manual_seed(3)
    num_entities = 70_001
    scores = torch.randint(0, 50, (3, num_entities), generator=gen).float()
    targets = torch.tensor([0, 40_000, 70_000])
    ranks = ranks_from_scores(scores, targets)
    t = scores[torch.arange(3), targets].unsqueeze(1)
    greater = (scores > t).sum(1).double()
    equal = (scores == t).sum(1).double() - 1
    assert torch.equal(ranks.optimistic, 1 + greater)
    assert torch.equal(ranks.pessimistic, 1 + greater + equal)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="both"):
        ranks_from_scores(HAND_SCORES, HAND_TARGETS, HAND_FILTER_ROWS, None)
    with pytest.raises(ValueError, match="targets"):
        ranks_from_scores(HAND_SCORES, HAND_TARGETS[:2])


# ---------------------------------------------------------------------------------------------------------------------
# FilterIndex
# ---------------------------------------------------------------------------------------------------------------------
def _random_kg(seed: int, num_entities: int, num_relations: int, n: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    h = torch.randint(0, num_entities, (n,), generator=gen)
    r = torch.randint(0, num_relations, (n,), generator=gen)
    t = torch.randint(0, num_entities, (n,), generator=gen)
    return torch.stack([h, r, t], dim=1)


def test_filter_index_known_exact() -> None:
    num_entities, num_relations = 15, 4
    triples = _random_kg(0, num_entities, num_relations, 120)
    triples = torch.cat([triples, triples[:20]])  # duplicates
    index = FilterIndex.from_triples(triples, num_entities, num_relations)
    as_set = {tuple(x) for x in triples.tolist()}
    assert len(index) == len(as_set)
    gen = torch.Generator().manual_seed(1)
    anchors = torch.randint(0, num_entities, (60,), generator=gen)
    relations = torch.randint(0, num_relations, (60,), generator=gen)
    for side in ("head", "tail"):
        rows, cols = index.known(side, anchors, relations)
        got = list(zip(rows.tolist(), cols.tolist()))
        expected = []
        for i, (a, r) in enumerate(zip(anchors.tolist(), relations.tolist())):
            if side == "tail":
                answers = sorted({t for (h, rr, t) in as_set if h == a and rr == r})
            else:
                answers = sorted({h for (h, rr, t) in as_set if t == a and rr == r})
            expected.extend((i, e) for e in answers)
        assert got == expected  # exact, rows ascending, entities ascending within a row, no duplicates
    assert 0 < sum(1 for _ in got) < 60 * num_entities
    empty_rows, empty_cols = index.known("tail", anchors[:0], relations[:0])
    assert empty_rows.numel() == 0 and empty_cols.numel() == 0


def test_filter_index_rejects_bad_ids() -> None:
    with pytest.raises(ValueError, match="entity"):
        FilterIndex.from_triples(torch.tensor([[0, 0, 5]]), 5, 1)
    with pytest.raises(ValueError, match="relation"):
        FilterIndex.from_triples(torch.tensor([[0, 1, 2]]), 5, 1)


# ---------------------------------------------------------------------------------------------------------------------
# RankingEvaluator
# ---------------------------------------------------------------------------------------------------------------------
def test_evaluator_hand_example() -> None:
    # Known triples: (0,0,1), (0,0,2), (3,0,2). Test triple: (0,0,1).
    # Tail query (0,0,?) target 1 (0.5), filter {1, 2}: e0 less, e2 (0.9) filtered, e3 e4 equal -> 1, 3, 2.
    #   raw: e2 greater, e3 e4 equal -> 2, 4, 3.
    # Head query (?,0,1) target 0 (0.1), filter {0} (the target): e2 greater, e1 e4 equal -> 2, 4, 3 (raw same).
    known = torch.tensor([[0, 0, 1], [0, 0, 2], [3, 0, 2]])
    index = FilterIndex.from_triples(known, 5, 1)
    tail_rows = {0: [0.2, 0.5, 0.9, 0.5, 0.5]}
    head_rows = {1: [0.1, 0.1, 0.3, 0.0, 0.1]}

    def score_fn(side: str, anchors: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
        table = tail_rows if side == "tail" else head_rows
        return torch.tensor([table[a] for a in anchors.tolist()])

    test = torch.tensor([[0, 0, 1]])
    result = RankingEvaluator(index, 5, batch_size=4).evaluate(score_fn, test)
    assert result.sides.tolist() == [HEAD, TAIL]
    assert result.optimistic.tolist() == [2.0, 1.0]
    assert result.pessimistic.tolist() == [4.0, 3.0]
    assert result.realistic.tolist() == [3.0, 2.0]
    m = result.metrics()
    assert m["mrr"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert m["mr"] == 2.5 and m["hits@1"] == 0.0 and m["hits@3"] == 1.0 and m["count"] == 2
    raw = RankingEvaluator(None, 5).evaluate(score_fn, test)
    assert raw.realistic.tolist() == [3.0, 3.0]


def _brute_force(scores_of, triples, known, num_entities, side):
    """Pure-Python reference: (optimistic, pessimistic, realistic) per triple for one side."""
    out = []
    for h, r, t in triples:
        anchor, target = (h, t) if side == "tail" else (t, h)
        row = scores_of(side, anchor, r)
        if known is None:
            filtered = set()
        elif side == "tail":
            filtered = {tt for (hh, rr, tt) in known if hh == h and rr == r}
        else:
            filtered = {hh for (hh, rr, tt) in known if tt == t and rr == r}
        greater = equal = 0
        for e in range(num_entities):
            if e == target or e in filtered:
                continue
            if row[e] > row[target]:
                greater += 1
            elif row[e] == row[target]:
                equal += 1
        out.append((1 + greater, 1 + greater + equal, 1 + greater + 0.5 * equal))
    return out


@pytest.mark.parametrize("filtered", [True, False])
def test_evaluator_matches_brute_force(filtered: bool) -> None:
    num_entities, num_relations = 17, 3
    known = _random_kg(5, num_entities, num_relations, 150)
    test = known[torch.randperm(known.shape[0], generator=torch.Generator().manual_seed(6))[:23]]
    gen = torch.Generator().manual_seed(7)
    # Integer-valued scores in [0, 4): many ties. One table per side, indexed by (anchor, relation).
    tables = {s: torch.randint(0, 4, (num_entities, num_relations, num_entities), generator=gen).float()
              for s in ("head", "tail")}
    calls = []

    def score_fn(side: str, anchors: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
        calls.append(anchors.shape[0])
        return tables[side][anchors, relations]

    def scores_of(side, anchor, r):
        return tables[side][anchor, r].tolist()

    known_set = {tuple(x) for x in known.tolist()} if filtered else None
    expected = {side: _brute_force(scores_of, test.tolist(), known_set, num_entities, side)
                for side in ("head", "tail")}
    index = FilterIndex.from_triples(known, num_entities, num_relations) if filtered else None
    for batch_size in (1, 4, 7, 100):
        for sides in (("head", "tail"), ("tail",), ("head",)):
            calls.clear()
            result = RankingEvaluator(index, num_entities, batch_size=batch_size).evaluate(score_fn, test, sides)
            assert max(calls) <= batch_size
            exp = [x for side in sides for x in expected[side]]
            assert result.optimistic.tolist() == [x[0] for x in exp]
            assert result.pessimistic.tolist() == [x[1] for x in exp]
            assert result.realistic.tolist() == [x[2] for x in exp]
            assert torch.equal(result.triples, test.repeat(len(sides), 1))
            codes = [HEAD if s == "head" else TAIL for s in sides for _ in range(test.shape[0])]
            assert result.sides.tolist() == codes
    # the brute force is not trivially all-ones: ties and filtering matter in this data
    flat = [x for side in expected.values() for x in side]
    assert any(o != p for o, p, _ in flat) and any(o > 1 for o, _, _ in flat)


def test_evaluator_does_not_modify_score_buffer() -> None:
    num_entities = 9
    known = _random_kg(2, num_entities, 2, 40)
    buffer = torch.randint(0, 3, (64, num_entities)).float()
    before = buffer.clone()

    def score_fn(side: str, anchors: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
        return buffer[: anchors.shape[0]]  # a view of a buffer the caller owns

    evaluator = RankingEvaluator(FilterIndex.from_triples(known, num_entities, 2), num_entities, batch_size=16)
    evaluator.evaluate(score_fn, known)
    assert torch.equal(buffer, before)


def test_evaluator_checks_score_shape() -> None:
    evaluator = RankingEvaluator(None, 5)
    with pytest.raises(ValueError, match="score_fn returned shape"):
        evaluator.evaluate(lambda s, a, r: torch.zeros(a.shape[0], 4), torch.tensor([[0, 0, 1]]))
    with pytest.raises(ValueError, match="side"):
        evaluator.evaluate(lambda s, a, r: torch.zeros(a.shape[0], 5), torch.tensor([[0, 0, 1]]), sides=("left",))


# ---------------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------------
def test_metrics_on_known_ranks() -> None:
    m = metrics_from_ranks(torch.tensor([1.0, 2.0, 3.5, 10.0, 11.0]))
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3.5 + 1 / 10 + 1 / 11) / 5)
    assert m["mr"] == pytest.approx(5.5)
    assert m["hits@1"] == pytest.approx(0.2)
    assert m["hits@3"] == pytest.approx(0.4)  # 3.5 is not within 3
    assert m["hits@10"] == pytest.approx(0.8)
    assert m["count"] == 5
    assert set(metrics_from_ranks(torch.tensor([1.0]), hits_at=(5,))) == {"mrr", "mr", "hits@5", "count"}
    empty = metrics_from_ranks(torch.empty(0))
    assert empty["count"] == 0 and math.isnan(empty["mrr"])


def _manual_result() -> EvaluationResult:
    # relation 0: ranks 1 (head), 2 (tail); relation 1: 4, 1, 10, 1; relation 2: 5, 5.
    triples = torch.tensor([[0, 0, 1], [2, 1, 3], [4, 1, 5], [6, 2, 7]])
    sides = torch.tensor([HEAD, HEAD, HEAD, HEAD, TAIL, TAIL, TAIL, TAIL], dtype=torch.int8)
    realistic = torch.tensor([1.0, 4.0, 10.0, 5.0, 2.0, 1.0, 1.0, 5.0], dtype=torch.float64)
    return EvaluationResult(
        realistic=realistic,
        optimistic=realistic - 0.5,
        pessimistic=realistic + 0.5,
        triples=triples.repeat(2, 1),
        sides=sides,
        num_entities=20,
    )


def test_per_relation_and_category_weighting() -> None:
    result = _manual_result()
    per_rel = result.per_relation(["r0", "r1", "r2"])
    assert list(per_rel) == ["r0", "r1", "r2"]
    assert per_rel["r0"]["mrr"] == pytest.approx((1 + 1 / 2) / 2)
    assert per_rel["r1"]["mrr"] == pytest.approx((1 / 4 + 1 + 1 / 10 + 1) / 4)
    assert per_rel["r1"]["mr"] == pytest.approx(4.0)
    assert per_rel["r2"]["hits@3"] == 0.0 and per_rel["r2"]["count"] == 2
    assert result.per_relation()["1"]["count"] == 4
    assert result.per_relation(side="tail")["1"]["mrr"] == pytest.approx((1 + 1) / 2)
    # overall: micro-average over queries, not the mean of the per-relation MRRs
    overall = result.metrics()
    all_ranks = [1, 4, 10, 5, 2, 1, 1, 5]
    assert overall["mrr"] == pytest.approx(sum(1 / r for r in all_ranks) / 8)
    assert overall["mrr"] != pytest.approx(sum(v["mrr"] for v in per_rel.values()) / 3)
    # categories: r0 and r2 together (4 queries), r1 alone
    per_cat = result.per_category({0: "1-1", 1: "N-N", 2: "1-1"})
    assert set(per_cat) == {"1-1", "N-N"}
    assert per_cat["1-1"]["count"] == 4
    assert per_cat["1-1"]["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 5) / 4)
    assert per_cat["N-N"] == per_rel["r1"]
    partial = result.per_category({1: "N-N"})
    assert partial["unknown"]["count"] == 4


def test_sides_rank_types_and_json_round_trip() -> None:
    result = _manual_result()
    assert result.metrics("head")["mr"] == pytest.approx(5.0)
    assert result.metrics("tail")["mr"] == pytest.approx(2.25)
    assert result.metrics("head", rank_type="optimistic")["mr"] == pytest.approx(4.5)
    assert result.metrics("both", rank_type="pessimistic")["mr"] == pytest.approx(3.625 + 0.5)
    assert result.ranks_tensor("realistic", "tail").tolist() == [2.0, 1.0, 1.0, 5.0]
    summary = result.summary()
    assert set(summary) == {"both", "head", "tail"} and summary["both"] == result.metrics()
    data = json.loads(json.dumps(result.to_json_dict()))
    assert EvaluationResult.from_json_dict(data) == summary
    # an evaluation of one side only: the other side has no queries, NaN survives the round trip as null
    zeros = lambda side, anchors, relations: torch.zeros(anchors.shape[0], 3)  # noqa: E731
    tail_only = RankingEvaluator(None, 3).evaluate(zeros, torch.tensor([[0, 0, 1]]), sides=("tail",))
    text = json.dumps(tail_only.to_json_dict(), allow_nan=False)
    back = EvaluationResult.from_json_dict(json.loads(text))
    assert back["head"]["count"] == 0 and math.isnan(back["head"]["mrr"])
    assert back["tail"]["mr"] == 2.0  # three tied entities: 1 + 0.5 * 2
    with pytest.raises(ValueError):
        EvaluationResult.from_json_dict({"both": {}})


# ---------------------------------------------------------------------------------------------------------------------
# Relation categories
# ---------------------------------------------------------------------------------------------------------------------
def test_relation_categories() -> None:
    triples = [
        (0, 0, 1), (2, 0, 3), (4, 0, 5), (0, 0, 1),  # r0 1-1 (duplicate ignored)
        (0, 1, 1), (0, 1, 2), (0, 1, 3), (4, 1, 5), (4, 1, 6),  # r1 1-N: tph 5/2, hpt 1
        (1, 2, 0), (2, 2, 0), (3, 2, 0), (5, 2, 4), (6, 2, 4),  # r2 N-1: tph 1, hpt 5/2
        (0, 3, 1), (0, 3, 2), (1, 3, 1), (1, 3, 2),  # r3 N-N: tph 2, hpt 2
        (0, 4, 1), (0, 4, 2), (3, 4, 4),  # r4: tph exactly 1.5 (>= threshold), hpt 1
    ]
    random.Random(0).shuffle(triples)
    cats = relation_categories(torch.tensor(triples), num_relations=6)
    assert cats == {0: "1-1", 1: "1-N", 2: "N-1", 3: "N-N", 4: "1-N"}  # r5 has no triples
    assert relation_categories(torch.tensor(triples), 6, threshold=3.0) == {r: "1-1" for r in range(5)}
