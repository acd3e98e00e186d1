"""Embedding models: an entity table, a relation table and an interaction (PyKEEN's decomposition)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgdistill.models.base import KGCModel, model_classes
from kgdistill.models.interactions import interactions

ENTITY_CONSTRAINTS = ("none", "unit_norm")


@model_classes.register("embedding")
class EmbeddingModel(KGCModel):
    """Entity rows ``[E, De]``, relation rows ``[R', Dr]`` (``R' = 2R`` with reciprocal relations), an interaction.

    Args:
        interaction: registered name (``transe``, ``distmult``, ``complex``, ``rotate``, ``simple``).
        num_entities, num_relations: sizes of the id maps.
        dim: model dimension (complex models store ``2·dim`` reals per row).
        reciprocal: add an inverse relation ``r + R`` per relation and predict heads as tails of the inverse
            (Lacroix et al., 2018); used by 1-N training.
        entity_constraint: ``unit_norm`` renormalises entity rows after every step (TransE, Bordes et al.).
        interaction_options: options of the interaction (``{"p": 2}`` for TransE-L2, ``{"norm": "l2"}`` …).
    """

    registry_name = "embedding"

    def __init__(
        self,
        interaction: str,
        num_entities: int,
        num_relations: int,
        dim: int,
        reciprocal: bool = False,
        entity_constraint: str | None = None,
        interaction_options: dict[str, Any] | None = None,
        init_scale: float | None = None,
    ) -> None:
        super().__init__()
        self.interaction_name = interactions.canonical(interaction)
        self.interaction = interactions.get(interaction)(**(interaction_options or {}))
        if entity_constraint is None:
            entity_constraint = "unit_norm" if self.interaction_name == "transe" else "none"
        if entity_constraint not in ENTITY_CONSTRAINTS:
            raise ValueError(f"entity_constraint must be one of {ENTITY_CONSTRAINTS}, got {entity_constraint!r}")
        self.num_entities, self.num_relations, self.dim = num_entities, num_relations, dim
        self.reciprocal, self.entity_constraint, self.init_scale = reciprocal, entity_constraint, init_scale
        n_rel_rows = 2 * num_relations if reciprocal else num_relations
        self.entity = nn.Parameter(torch.empty(num_entities, self.interaction.entity_width(dim)))
        self.relation = nn.Parameter(torch.empty(n_rel_rows, self.interaction.relation_width(dim)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.init_scale is not None:
            with torch.no_grad():
                self.entity.normal_(0.0, self.init_scale)
                self.relation.normal_(0.0, self.init_scale)
        else:
            self.interaction.init_entities(self.entity.data, self.dim)
            self.interaction.init_relations(self.relation.data, self.dim)
        self.apply_constraints()

    def config(self) -> dict[str, Any]:
        return {
            "interaction": self.interaction_name,
            "num_entities": self.num_entities,
            "num_relations": self.num_relations,
            "dim": self.dim,
            "reciprocal": self.reciprocal,
            "entity_constraint": self.entity_constraint,
            "interaction_options": self.interaction.extra_options(),
            "init_scale": self.init_scale,
        }

    def apply_constraints(self) -> None:
        if self.entity_constraint == "unit_norm":
            with torch.no_grad():
                self.entity.div_(self.entity.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    # representations ---------------------------------------------------------------------------------------------
    def entity_rows(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.entity)

    def relation_rows(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.relation)

    def _candidate_rows(self, candidates: Tensor | None) -> Tensor:
        return self.entity if candidates is None else self.entity_rows(candidates)

    # scoring modes -------------------------------------------------------------------------------------------
    def score_hrt(self, hrt: Tensor) -> Tensor:
        h, r, t = self.entity_rows(hrt[:, 0]), self.relation_rows(hrt[:, 1]), self.entity_rows(hrt[:, 2])
        return self.interaction(h, r, t)

    def score_t(self, h: Tensor, r: Tensor, candidates: Tensor | None = None) -> Tensor:
        q = self.interaction.tail_query(self.entity_rows(h), self.relation_rows(r))
        return self.interaction.similarity.candidates(q, self._candidate_rows(candidates))

    def score_h(self, r: Tensor, t: Tensor, candidates: Tensor | None = None) -> Tensor:
        if self.reciprocal:
            return self.score_t(t, r + self.num_relations, candidates)
        q = self.interaction.head_query(self.relation_rows(r), self.entity_rows(t))
        return self.interaction.similarity.candidates(q, self._candidate_rows(candidates))

    def score_hrt_ids(self, h: Tensor, r: Tensor, t: Tensor) -> Tensor:
        """Scores of broadcastable id tensors ``h``, ``r``, ``t`` (e.g. ``[B, N]``, ``[B, 1]``, ``[B, 1]``)."""
        return self.interaction(self.entity_rows(h), self.relation_rows(r), self.entity_rows(t))
