"""Similarities between query vectors and entity representations, with fast all-entity paths.

Every embedding interaction of kgdistill is written as ``sim(query(h, r), t)`` for tail prediction and
``sim(query'(r, t), h)`` for head prediction (see :mod:`kgdistill.models.interactions`). A similarity scores

* broadcastable tensors: ``q[..., D]`` and ``e[..., D]`` → ``[...]``;
* all candidates shared by the queries: ``q[n, D]`` and ``e[k, D]`` → ``[n, k]`` (a matrix product where the
  algebra allows it, chunked otherwise, so no ``n × k × D`` temporary is built);
* per-query candidates: ``q[n, D]`` and ``e[n, k, D]`` → ``[n, k]``.

Higher is better: distances are returned negated.

Fast paths (CPU, float32; see :mod:`kgdistill.kernels`): the L1 and complex-L1 all-entity scores without autograd,
per-query candidates, and :meth:`Similarity.corruption_scores` (negative samples scored straight from the entity
table and their ids, with a backward that never builds ``B × N × D``) run compiled kernels, registered as the
PyTorch operators ``torch.ops.kgdistill.*`` with their autograd formulas, when available. Every
fast path computes the plain broadcast formula of :meth:`Similarity.pairwise` (tests compare values and gradients);
``KGDISTILL_KERNELS=0`` or :func:`kgdistill.kernels.disabled` selects the PyTorch code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from kgdistill import kernels
from kgdistill.registry import Registry

similarities: Registry[type[Similarity]] = Registry("similarity")

#: Elements of the ``chunk × k × D`` temporary allowed in the broadcast fallback (~64 MB of float32).
BROADCAST_BUDGET = 1 << 24
#: Elements of ``n × k × D`` above which the chunks are recomputed in backward under autograd (~0.5 GB a temporary).
CHECKPOINT_BUDGET = 1 << 27


class Similarity:
    """Base class: subclasses implement :meth:`pairwise` (broadcast) and may override :meth:`all_pairs`."""

    name = "base"
    #: kernel of :mod:`kgdistill.kernels` computing this similarity (None: PyTorch only)
    kernel: str | None = None

    def pairwise(self, q: Tensor, e: Tensor) -> Tensor:
        """Broadcast ``q[..., D]`` against ``e[..., D]`` → ``[...]``."""
        raise NotImplementedError

    def all_pairs(self, q: Tensor, e: Tensor) -> Tensor:
        """``q[n, D]`` × ``e[k, D]`` → ``[n, k]``; default: broadcast in chunks of queries.

        Under autograd, past :data:`CHECKPOINT_BUDGET` elements of ``n × k × D``, each chunk is recomputed in the
        backward pass (activation checkpointing) instead of keeping its ``chunk × k × D`` temporaries until then:
        otherwise the chunking saves nothing (a 1-N RotatE step over 40,943 WN18RR entities asked for tens of GB).
        Gradients of any order are those of the plain formula; the recomputation costs ≈ 1.5× (BENCHMARKS.md)."""
        n, k, d = q.shape[0], e.shape[0], q.shape[-1]
        chunk = max(1, BROADCAST_BUDGET // max(1, k * d))
        if chunk >= n:
            return self.pairwise(q[:, None, :], e[None, :, :])
        if n * k * d > CHECKPOINT_BUDGET and torch.is_grad_enabled() and (q.requires_grad or e.requires_grad):
            return torch.cat([checkpoint(self._broadcast, q[i:i + chunk], e, use_reentrant=False)
                              for i in range(0, n, chunk)])
        return torch.cat([self._broadcast(q[i:i + chunk], e) for i in range(0, n, chunk)])

    def _broadcast(self, q: Tensor, e: Tensor) -> Tensor:
        return self.pairwise(q[:, None, :], e[None, :, :])

    def per_query(self, q: Tensor, e: Tensor) -> Tensor:
        """``q[n, D]`` × ``e[n, k, D]`` → ``[n, k]``."""
        return self.pairwise(q[:, None, :], e)

    def candidates(self, q: Tensor, e: Tensor) -> Tensor:
        """Dispatch on the candidate shape: ``e[k, D]`` shared or ``e[n, k, D]`` per query → ``[n, k]``."""
        return self.all_pairs(q, e) if e.dim() == 2 else self.per_query(q, e)

    def corruption_scores(self, q_head: Tensor, q_tail: Tensor, table: Tensor, ids: Tensor, num_head: int = 0,
                          corrupt_head: Tensor | None = None) -> Tensor:
        """Scores ``[B, N]`` of corrupted triples, candidates ``table[ids[b, j]]``.

        Column ``j`` of row ``b`` corrupts the head, and is compared with ``q_head[b]``, where ``corrupt_head[b, j]``
        (or, when ``corrupt_head`` is None, where ``j < num_head``); it corrupts the tail, compared with
        ``q_tail[b]``, otherwise. Equals ``per_query`` on the gathered rows, with its gradients; the kernel path
        (the operator ``kgdistill::corruption_scores``) gives ``table`` a dense gradient and never materialises the
        ``B × N × D`` candidate rows (:func:`kgdistill.kernels.gather_rows` merges it with the anchor rows' one).
        """
        if self.kernel is not None and kernels.enabled():
            fast = kernels.corruption_scores(self.kernel, q_head, q_tail, table, ids, num_head, corrupt_head)
            if fast is not None:
                return fast
        if corrupt_head is None:
            neg_h = self.per_query(q_head, F.embedding(ids[:, :num_head], table))
            neg_t = self.per_query(q_tail, F.embedding(ids[:, num_head:], table))
            return torch.cat([neg_h, neg_t], dim=1)
        cand = F.embedding(ids, table)
        return torch.where(corrupt_head, self.per_query(q_head, cand), self.per_query(q_tail, cand))

    def _per_query_kernel(self, q: Tensor, e: Tensor) -> Tensor | None:
        """``per_query`` through the corruption kernel (the candidates as a table, identity ids), or None."""
        if self.kernel is None or not kernels.enabled() or e.dim() != 3 or q.dim() != 2:
            return None
        n, k, d = e.shape
        if q.shape != (n, d) or not n * k:
            return None
        ids = torch.arange(n * k, device=e.device).view(n, k)
        return kernels.corruption_scores(self.kernel, q, q, e.reshape(n * k, d), ids)


@similarities.register("dot")
class Dot(Similarity):
    """Inner product ``<q, e>`` (DistMult, ComplEx, SimplE after the query is formed)."""

    name = "dot"
    kernel = "dot"

    def pairwise(self, q: Tensor, e: Tensor) -> Tensor:
        return (q * e).sum(-1)

    def all_pairs(self, q: Tensor, e: Tensor) -> Tensor:
        return q @ e.T

    def per_query(self, q: Tensor, e: Tensor) -> Tensor:
        return torch.bmm(e, q.unsqueeze(-1)).squeeze(-1)


@similarities.register("l2")
class NegativeL2(Similarity):
    """``-||q - e||_2`` (TransE-L2; RotatE with the complex L2 norm, as in PyKEEN)."""

    name = "l2"
    kernel = "l2"

    def pairwise(self, q: Tensor, e: Tensor) -> Tensor:
        return -torch.linalg.vector_norm(q - e, ord=2, dim=-1)

    def all_pairs(self, q: Tensor, e: Tensor) -> Tensor:
        if torch.is_grad_enabled() and (q.requires_grad or e.requires_grad):
            return -torch.cdist(q, e, p=2.0)
        # ||q||² + ||e||² - 2 q·e: one matrix product, no n × k × D temporary
        sq = (q * q).sum(-1, keepdim=True) + (e * e).sum(-1)[None, :] - 2.0 * (q @ e.T)
        return -sq.clamp_min_(0.0).sqrt_()

    def per_query(self, q: Tensor, e: Tensor) -> Tensor:
        fast = self._per_query_kernel(q, e)
        if fast is not None:
            return fast
        return -torch.cdist(q[:, None, :], e, p=2.0).squeeze(1)


@similarities.register("l1")
class NegativeL1(Similarity):
    """``-||q - e||_1`` (TransE-L1, the TransE paper's and PyKEEN's default)."""

    name = "l1"
    kernel = "l1"

    def pairwise(self, q: Tensor, e: Tensor) -> Tensor:
        return -(q - e).abs().sum(-1)

    def all_pairs(self, q: Tensor, e: Tensor) -> Tensor:
        fast = kernels.all_pairs("l1", q, e) if kernels.enabled() else None
        if fast is not None:
            return fast
        return -torch.cdist(q, e, p=1.0)

    def per_query(self, q: Tensor, e: Tensor) -> Tensor:
        fast = self._per_query_kernel(q, e)
        if fast is not None:
            return fast
        return -torch.cdist(q[:, None, :], e, p=1.0).squeeze(1)


@similarities.register("complex_l1", "modulus_l1")
class NegativeComplexL1(Similarity):
    """``-Σ_d |q_d - e_d|`` over complex coordinates stored as ``[re | im]`` halves (RotatE paper's distance)."""

    name = "complex_l1"
    kernel = "complex_l1"

    def pairwise(self, q: Tensor, e: Tensor) -> Tensor:
        d = q.shape[-1] // 2
        diff = q - e
        re, im = diff[..., :d], diff[..., d:]
        return -torch.sqrt(re * re + im * im + 1e-12).sum(-1)

    def all_pairs(self, q: Tensor, e: Tensor) -> Tensor:
        fast = kernels.all_pairs("complex_l1", q, e) if kernels.enabled() else None
        if fast is not None:
            return fast
        return super().all_pairs(q, e)

    def per_query(self, q: Tensor, e: Tensor) -> Tensor:
        fast = self._per_query_kernel(q, e)
        if fast is not None:
            return fast
        return super().per_query(q, e)
