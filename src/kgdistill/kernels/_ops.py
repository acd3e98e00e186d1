"""Autograd formulas and fake (meta) implementations of the ``torch.ops.kgdistill`` operators.

The operators and their CPU kernels are defined in C++ (:mod:`kgdistill.kernels._source`, ``TORCH_LIBRARY``);
:func:`register` adds, once the library is loaded:

* ``register_fake`` for each operator (output shapes and dtypes from the input shapes), so that they trace under
  ``torch.compile`` / fake tensors and pass ``torch.library.opcheck``;
* ``register_autograd`` for ``kgdistill::corruption_scores`` (its backward is the operator
  ``kgdistill::corruption_scores_backward``: one pass over the pairs grouped by entity, a dense table gradient, no
  ``B × K × D`` temporary) and for ``kgdistill::all_pairs`` (a chunked PyTorch formula: the kernel is meant for
  scoring without autograd, where :func:`kgdistill.kernels.all_pairs` uses it, but the operator is differentiable).
"""

from __future__ import annotations

import torch
from torch import Tensor

_registered = False

#: elements of the ``chunk × k × D`` temporary of the all-pairs backward (~64 MB of float32)
_BUDGET = 1 << 24
_L1, _CL1 = 1, 3


# ---- fake implementations ------------------------------------------------------------------------------------------
def _all_pairs_fake(q: Tensor, e: Tensor, kind: int) -> Tensor:
    torch._check(q.dim() == 2 and e.dim() == 2, lambda: "kgdistill::all_pairs: q [n, D] and e [k, D] expected")
    torch._check(q.shape[1] == e.shape[1], lambda: "kgdistill::all_pairs: q and e differ in width")
    return q.new_empty((q.shape[0], e.shape[0]), dtype=torch.float32)


def _corruption_fake(q_head: Tensor, q_tail: Tensor, table: Tensor, ids: Tensor, corrupt_head: Tensor | None,
                     kind: int, num_head: int) -> tuple[Tensor, Tensor, Tensor]:
    torch._check(ids.dim() == 2, lambda: "kgdistill::corruption_scores: ids [B, K] expected")
    b, k = ids.shape
    return (q_head.new_empty((b, k), dtype=torch.float32), ids.new_empty((table.shape[0] + 1,), dtype=torch.int64),
            ids.new_empty((b * k,), dtype=torch.int32))


def _corruption_backward_fake(grad: Tensor, q_head: Tensor, q_tail: Tensor, table: Tensor, offsets: Tensor,
                              order: Tensor, corrupt_head: Tensor | None, scores: Tensor, kind: int,
                              num_head: int) -> tuple[Tensor, Tensor, Tensor]:
    return (q_head.new_empty(q_head.shape, dtype=torch.float32), q_head.new_empty(q_head.shape, dtype=torch.float32),
            table.new_empty(table.shape, dtype=torch.float32))


# ---- autograd ------------------------------------------------------------------------------------------------------
def _corruption_setup(ctx, inputs, output) -> None:
    q_head, q_tail, table, _ids, corrupt_head, kind, num_head = inputs
    scores, offsets, order = output
    ctx.kind, ctx.num_head = kind, num_head
    ctx.save_for_backward(q_head, q_tail, table, offsets, order, corrupt_head, scores)


def _corruption_backward(ctx, grad_scores: Tensor | None, _grad_offsets, _grad_order):
    q_head, q_tail, table, offsets, order, corrupt_head, scores = ctx.saved_tensors
    needs = ctx.needs_input_grad
    if grad_scores is None or not any(needs[:3]):
        return None, None, None, None, None, None, None
    g_head, g_tail, g_table = torch.ops.kgdistill.corruption_scores_backward(
        grad_scores, q_head, q_tail, table, offsets, order, corrupt_head, scores, ctx.kind, ctx.num_head)
    return (g_head if needs[0] else None, g_tail if needs[1] else None, g_table if needs[2] else None,
            None, None, None, None)


def _all_pairs_setup(ctx, inputs, output) -> None:
    q, e, kind = inputs
    ctx.kind = kind
    ctx.save_for_backward(q, e)


def _all_pairs_backward(ctx, grad: Tensor | None):
    """``d/dq_i`` and ``d/de_j`` of ``-dist(q_i, e_j)``, summed with ``grad`` over the other side, in chunks of
    queries (the gradient conventions of the broadcast formula: ``sign(0) = 0``, the 1e-12 floor of complex L1)."""
    q, e = ctx.saved_tensors
    if grad is None:
        return None, None, None
    n, k, d = q.shape[0], e.shape[0], q.shape[1]
    grad_q = torch.empty_like(q, dtype=torch.float32)
    grad_e = torch.zeros_like(e, dtype=torch.float32)
    chunk = max(1, _BUDGET // max(1, k * d))
    for i in range(0, n, chunk):
        qc, gc = q[i:i + chunk], grad[i:i + chunk]
        diff = qc[:, None, :] - e[None, :, :]  # [c, k, D]
        if ctx.kind == _L1:
            w = torch.sign(diff)
        else:  # complex L1: d/d(re, im) sqrt(x² + y² + 1e-12) = (x, y) / sqrt(...)
            h = d // 2
            re, im = diff[..., :h], diff[..., h:]
            w = diff / torch.sqrt(re * re + im * im + 1e-12).repeat(1, 1, 2)
        contrib = gc[:, :, None] * w  # d score / d q = -w, d score / d e = +w
        grad_q[i:i + chunk] = -contrib.sum(1)
        grad_e += contrib.sum(0)
    needs = ctx.needs_input_grad
    return (grad_q if needs[0] else None), (grad_e if needs[1] else None), None


def register() -> None:
    """Register the fake implementations and the autograd formulas (once; the library must be loaded)."""
    global _registered
    if _registered:
        return
    lib = torch.library
    lib.register_fake("kgdistill::all_pairs")(_all_pairs_fake)
    lib.register_fake("kgdistill::corruption_scores")(_corruption_fake)
    lib.register_fake("kgdistill::corruption_scores_backward")(_corruption_backward_fake)
    lib.register_autograd("kgdistill::all_pairs", _all_pairs_backward, setup_context=_all_pairs_setup)
    lib.register_autograd("kgdistill::corruption_scores", _corruption_backward, setup_context=_corruption_setup)
    _registered = True
