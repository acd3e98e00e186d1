"""Similarities between query vectors and entity representations, with fast all-entity paths.

Every embedding interaction of kgdistill is written as ``sim(query(h, r), t)`` for tail prediction and
``sim(query'(r, t), h)`` for head prediction (see :mod:`kgdistill.models.interactions`). A similarity scores

* broadcastable tensors: ``q[..., D]`` and ``e[..., D]`` → ``[...]``;
* all candidates shared by the queries: ``q[n, D]`` and ``e[k, D]`` → ``[n, k]`` (a matrix product where the
  algebra allows it, chunked otherwise, so no ``n × k × D`` temporary is built);
* per-query candidates: ``q[n, D]`` and ``e[n, k, D]`` → ``[n, k]``.

Higher is better: distances are returned negated.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kgdistill.registry import Registry

similarities: Registry[type[Similarity]] = Registry("similarity")

#: Elements of the ``chunk × k × D`` temporary allowed in the broadcast fallback (~64 MB of float32).
BROADCAST_BUDGET = 1 << 24


class Similarity:
    """Base class: subclasses implement :meth:`pairwise` (broadcast) and may override :meth:`all_pairs`."""

    name = "base"

    def pairwise(self, q: Tensor, e: Tensor) -> Tensor:
        """Broadcast ``q[..., D]`` against ``e[..., D]`` → ``[...]``."""
        raise NotImplementedError

    def all_pairs(self, q: Tensor, e: Tensor) -> Tensor:
        """``q[n, D]`` × ``e[k, D]`` → ``[n, k]``; default: broadcast in chunks of queries."""
        n, k, d = q.shape[0], e.shape[0], q.shape[-1]
        chunk = max(1, BROADCAST_BUDGET // max(1, k * d))
        if chunk >= n:
            return self.pairwise(q[:, None, :], e[None, :, :])
        return torch.cat([self.pairwise(q[i:i + chunk, None, :], e[None, :, :]) for i in range(0, n, chunk)])

    def per_query(self, q: Tensor, e: Tensor) -> Tensor:
        """``q[n, D]`` × ``e[n, k, D]`` → ``[n, k]``."""
        return self.pairwise(q[:, None, :], e)

    def candidates(self, q: Tensor, e: Tensor) -> Tensor:
        """Dispatch on the candidate shape: ``e[k, D]`` shared or ``e[n, k, D]`` per query → ``[n, k]``."""
        return self.all_pairs(q, e) if e.dim() == 2 else self.per_query(q, e)


@similarities.register("dot")
class Dot(Similarity):
    """Inner product ``<q, e>`` (DistMult, ComplEx, SimplE after the query is formed)."""

    name = "dot"

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

    def pairwise(self, q: Tensor, e: Tensor) -> Tensor:
        return -torch.linalg.vector_norm(q - e, ord=2, dim=-1)

    def all_pairs(self, q: Tensor, e: Tensor) -> Tensor:
        if torch.is_grad_enabled() and (q.requires_grad or e.requires_grad):
            return -torch.cdist(q, e, p=2.0)
        # ||q||² + ||e||² - 2 q·e: one matrix product, no n × k × D temporary
        sq = (q * q).sum(-1, keepdim=True) + (e * e).sum(-1)[None, :] - 2.0 * (q @ e.T)
        return -sq.clamp_min_(0.0).sqrt_()

    def per_query(self, q: Tensor, e: Tensor) -> Tensor:
        return -torch.cdist(q[:, None, :], e, p=2.0).squeeze(1)


@similarities.register("l1")
class NegativeL1(Similarity):
    """``-||q - e||_1`` (TransE-L1, the TransE paper's and PyKEEN's default)."""

    name = "l1"

    def pairwise(self, q: Tensor, e: Tensor) -> Tensor:
        return -(q - e).abs().sum(-1)

    def all_pairs(self, q: Tensor, e: Tensor) -> Tensor:
        return -torch.cdist(q, e, p=1.0)

    def per_query(self, q: Tensor, e: Tensor) -> Tensor:
        return -torch.cdist(q[:, None, :], e, p=1.0).squeeze(1)


@similarities.register("complex_l1", "modulus_l1")
class NegativeComplexL1(Similarity):
    """``-Σ_d |q_d - e_d|`` over complex coordinates stored as ``[re | im]`` halves (RotatE paper's distance)."""

    name = "complex_l1"

    def pairwise(self, q: Tensor, e: Tensor) -> Tensor:
        d = q.shape[-1] // 2
        diff = q - e
        re, im = diff[..., :d], diff[..., d:]
        return -torch.sqrt(re * re + im * im + 1e-12).sum(-1)
