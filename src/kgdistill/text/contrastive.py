"""The SimKGC contrastive objective: InfoNCE with additive margin, learnable temperature and exact masks.

Wang et al., ACL 2022, "SimKGC", §3.2–3.3. For a batch of ``B`` queries ``(h_i, r_i)`` with positive tails ``t_i``:
``logits[i, j] = (cos(e_hr_i, e_t_j) - γ·[i = j]) / τ`` over the in-batch tails, optionally followed by one
self-negative column ``cos(e_hr_i, e_h_i) / τ`` and ``K`` pre-batch columns ``w · cos(e_hr_i, q_k) / τ``. Candidates
that are in fact true answers (the same tail, or any known training tail of ``(h_i, r_i)``) are masked to ``-1e4``.
``loss = CE(logits, i) + CE(logits[:, :B]ᵀ, i)`` (the second term ranks queries for each tail).

Over several processes (:func:`sharded_simkgc_loss`) the batch is the union of the ranks' shares: each rank scores
its ``b`` queries against the tails of every rank and its ``b`` tails against the queries of every rank (the
embeddings gathered with gradients), so the mean of the ranks' losses is the loss of the global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kgdistill.text.textdata import KnownTails

MASKED = -1e4


def in_batch_false_negatives(h: Tensor, r: Tensor, t: Tensor, known: KnownTails | None = None) -> Tensor:
    """``[B, B]`` bool, True where in-batch candidate ``t_j`` (``j ≠ i``) is a true answer of query ``(h_i, r_i)``:
    ``t_j == t_i`` or ``(h_i, r_i, t_j)`` is a known (training) triple. The diagonal is never masked."""
    mask = t.unsqueeze(0) == t.unsqueeze(1)
    if known is not None:
        mask |= known.contains(h.unsqueeze(1), r.unsqueeze(1), t.unsqueeze(0))
    mask.fill_diagonal_(False)
    return mask


def self_negative_mask(h: Tensor, r: Tensor, t: Tensor, known: KnownTails | None = None) -> Tensor:
    """``[B]`` bool, True where the head itself is a true answer (``h_i == t_i`` or ``(h_i, r_i, h_i)`` known), so
    the self-negative column must be masked."""
    mask = h == t
    if known is not None:
        mask |= known.contains(h, r, h)
    return mask


def prebatch_false_negatives(h: Tensor, r: Tensor, t: Tensor, queue_ids: Tensor,
                             known: KnownTails | None = None) -> Tensor:
    """``[B, K]`` bool, True where queued tail ``queue_ids[k]`` is a true answer of ``(h_i, r_i)``."""
    mask = queue_ids.unsqueeze(0) == t.unsqueeze(1)
    if known is not None:
        mask |= known.contains(h.unsqueeze(1), r.unsqueeze(1), queue_ids.unsqueeze(0))
    return mask


def simkgc_logits(hr: Tensor, tails: Tensor, inv_t: Tensor | float, margin: float = 0.0,
                  in_batch_mask: Tensor | None = None, heads: Tensor | None = None,
                  self_mask: Tensor | None = None, prebatch: Tensor | None = None,
                  prebatch_mask: Tensor | None = None, prebatch_weight: float = 0.5, offset: int = 0) -> Tensor:
    """Logit matrix ``[b, B + (1 if heads) + K]`` of SimKGC.

    ``hr: [b, d]`` queries, ``tails: [B, d]`` in-batch candidates, ``heads: [b, d]``, all L2-normalised; query
    ``i``'s positive is candidate ``offset + i`` (``b = B``, ``offset = 0`` in one process; a rank's share of a
    global batch otherwise); ``inv_t`` = 1/τ; ``margin`` γ subtracted from the positives (pass 0 outside training);
    ``in_batch_mask: [b, B]``, ``self_mask: [b]``, ``prebatch: [K, d]``, ``prebatch_mask: [b, K]`` (True = mask to
    -1e4).
    """
    logits = hr @ tails.T
    if margin:
        rows = torch.arange(logits.shape[0], device=logits.device)
        positives = torch.zeros_like(logits, dtype=torch.bool)
        positives[rows, rows + offset] = True
        logits = logits - margin * positives.to(logits.dtype)
    logits = logits * inv_t
    if in_batch_mask is not None:
        logits = logits.masked_fill(in_batch_mask, MASKED)
    cols = [logits]
    if heads is not None:
        s = (hr * heads).sum(-1, keepdim=True) * inv_t
        if self_mask is not None:
            s = s.masked_fill(self_mask.unsqueeze(1), MASKED)
        cols.append(s)
    if prebatch is not None and prebatch.numel():
        p = (hr @ prebatch.T) * inv_t * prebatch_weight
        if prebatch_mask is not None:
            p = p.masked_fill(prebatch_mask, MASKED)
        cols.append(p)
    return torch.cat(cols, dim=1) if len(cols) > 1 else logits


def simkgc_loss(logits: Tensor, batch_size: int | None = None) -> Tensor:
    """``CE(logits, diag) + CE(logits[:, :B]ᵀ, diag)`` for ``logits: [B, B + extra]`` (scalar, batch mean)."""
    B = logits.shape[0] if batch_size is None else batch_size
    labels = torch.arange(B, device=logits.device)
    return F.cross_entropy(logits, labels) + F.cross_entropy(logits[:, :B].T, labels)


def sharded_simkgc_loss(logits: Tensor, column_logits: Tensor, offset: int) -> Tensor:
    """One rank's SimKGC loss on its share of a global batch of ``B`` triples (rows ``offset .. offset + b``).

    ``logits: [b, B + extra]``: this rank's queries against every rank's tails (plus self- and pre-batch columns);
    ``column_logits: [b, B]``: this rank's tails against every rank's queries, i.e. this rank's rows of the global
    ``logits[:, :B]ᵀ`` (:func:`simkgc_logits` with the tails as queries, the queries as candidates and the transposed
    mask). Returns ``CE(logits, offset + i) + CE(column_logits, offset + i)``, both means over the ``b`` rows: with
    equal shares the mean over the ranks equals :func:`simkgc_loss` of the global batch.
    """
    labels = offset + torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, labels) + F.cross_entropy(column_logits, labels)


class PreBatchQueue:
    """FIFO of the last ``num_batches`` batches' tail embeddings ``[K, d]`` (detached) and their ids ``[K]``."""

    def __init__(self, num_batches: int) -> None:
        self.num_batches = int(num_batches)
        self.vecs: list[Tensor] = []
        self.ids: list[Tensor] = []

    def get(self) -> tuple[Tensor | None, Tensor | None]:
        if not self.vecs:
            return None, None
        return torch.cat(self.vecs), torch.cat(self.ids)

    def push(self, vecs: Tensor, ids: Tensor) -> None:
        if self.num_batches <= 0:
            return
        self.vecs.append(vecs.detach())
        self.ids.append(ids.detach())
        if len(self.vecs) > self.num_batches:
            self.vecs.pop(0)
            self.ids.pop(0)
