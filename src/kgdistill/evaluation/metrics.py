"""Rank-based link-prediction metrics: MRR, MR, Hits@k, overall / per side / per relation / per relation category.

Metrics are micro-averages over queries: every (triple, side) query weighs the same, so a relation with many test
triples weighs more in the overall numbers; ``per_relation`` gives each relation's own average. Relation categories
follow Bordes et al. 2013 ("Translating Embeddings for Modeling Multi-relational Data") and Wang et al. 2014
("Knowledge Graph Embedding by Translating on Hyperplanes").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "HEAD",
    "TAIL",
    "EvaluationResult",
    "metrics_from_ranks",
    "relation_categories",
]

HEAD: int = 0
"""Side code of head queries (?, r, t) in ``EvaluationResult.sides``."""
TAIL: int = 1
"""Side code of tail queries (h, r, ?) in ``EvaluationResult.sides``."""

RANK_TYPES = ("realistic", "optimistic", "pessimistic")
JSON_FORMAT = "kgdistill.evaluation.summary/1"


def _metric_keys(hits_at: Sequence[int]) -> list[str]:
    return ["mrr", "mr", *(f"hits@{k}" for k in hits_at), "count"]


def _grouped_metrics(
    ranks: torch.Tensor, groups: torch.Tensor, num_groups: int, hits_at: Sequence[int]
) -> list[dict[str, float]]:
    """Metrics of each group: ``ranks: FloatTensor[m]``, ``groups: LongTensor[m]`` in ``[0, num_groups)``.

    A group without queries gets ``count`` 0 and NaN metrics.
    """
    ranks = ranks.double()
    counts = torch.bincount(groups, minlength=num_groups).double()

    def mean(values: torch.Tensor) -> torch.Tensor:
        sums = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, groups, values.double())
        return sums / counts  # 0 / 0 = NaN for empty groups

    columns = {"mrr": mean(1.0 / ranks), "mr": mean(ranks)}
    for k in hits_at:
        columns[f"hits@{k}"] = mean((ranks <= k).double())
    table = {key: col.tolist() for key, col in columns.items()}
    out = []
    for g in range(num_groups):
        row: dict[str, float] = {key: table[key][g] for key in columns}
        row["count"] = int(counts[g])
        out.append(row)
    return out


def metrics_from_ranks(ranks: torch.Tensor, hits_at: Sequence[int] = (1, 3, 10)) -> dict[str, float]:
    """``mrr`` (mean of 1 / rank), ``mr`` (mean rank), ``hits@k`` (fraction with rank <= k) and ``count``.

    ``ranks: FloatTensor[m]`` (1 = best). With ``m = 0`` all metrics are NaN and ``count`` is 0.
    """
    ranks = ranks.reshape(-1).cpu()
    return _grouped_metrics(ranks, torch.zeros(ranks.numel(), dtype=torch.long), 1, hits_at)[0]


@dataclass
class EvaluationResult:
    """Per-query ranks of one evaluation run.

    Attributes (``m`` = number of queries = number of triples x number of sides):
        realistic, optimistic, pessimistic: ``FloatTensor[m]`` (float64) ranks, 1 = best.
        triples: ``LongTensor[m, 3]`` the triple each query comes from.
        sides: ``Int8Tensor[m]``, ``HEAD`` (0) for (?, r, t) queries, ``TAIL`` (1) for (h, r, ?) queries.
        num_entities: number of candidate entities (the worst possible rank), 0 if unknown.
    """

    realistic: torch.Tensor
    optimistic: torch.Tensor
    pessimistic: torch.Tensor
    triples: torch.Tensor
    sides: torch.Tensor
    num_entities: int = 0

    def __post_init__(self) -> None:
        m = self.realistic.shape[0]
        for name in ("optimistic", "pessimistic", "sides"):
            if getattr(self, name).shape != (m,):
                raise ValueError(f"{name} must have shape ({m},), got {tuple(getattr(self, name).shape)}")
        if self.triples.shape != (m, 3):
            raise ValueError(f"triples must have shape ({m}, 3), got {tuple(self.triples.shape)}")

    def __len__(self) -> int:
        return int(self.realistic.shape[0])

    # ---- selection ---------------------------------------------------------------------------------------------
    def _side_mask(self, side: str) -> torch.Tensor | None:
        if side == "both":
            return None
        if side == "head":
            return self.sides == HEAD
        if side == "tail":
            return self.sides == TAIL
        raise ValueError(f"side must be 'both', 'head' or 'tail', got {side!r}")

    def ranks_tensor(self, rank_type: str = "realistic", side: str = "both") -> torch.Tensor:
        """The ranks ``FloatTensor[k]`` of one rank type, of all queries or of one side (query order kept)."""
        if rank_type not in RANK_TYPES:
            raise ValueError(f"rank_type must be one of {RANK_TYPES}, got {rank_type!r}")
        ranks: torch.Tensor = getattr(self, rank_type)
        mask = self._side_mask(side)
        return ranks if mask is None else ranks[mask]

    # ---- metrics -----------------------------------------------------------------------------------------------
    def metrics(
        self, side: str = "both", rank_type: str = "realistic", hits_at: Sequence[int] = (1, 3, 10)
    ) -> dict[str, float]:
        """``{"mrr", "mr", "hits@k" for k in hits_at, "count"}`` over the queries of ``side`` ("both" = all)."""
        return metrics_from_ranks(self.ranks_tensor(rank_type, side), hits_at)

    def summary(self, rank_type: str = "realistic", hits_at: Sequence[int] = (1, 3, 10)) -> dict[str, dict[str, float]]:
        """``{"both": metrics, "head": metrics, "tail": metrics}``."""
        return {side: self.metrics(side, rank_type, hits_at) for side in ("both", "head", "tail")}

    def _by_group(
        self, groups: torch.Tensor, num_groups: int, side: str, rank_type: str, hits_at: Sequence[int]
    ) -> list[dict[str, float]]:
        ranks = self.ranks_tensor(rank_type, side)
        mask = self._side_mask(side)
        if mask is not None:
            groups = groups[mask]
        return _grouped_metrics(ranks, groups, num_groups, hits_at)

    def per_relation(
        self,
        relation_names: Sequence[str] | None = None,
        side: str = "both",
        rank_type: str = "realistic",
        hits_at: Sequence[int] = (1, 3, 10),
    ) -> dict[str, dict[str, float]]:
        """Metrics of each relation that has queries, keyed by ``relation_names[r]`` (or ``str(r)``), in id order.

        Each relation's metrics average over its own queries (both sides by default).
        """
        relations = self.triples[:, 1].long()
        if relations.numel() == 0:
            return {}
        num_groups = int(relations.max()) + 1
        if relation_names is not None and len(relation_names) < num_groups:
            raise ValueError(f"relation_names has {len(relation_names)} names, relation ids reach {num_groups - 1}")
        rows = self._by_group(relations, num_groups, side, rank_type, hits_at)
        return {
            (relation_names[r] if relation_names is not None else str(r)): row
            for r, row in enumerate(rows)
            if row["count"] > 0
        }

    def per_category(
        self,
        categories: Mapping[int, str],
        side: str = "both",
        rank_type: str = "realistic",
        hits_at: Sequence[int] = (1, 3, 10),
    ) -> dict[str, dict[str, float]]:
        """Metrics of each category of relations (e.g. from ``relation_categories``), over all its queries.

        Queries whose relation is not in ``categories`` are grouped under "unknown" (present only if there are
        such queries). Categories are listed in sorted order; categories without queries are left out.
        """
        relations = self.triples[:, 1].long()
        names = sorted(set(categories.values()))
        unknown = len(names)
        table_size = max([int(relations.max()) + 1 if relations.numel() else 0, *(r + 1 for r in categories)])
        lookup = torch.full((max(table_size, 1),), unknown, dtype=torch.long)
        for r, name in categories.items():
            lookup[r] = names.index(name)
        groups = lookup[relations] if relations.numel() else relations
        rows = self._by_group(groups, unknown + 1, side, rank_type, hits_at)
        out = {name: rows[i] for i, name in enumerate(names) if rows[i]["count"] > 0}
        if rows[unknown]["count"] > 0:
            out["unknown"] = rows[unknown]
        return out

    # ---- serialisation -----------------------------------------------------------------------------------------
    def to_json_dict(self, rank_type: str = "realistic", hits_at: Sequence[int] = (1, 3, 10)) -> dict[str, Any]:
        """A JSON-safe dict of the summary (not the ranks); NaN (no queries) is written as ``null``."""
        summary = self.summary(rank_type, hits_at)
        return {
            "format": JSON_FORMAT,
            "rank_type": rank_type,
            "hits_at": list(hits_at),
            "num_entities": self.num_entities,
            "metrics": {
                side: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
                for side, row in summary.items()
            },
        }

    @staticmethod
    def from_json_dict(data: Mapping[str, Any]) -> dict[str, dict[str, float]]:
        """The summary (``{"both"|"head"|"tail": metrics}``) back from ``to_json_dict``'s output (``null`` -> NaN).

        The ranks are not stored, so this returns the summary dict, not an ``EvaluationResult``.
        """
        if data.get("format") != JSON_FORMAT or "metrics" not in data:
            raise ValueError(f"not an evaluation summary: expected format {JSON_FORMAT!r} with a 'metrics' key")
        out: dict[str, dict[str, float]] = {}
        for side, row in data["metrics"].items():
            out[side] = {
                k: (int(v) if k == "count" else (math.nan if v is None else float(v))) for k, v in row.items()
            }
        return out


def relation_categories(triples: torch.Tensor, num_relations: int, threshold: float = 1.5) -> dict[int, str]:
    """Classify each relation as "1-1", "1-N", "N-1" or "N-N" (Bordes et al. 2013; Wang et al. 2014).

    Averaging (per relation r, over its distinct triples): ``tph`` = average number of distinct tails per distinct
    (h, r) pair = #triples(r) / #distinct heads of r; ``hpt`` = average number of distinct heads per distinct (r, t)
    pair = #triples(r) / #distinct tails of r. Then "1-1" if tph < threshold and hpt < threshold; "1-N" if
    tph >= threshold and hpt < threshold; "N-1" if tph < threshold and hpt >= threshold; "N-N" if both >= threshold.

    Args:
        triples: ``LongTensor[n, 3]``, usually train ∪ valid ∪ test (duplicates are ignored).
        num_relations: R; relations without triples are left out of the result.

    Returns:
        ``{relation id: category}`` for every relation with at least one triple.
    """
    if triples.numel() == 0:
        return {}
    triples = triples.long().cpu()
    if int(triples[:, 1].min()) < 0 or int(triples[:, 1].max()) >= num_relations:
        raise ValueError(f"relation ids must lie in [0, {num_relations})")
    num_entities = int(triples[:, [0, 2]].max()) + 1
    h, r, t = triples.unbind(1)
    code = torch.unique((r * num_entities + h) * num_entities + t)  # distinct triples
    rel = torch.div(code, num_entities * num_entities, rounding_mode="floor")
    rh = torch.div(code, num_entities, rounding_mode="floor")  # r * E + h
    rt = rel * num_entities + code % num_entities  # r * E + t
    n_triples = torch.bincount(rel, minlength=num_relations).double()
    n_heads = torch.bincount(torch.div(torch.unique(rh), num_entities, rounding_mode="floor"),
                             minlength=num_relations).double()
    n_tails = torch.bincount(torch.div(torch.unique(rt), num_entities, rounding_mode="floor"),
                             minlength=num_relations).double()
    result: dict[int, str] = {}
    for rid in torch.nonzero(n_triples > 0).flatten().tolist():
        tph = float(n_triples[rid] / n_heads[rid])
        hpt = float(n_triples[rid] / n_tails[rid])
        many_tails, many_heads = tph >= threshold, hpt >= threshold
        result[rid] = {(False, False): "1-1", (True, False): "1-N", (False, True): "N-1", (True, True): "N-N"}[
            (many_tails, many_heads)
        ]
    return result
