"""One training step per training mode: negative sampling (sLCWA) and 1-N (1vsAll, KvsAll).

Each step returns the loss (a scalar tensor with grad) for a batch; the loop owns the optimiser.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kgdistill import kernels
from kgdistill.losses import Loss, Regularizer, bce_kvsall, cross_entropy_1vsall
from kgdistill.models.base import KGCModel
from kgdistill.models.embedding import EmbeddingModel
from kgdistill.training.negatives import NegativeSampler


def _scores_from_table(model: KGCModel) -> bool:
    """True when the model's entity rows are plain lookups in ``model.entity`` (so negatives may be scored from the
    table and their ids directly)."""
    return isinstance(model, EmbeddingModel) and type(model).entity_rows is EmbeddingModel.entity_rows


def _merge_table_gradients(model: EmbeddingModel, neg_ids: Tensor) -> bool:
    """Whether to gather the anchor rows with :func:`kgdistill.kernels.gather_rows`, which merges the table
    gradients of the anchor rows and of the negatives (one dense ``E × D`` tensor per step instead of two plus a sum),
    when the corruption kernel will run; the gradient values are the same."""
    table = model.entity
    return not (model.interaction.similarity.kernel is None or neg_ids.numel() == 0 or not table.requires_grad
                or not torch.is_grad_enabled() or table.device.type != "cpu" or table.dtype != torch.float32
                or not table.is_contiguous() or not kernels.available())


def negative_sampling_scores(model: KGCModel, batch: Tensor, neg_ids: Tensor,
                             corrupt_head: Tensor | None, num_head: int) -> tuple[Tensor, Tensor, list]:
    """Scores of positives ``[B]`` and corruptions ``[B, N]``, and the rows used (for regularisers).

    Fixed layout (``corrupt_head`` None): columns ``[:num_head]`` replace the head, the rest the tail. Embedding
    models score all corruptions against one query vector per side, without a ``B × N × 3`` id tensor, and (when
    the entity rows are plain table lookups) straight from the table and the ids with
    :meth:`~kgdistill.models.similarity.Similarity.corruption_scores`.
    """
    h, r, t = batch[:, 0], batch[:, 1], batch[:, 2]
    if isinstance(model, EmbeddingModel):
        inter = model.interaction
        from_table = _scores_from_table(model)
        neg_table = model.entity
        if from_table and _merge_table_gradients(model, neg_ids):
            anchor_rows, neg_table = kernels.gather_rows(model.entity, torch.stack([h, t]))
            h_rows, t_rows = anchor_rows.unbind(0)
        else:
            h_rows, t_rows = model.entity_rows(h), model.entity_rows(t)
        r_rows = model.relation_rows(r)
        q_tail = inter.tail_query(h_rows, r_rows)
        pos = inter.similarity.pairwise(q_tail, t_rows)
        rows = [(h_rows, inter.entity_kind), (r_rows, inter.relation_kind), (t_rows, inter.entity_kind)]
        if model.reciprocal:
            q_head = inter.tail_query(t_rows, model.relation_rows(r + model.num_relations))
        else:
            q_head = inter.head_query(r_rows, t_rows)
        sim = inter.similarity
        if from_table:
            neg = sim.corruption_scores(q_head, q_tail, neg_table, neg_ids, num_head, corrupt_head)
            return pos, neg, rows
        if corrupt_head is None:
            neg_h = sim.per_query(q_head, model.entity_rows(neg_ids[:, :num_head]))
            neg_t = sim.per_query(q_tail, model.entity_rows(neg_ids[:, num_head:]))
            return pos, torch.cat([neg_h, neg_t], dim=1), rows
        cand = model.entity_rows(neg_ids)
        neg = torch.where(corrupt_head, sim.per_query(q_head, cand), sim.per_query(q_tail, cand))
        return pos, neg, rows
    pos = model.score_hrt(batch)
    if corrupt_head is None:
        neg = torch.cat([model.score_h(r, t, neg_ids[:, :num_head]), model.score_t(h, r, neg_ids[:, num_head:])], 1)
    else:
        neg = torch.where(corrupt_head, model.score_h(r, t, neg_ids), model.score_t(h, r, neg_ids))
    return pos, neg, []


def slcwa_loss(model: KGCModel, batch: Tensor, sampler: NegativeSampler, loss_fn: Loss,
               regularizer: Regularizer, generator: torch.Generator) -> Tensor:
    neg_ids, corrupt_head = sampler.sample(batch, generator)
    pos, neg, rows = negative_sampling_scores(model, batch, neg_ids, corrupt_head, sampler.num_head_negatives)
    loss = loss_fn(pos, neg)
    if rows and regularizer.weight:
        loss = loss + regularizer(rows)
    return loss


def one_to_n_queries(train: Tensor, num_relations: int) -> tuple[Tensor, Tensor, Tensor]:
    """All training queries of 1-N training with reciprocal relations.

    Returns ``anchors[2n]``, ``relations[2n]`` (inverse relations are ``r + R``) and ``targets[2n]``.
    """
    h, r, t = train[:, 0], train[:, 1], train[:, 2]
    return torch.cat([h, t]), torch.cat([r, r + num_relations]), torch.cat([t, h])


def _query_rows(model: KGCModel, anchors: Tensor, relations: Tensor, targets: Tensor) -> list:
    if not isinstance(model, EmbeddingModel):
        return []
    inter = model.interaction
    if not model.reciprocal:  # an inverse query (r ≥ R) uses relation r - R's row
        relations = relations % model.num_relations
    return [(model.entity_rows(anchors), inter.entity_kind), (model.relation_rows(relations), inter.relation_kind),
            (model.entity_rows(targets), inter.entity_kind)]


def score_queries(model: KGCModel, anchors: Tensor, relations: Tensor) -> Tensor:
    """All-entity scores ``[B, E]`` of 1-N queries; relations ≥ R are inverse (head prediction)."""
    num_rel = model.num_relations
    if getattr(model, "reciprocal", False):
        return model.score_t(anchors, relations)
    inverse = relations >= num_rel
    scores = model.score_t(anchors, relations % num_rel)
    if inverse.any():
        scores[inverse] = model.score_h(relations[inverse] - num_rel, anchors[inverse])
    return scores


def score_query_candidates(model: KGCModel, anchors: Tensor, relations: Tensor, candidates: Tensor) -> Tensor:
    """Scores of 1-N queries against candidate ids: shared ``candidates[K]`` → ``[B, K]`` (one matmul), or per
    query ``candidates[B, K]`` → ``[B, K]``; relations ≥ R are inverse (the candidates are heads)."""
    num_rel = model.num_relations
    if getattr(model, "reciprocal", False):
        return model.score_t(anchors, relations, candidates)
    inverse = relations >= num_rel
    scores = model.score_t(anchors, relations % num_rel, candidates)
    if inverse.any():
        own = candidates[inverse] if candidates.dim() == 2 else candidates
        scores[inverse] = model.score_h(relations[inverse] - num_rel, anchors[inverse], own)
    return scores


def one_vs_all_loss(model: KGCModel, anchors: Tensor, relations: Tensor, targets: Tensor,
                    regularizer: Regularizer) -> Tensor:
    loss = cross_entropy_1vsall(score_queries(model, anchors, relations), targets)
    if regularizer.weight:
        rows = _query_rows(model, anchors, relations, targets)
        if rows:
            loss = loss + regularizer(rows)
    return loss


class KvsAllLabels:
    """Distinct training queries ``(anchor, relation)`` with their known answers (CSR), for KvsAll."""

    def __init__(self, train: Tensor, num_entities: int, num_relations: int) -> None:
        anchors, relations, targets = one_to_n_queries(train, num_relations)
        key = anchors * (2 * num_relations) + relations
        order = torch.argsort(key * num_entities + targets)
        key, targets = key[order], targets[order]
        unique, counts = torch.unique_consecutive(key, return_counts=True)
        self.anchors = unique // (2 * num_relations)
        self.relations = unique % (2 * num_relations)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        self.targets = targets
        self.num_entities = num_entities

    def __len__(self) -> int:
        return self.anchors.shape[0]

    def labels(self, query_ids: Tensor) -> Tensor:
        """Multi-hot ``[B, E]`` labels of the queries ``query_ids[B]``."""
        starts, ends = self.offsets[query_ids], self.offsets[query_ids + 1]
        lengths = ends - starts
        rows = torch.repeat_interleave(torch.arange(query_ids.shape[0]), lengths)
        pos = torch.arange(int(lengths.sum())) - torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths)
        cols = self.targets[torch.repeat_interleave(starts, lengths) + pos]
        labels = torch.zeros(query_ids.shape[0], self.num_entities)
        labels[rows, cols] = 1.0
        return labels


def kvsall_loss(model: KGCModel, table: KvsAllLabels, query_ids: Tensor, regularizer: Regularizer,
                label_smoothing: float) -> Tensor:
    device = model.device
    anchors, relations = table.anchors[query_ids].to(device), table.relations[query_ids].to(device)
    scores = score_queries(model, anchors, relations)
    loss = bce_kvsall(scores, table.labels(query_ids).to(device), label_smoothing)
    if regularizer.weight and isinstance(model, EmbeddingModel):
        inter = model.interaction
        rows = [(model.entity_rows(anchors), inter.entity_kind), (model.relation_rows(relations), inter.relation_kind)]
        loss = loss + regularizer(rows)
    return loss
