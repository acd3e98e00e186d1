"""Filtered ranking for link prediction: the filter index, rank computation with ties, the chunked evaluator.

Protocol (Bordes et al. 2013, "Translating Embeddings for Modeling Multi-relational Data"; ties as in Berrendorf et
al. 2020, "Interpretable and Fair Comparison of Link Prediction or Entity Alignment Methods"): every test triple
(h, r, t) gives a *tail query* (h, r, ?) with target t and a *head query* (?, r, t) with target h. The target is
ranked among all entities; in the *filtered* setting every other entity e that forms a known triple (train ∪ valid ∪
test) with the query is removed from the candidates first. With ties, the optimistic rank puts the target before all
candidates of equal score, the pessimistic rank after them, and the realistic rank is their mean.

The evaluator consumes score matrices only (``score_fn(side, anchors, relations) -> Tensor[q, E]``), so every model
(embedding tables, text bi-encoders, ensembles) plugs in without the evaluator knowing its class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from kgdistill.evaluation.metrics import HEAD, TAIL, EvaluationResult

__all__ = [
    "SIDES",
    "FilterIndex",
    "RankingEvaluator",
    "Ranks",
    "ScoreFn",
    "ranks_from_scores",
    "realistic_ranks",
]

SIDES: tuple[str, str] = ("head", "tail")

ScoreFn = Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor]
"""``score_fn(side, anchors: LongTensor[q], relations: LongTensor[q]) -> Tensor[q, E]``, higher = better.

side "tail": anchors are heads, the queries are (h, r, ?); side "head": anchors are tails, the queries are (?, r, t).
"""


def _check_side(side: str) -> str:
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    return side


# ---------------------------------------------------------------------------------------------------------------------
# Filter index
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _CSR:
    """Sorted unique ``keys: LongTensor[k]``, ``offsets: LongTensor[k + 1]``, ``values: LongTensor[nnz]``.

    The answers of key ``keys[i]`` are ``values[offsets[i]:offsets[i + 1]]`` (sorted, without duplicates).
    """

    keys: torch.Tensor
    offsets: torch.Tensor
    values: torch.Tensor

    @staticmethod
    def build(keys: torch.Tensor, values: torch.Tensor, num_values: int) -> _CSR:
        # One sort of the combined (key, value) code sorts by key then value and drops duplicate pairs.
        # Codes stay below num_keys * num_values, which fits int64 for any realistic graph.
        code = torch.unique(keys * num_values + values)  # sorted
        keys_sorted = torch.div(code, num_values, rounding_mode="floor")
        uniq, counts = torch.unique_consecutive(keys_sorted, return_counts=True)
        offsets = torch.zeros(uniq.numel() + 1, dtype=torch.long, device=keys.device)
        torch.cumsum(counts, dim=0, out=offsets[1:])
        return _CSR(uniq, offsets, code - keys_sorted * num_values)

    def lookup(self, query_keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``query_keys: LongTensor[q]`` -> (``row_idx: LongTensor[m]``, ``values: LongTensor[m]``), all answers."""
        q = query_keys.numel()
        device = query_keys.device
        if q == 0 or self.keys.numel() == 0:
            empty = torch.empty(0, dtype=torch.long, device=device)
            return empty, empty.clone()
        pos = torch.searchsorted(self.keys, query_keys).clamp_(max=self.keys.numel() - 1)
        found = self.keys[pos] == query_keys
        starts = self.offsets[pos]
        counts = (self.offsets[pos + 1] - starts) * found
        rows = torch.repeat_interleave(torch.arange(q, device=device), counts)
        # Position of each output entry inside its query's block: global index minus the block's first output index.
        first_out = torch.cumsum(counts, dim=0) - counts
        within = torch.arange(rows.numel(), device=device) - first_out[rows]
        return rows, self.values[starts[rows] + within]

    def to(self, device: torch.device | str) -> _CSR:
        return _CSR(self.keys.to(device), self.offsets.to(device), self.values.to(device))


class FilterIndex:
    """All known triples, indexed for the filtered protocol (CSR: sorted keys, offsets, answer values).

    Tail queries (h, r, ?) are keyed by ``h * R + r``, head queries (?, r, t) by ``t * R + r``. Built once from
    train ∪ valid ∪ test with vectorised sort / unique operations (FB15k-237's 310k triples: a few tens of ms).
    """

    def __init__(self, tail_index: _CSR, head_index: _CSR, num_entities: int, num_relations: int) -> None:
        self._index = {"tail": tail_index, "head": head_index}
        self.num_entities = num_entities
        self.num_relations = num_relations

    @classmethod
    def from_triples(cls, triples: torch.Tensor, num_entities: int, num_relations: int) -> FilterIndex:
        """Build from ``triples: LongTensor[n, 3]`` of (head, relation, tail) ids (duplicates allowed)."""
        if triples.ndim != 2 or triples.shape[1] != 3:
            raise ValueError(f"triples must have shape (n, 3), got {tuple(triples.shape)}")
        triples = triples.long()
        if triples.numel():
            ents = triples[:, [0, 2]]
            if int(ents.min()) < 0 or int(ents.max()) >= num_entities:
                raise ValueError(f"entity ids must lie in [0, {num_entities}), got [{int(ents.min())}, "
                                 f"{int(ents.max())}]")
            rels = triples[:, 1]
            if int(rels.min()) < 0 or int(rels.max()) >= num_relations:
                raise ValueError(f"relation ids must lie in [0, {num_relations}), got [{int(rels.min())}, "
                                 f"{int(rels.max())}]")
        h, r, t = triples.unbind(1)
        tail_index = _CSR.build(h * num_relations + r, t, num_entities)
        head_index = _CSR.build(t * num_relations + r, h, num_entities)
        return cls(tail_index, head_index, num_entities, num_relations)

    @property
    def device(self) -> torch.device:
        return self._index["tail"].values.device

    def to(self, device: torch.device | str) -> FilterIndex:
        """A copy of the index on ``device`` (self when already there)."""
        if torch.device(device) == self.device:
            return self
        return FilterIndex(self._index["tail"].to(device), self._index["head"].to(device), self.num_entities,
                           self.num_relations)

    def __len__(self) -> int:
        """Number of distinct known triples."""
        return int(self._index["tail"].values.numel())

    def known(self, side: str, anchors: torch.Tensor, relations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All known answers of a batch of queries, as (query row, entity id) pairs.

        Args:
            side: "tail" (queries (anchor, r, ?)) or "head" (queries (?, r, anchor)).
            anchors: ``LongTensor[q]``, heads for side "tail", tails for side "head".
            relations: ``LongTensor[q]``.

        Returns:
            ``(row_idx: LongTensor[m], col_idx: LongTensor[m])``: entity ``col_idx[i]`` is a known answer of query
            ``row_idx[i]``; rows ascending, entities ascending within a row, no duplicates. On the index's device.
        """
        index = self._index[_check_side(side)]
        keys = anchors.to(self.device).long() * self.num_relations + relations.to(self.device).long()
        return index.lookup(keys)


# ---------------------------------------------------------------------------------------------------------------------
# Ranks from scores
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ranks:
    """Ranks of the targets of ``q`` queries, each a ``FloatTensor[q]`` (float64), 1 = best.

    ``optimistic = 1 + #greater``, ``pessimistic = 1 + #greater + #equal``,
    ``realistic = 1 + #greater + 0.5 * #equal`` (the mean of the two).
    """

    optimistic: torch.Tensor
    pessimistic: torch.Tensor
    realistic: torch.Tensor


_INT16_BLOCK = 32767


def _count_per_row(mask: torch.Tensor) -> torch.Tensor:
    """Number of true entries per row of ``mask: BoolTensor[q, E]`` as ``LongTensor[q]``.

    Sums in int16 over column blocks of at most 32767 (several times faster on CPU than an int64 sum of booleans).
    """
    num_cols = mask.shape[1]
    if num_cols <= _INT16_BLOCK:
        return mask.sum(dim=1, dtype=torch.int16).long()
    total = torch.zeros(mask.shape[0], dtype=torch.long, device=mask.device)
    for start in range(0, num_cols, _INT16_BLOCK):
        total += mask[:, start:start + _INT16_BLOCK].sum(dim=1, dtype=torch.int16)
    return total


def ranks_from_scores(
    scores: torch.Tensor,
    targets: torch.Tensor,
    filter_rows: torch.Tensor | None = None,
    filter_cols: torch.Tensor | None = None,
    *,
    inplace: bool = False,
    unique_filter: bool = False,
) -> Ranks:
    """Filtered optimistic / pessimistic / realistic ranks of the targets.

    For query i the candidates are all entities except the target and except the filtered entities
    ``{filter_cols[j] : filter_rows[j] == i}``. A filter pair on the target itself is ignored (the target always
    competes). ``#greater`` / ``#equal`` count the candidates whose score is greater than / equal to the target's.

    NaN: a candidate with a NaN score counts as neither greater nor equal (it is beaten by the target). A target with
    a NaN score gets the worst rank, ``E`` (all three rank types), whatever the filter.

    Args:
        scores: ``Tensor[q, E]``, higher = better, any floating dtype. Never written to: the filtered entries are
            handled by subtracting their counts, so no copy is needed either.
        targets: ``LongTensor[q]`` entity ids.
        filter_rows, filter_cols: ``LongTensor[m]`` pairs (query row, entity) to remove; both or neither.
        inplace: accepted for callers that own their buffer; this implementation never modifies ``scores``, so it
            has no effect (kept so that a future masking implementation may use the buffer).
        unique_filter: promise that the filter pairs hold no duplicates (true for ``FilterIndex.known``); skips a
            de-duplication. With duplicates and ``unique_filter=True`` the ranks are wrong.

    Returns:
        ``Ranks`` of float64 tensors of shape ``[q]`` on the device of ``scores``.
    """
    del inplace  # see the docstring: never needed
    if scores.ndim != 2:
        raise ValueError(f"scores must have shape (q, E), got {tuple(scores.shape)}")
    q, num_entities = scores.shape
    targets = targets.to(scores.device).long()
    if targets.shape != (q,):
        raise ValueError(f"targets must have shape ({q},), got {tuple(targets.shape)}")
    rows = torch.arange(q, device=scores.device)
    target_scores = scores[rows, targets].unsqueeze(1)  # [q, 1]

    mask = torch.empty(scores.shape, dtype=torch.bool, device=scores.device)  # one buffer for both comparisons
    greater = _count_per_row(torch.gt(scores, target_scores, out=mask))  # [q] int64; NaN compares false
    equal = _count_per_row(torch.eq(scores, target_scores, out=mask)) - 1  # minus the target itself (if not NaN)

    if (filter_rows is None) != (filter_cols is None):
        raise ValueError("pass both filter_rows and filter_cols, or neither")
    if filter_rows is not None and filter_cols is not None and filter_rows.numel():
        f_rows = filter_rows.to(scores.device).long()
        f_cols = filter_cols.to(scores.device).long()
        if not unique_filter:
            code = torch.unique(f_rows * num_entities + f_cols)
            f_rows = torch.div(code, num_entities, rounding_mode="floor")
            f_cols = code - f_rows * num_entities
        f_scores = scores[f_rows, f_cols]
        f_target = target_scores.squeeze(1)[f_rows]
        # Filter pairs on the target itself change nothing: the target is neither greater than itself, and its
        # self-equality was already subtracted above.
        not_target = f_cols != targets[f_rows]
        flags = torch.stack([f_scores > f_target, (f_scores == f_target) & not_target], dim=1)
        corrections = torch.zeros(q, 2, dtype=torch.long, device=scores.device)
        corrections.index_add_(0, f_rows, flags.long())
        greater -= corrections[:, 0]
        equal -= corrections[:, 1]

    greater_f = greater.double()
    equal_f = equal.double()
    optimistic = 1.0 + greater_f
    pessimistic = optimistic + equal_f
    realistic = optimistic + 0.5 * equal_f
    # Unconditional (no ``if nan.any()``): a host sync per chunk would stall CUDA; these are [q]-sized ops.
    nan_target = torch.isnan(target_scores.squeeze(1))
    worst = torch.tensor(float(num_entities), dtype=torch.float64, device=scores.device)
    optimistic = torch.where(nan_target, worst, optimistic)
    pessimistic = torch.where(nan_target, worst, pessimistic)
    realistic = torch.where(nan_target, worst, realistic)
    return Ranks(optimistic=optimistic, pessimistic=pessimistic, realistic=realistic)


def realistic_ranks(
    scores: torch.Tensor,
    targets: torch.Tensor,
    filter_rows: torch.Tensor | None = None,
    filter_cols: torch.Tensor | None = None,
    *,
    inplace: bool = False,
) -> torch.Tensor:
    """Filtered realistic ranks ``FloatTensor[q]`` (float64); see ``ranks_from_scores`` for the arguments."""
    return ranks_from_scores(scores, targets, filter_rows, filter_cols, inplace=inplace).realistic


# ---------------------------------------------------------------------------------------------------------------------
# Evaluator
# ---------------------------------------------------------------------------------------------------------------------
class RankingEvaluator:
    """Chunked (filtered) link-prediction evaluation over score matrices.

    Peak memory: one ``[batch_size, E]`` score matrix from ``score_fn`` plus one boolean ``[batch_size, E]`` mask
    and the filter entries of the chunk. ``filter_index=None`` gives raw (unfiltered) ranks.
    """

    def __init__(
        self,
        filter_index: FilterIndex | None,
        num_entities: int,
        batch_size: int = 256,
        device: torch.device | str = "cpu",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if filter_index is not None and filter_index.num_entities != num_entities:
            raise ValueError(f"filter index has {filter_index.num_entities} entities, evaluator {num_entities}")
        self.device = torch.device(device)
        self.filter_index = filter_index.to(self.device) if filter_index is not None else None
        self.num_entities = num_entities
        self.batch_size = batch_size

    def evaluate(
        self,
        score_fn: ScoreFn,
        triples: torch.Tensor,
        sides: Sequence[str] = SIDES,
        progress: bool = False,
    ) -> EvaluationResult:
        """Rank the target of every query of ``triples: LongTensor[n, 3]`` on each side in ``sides``.

        ``score_fn(side, anchors: LongTensor[q], relations: LongTensor[q]) -> Tensor[q, E]`` is called with
        ``q <= batch_size`` queries on ``self.device`` under ``torch.no_grad()`` (not inference mode, so models may
        cache tensors that are later used with autograd). Query order of the result: all queries of ``sides[0]`` in
        triple order, then those of ``sides[1]``.
        """
        if triples.ndim != 2 or triples.shape[1] != 3:
            raise ValueError(f"triples must have shape (n, 3), got {tuple(triples.shape)}")
        sides = tuple(_check_side(s) for s in sides)
        triples_dev = triples.to(self.device).long()
        n = triples_dev.shape[0]
        starts = range(0, n, self.batch_size)
        bar = None
        if progress:  # drawn only when stderr is a terminal
            from kgdistill.progress import bar as progress_bar

            bar = progress_bar(len(sides) * len(starts), "evaluating", unit="batch")
        parts: list[Ranks] = []
        side_codes: list[torch.Tensor] = []
        with torch.no_grad():
            for side in sides:
                anchor_col, target_col = (0, 2) if side == "tail" else (2, 0)
                for start in starts:
                    chunk = triples_dev[start:start + self.batch_size]
                    anchors, relations, targets = chunk[:, anchor_col], chunk[:, 1], chunk[:, target_col]
                    scores = score_fn(side, anchors, relations)
                    if scores.shape != (chunk.shape[0], self.num_entities):
                        raise ValueError(f"score_fn returned shape {tuple(scores.shape)} for side {side!r}, "
                                         f"expected ({chunk.shape[0]}, {self.num_entities})")
                    rows = cols = None
                    if self.filter_index is not None:
                        rows, cols = self.filter_index.known(side, anchors, relations)
                    ranks = ranks_from_scores(scores, targets, rows, cols, unique_filter=True)
                    parts.append(ranks)  # kept on device: one transfer at the end, no sync per chunk
                    del scores
                    if bar is not None:
                        bar.update(1)
                side_codes.append(torch.full((n,), TAIL if side == "tail" else HEAD, dtype=torch.int8))
        if bar is not None:
            bar.close()

        def cat(name: str) -> torch.Tensor:
            values = [getattr(p, name) for p in parts]
            return torch.cat(values).cpu() if values else torch.empty(0, dtype=torch.float64)

        triples_cpu = triples.detach().cpu().long()
        return EvaluationResult(
            realistic=cat("realistic"),
            optimistic=cat("optimistic"),
            pessimistic=cat("pessimistic"),
            triples=triples_cpu.repeat(len(sides), 1),
            sides=torch.cat(side_codes) if side_codes else torch.empty(0, dtype=torch.int8),
            num_entities=self.num_entities,
        )
