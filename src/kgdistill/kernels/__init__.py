"""Optional compiled CPU kernels for the hot loops of training and evaluation, as PyTorch operators.

Two kernels, registered as the operators ``torch.ops.kgdistill.*`` (``TORCH_LIBRARY`` in
:mod:`kgdistill.kernels._source`; autograd formulas and fake implementations in :mod:`kgdistill.kernels._ops`), each
with a pure-PyTorch twin that stays the reference (tests compare both, values and gradients, and run
``torch.library.opcheck`` on each operator):

* :func:`all_pairs` (``kgdistill::all_pairs``) — ``-||q_i - e_j||`` for all query / entity pairs with the L1 or
  complex-L1 distance, tiled so that no ``n × k × D`` temporary exists (all-entity evaluation of TransE-L1 and
  RotatE; L2 and dot are matrix products and stay with PyTorch);
* :func:`corruption_scores` (``kgdistill::corruption_scores`` and its backward
  ``kgdistill::corruption_scores_backward``) — scores of negative samples straight from the entity table and the
  negative ids, with a backward that writes a dense table gradient without ever materialising ``B × N × D``.

:func:`gather_rows` gathers the anchor rows of a training step and hands out the table to score the negatives with,
so that both table gradients become one dense tensor through ordinary autograd data flow.

(A third, a fused Adam step, was removed: ``torch.optim.Adam(fused=True)`` measured faster, see BENCHMARKS.md.)

The library is compiled at first use with ``torch.utils.cpp_extension`` (see :mod:`kgdistill.kernels._build`).
Every function here returns None when the kernels are unavailable, disabled, or not applicable to the inputs
(device, dtype, layout, autograd needs), and the caller then runs its PyTorch code. ``KGDISTILL_KERNELS=0`` in the
environment (read when first needed, never written), or the :func:`use` / :func:`disabled` context managers switch
them off; the switch is a context variable, so a block that turns them off affects only its own thread (or asyncio
task), and importing changes nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from kgdistill.kernels import _build, _ops

__all__ = ["KINDS", "all_pairs", "available", "corruption_scores", "disabled", "enabled", "gather_rows", "load_error",
           "set_enabled", "use"]

#: similarity name -> kernel code
KINDS = {"dot": 0, "l1": 1, "l2": 2, "complex_l1": 3}
_ALL_PAIRS_KINDS = ("l1", "complex_l1")

#: None: not set in this context, ``KGDISTILL_KERNELS`` decides
_switch: contextvars.ContextVar[bool | None] = contextvars.ContextVar("kgdistill_kernels", default=None)


def _from_environment() -> bool:
    return os.environ.get("KGDISTILL_KERNELS", "1").strip().lower() not in ("0", "off", "false", "no")


def enabled() -> bool:
    """Whether the kernels may be used here (they may still be unavailable: see :func:`available`)."""
    flag = _switch.get()
    return _from_environment() if flag is None else flag


def set_enabled(flag: bool) -> bool:
    """Switch the kernels on or off in the current context (thread / task); returns the previous setting.
    Prefer the :func:`use` context manager, which restores it."""
    previous = enabled()
    _switch.set(bool(flag))
    return previous


@contextlib.contextmanager
def use(flag: bool) -> Iterator[None]:
    """Run a block with the kernels on (``True``, where available) or off (``False``: the pure-PyTorch paths)."""
    token = _switch.set(bool(flag))
    try:
        yield
    finally:
        _switch.reset(token)


def disabled() -> contextlib.AbstractContextManager[None]:
    """Run a block on the pure-PyTorch paths (``use(False)``)."""
    return use(False)


def _lib() -> str | None:
    """The loaded library's path when the kernels are enabled and load (their operators are then registered)."""
    return _build.load() if enabled() else None


def available() -> bool:
    """True when the kernels are enabled and the compiled library loads (builds it on first call)."""
    return _lib() is not None


def load_error() -> str | None:
    return _build.load_error()


def _cpu_f32(*tensors: Tensor) -> bool:
    return all(t.device.type == "cpu" and t.dtype == torch.float32 and not t.is_sparse for t in tensors)


def _needs_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


# ---- all pairs ----------------------------------------------------------------------------------------------------
def all_pairs(kind: str, q: Tensor, e: Tensor) -> Tensor | None:
    """``[n, k]`` scores ``-dist(q_i, e_j)`` for ``kind`` in ``l1``, ``complex_l1``; None when not applicable.

    Scoring only: returns None when autograd would need a gradient (the PyTorch paths are faster there).
    """
    if kind not in _ALL_PAIRS_KINDS or q.dim() != 2 or e.dim() != 2 or q.shape[1] != e.shape[1]:
        return None
    if not _cpu_f32(q, e) or _needs_grad(q, e) or (kind == "complex_l1" and q.shape[1] % 2):
        return None
    if _lib() is None:
        return None
    return torch.ops.kgdistill.all_pairs(q, e, KINDS[kind])


# ---- corruption scores --------------------------------------------------------------------------------------------
class _GatherRows(torch.autograd.Function):
    """``(F.embedding(ids, table), table)``: the second output is the table to score the negatives with. Its
    gradient (whatever scored them: the corruption operator, or ``F.embedding`` on the PyTorch path) reaches this
    node's backward as an input — autograd runs a node only once all gradients of its outputs are in — and the
    gathered rows' gradient is added into it in place: one dense ``E × D`` table gradient per step instead of two
    and their sum. Values and gradient values are those of two plain lookups."""

    @staticmethod
    def forward(ctx, table: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(ids)
        ctx.table_shape, ctx.table_dtype = table.shape, table.dtype
        return torch.nn.functional.embedding(ids, table), table.view_as(table)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_rows: Tensor | None, grad_table: Tensor | None):  # type: ignore[override]
        if not ctx.needs_input_grad[0]:
            return None, None
        if grad_rows is None:
            return grad_table, None
        (ids,) = ctx.saved_tensors
        d = grad_rows.shape[-1]
        if (grad_table is None or grad_table.layout != torch.strided or not grad_table.is_contiguous()
                or grad_table.dtype != ctx.table_dtype or grad_table.shape != ctx.table_shape):
            base = torch.zeros(ctx.table_shape, dtype=ctx.table_dtype, device=grad_rows.device)
            grad_table = base if grad_table is None else base.add_(grad_table)
        grad_table.index_add_(0, ids.reshape(-1), grad_rows.reshape(-1, d).to(grad_table.dtype))
        return grad_table, None


def gather_rows(table: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
    """``(rows, scored_table)``: ``rows = F.embedding(ids, table)``, and ``scored_table`` equal to ``table``, to
    score negatives with (:func:`corruption_scores`, or any lookup whose backward returns a fresh gradient, such as
    ``F.embedding``): the two table gradients are then summed into one dense tensor, in place (see
    :class:`_GatherRows`). ``scored_table`` must not be given to anything that passes its incoming gradient on
    unchanged (e.g. ``scored_table + x``), since that gradient is written to. Without autograd, ``(rows, table)``."""
    if not (torch.is_grad_enabled() and table.requires_grad):
        return torch.nn.functional.embedding(ids, table), table
    return _GatherRows.apply(table, ids)


class _CorruptionScores(torch.autograd.Function):
    """The operator with its registered autograd formula (:mod:`kgdistill.kernels._ops`: the same setup and backward
    functions), applied directly: torch.library's generic autograd wrapper fills in the schema's defaults on every
    call with grad (~40 µs, measured; a training step calls it once), which this skips."""

    @staticmethod
    def forward(ctx, q_head: Tensor, q_tail: Tensor, table: Tensor, ids: Tensor,  # type: ignore[override]
                corrupt_head: Tensor | None, kind: int, num_head: int) -> Tensor:
        inputs = (q_head, q_tail, table, ids, corrupt_head, kind, num_head)
        output = torch.ops.kgdistill.corruption_scores.default(*inputs)  # grad mode is off in here
        _ops._corruption_setup(ctx, inputs, output)
        return output[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return _ops._corruption_backward(ctx, grad, None, None)


def corruption_scores(kind: str, q_head: Tensor, q_tail: Tensor, table: Tensor, ids: Tensor, num_head: int = 0,
                      corrupt_head: Tensor | None = None) -> Tensor | None:
    """``[B, K]`` scores ``sim(q, table[ids[b, j]])`` with ``q = q_head[b]`` where column ``j`` corrupts the head
    (``corrupt_head[b, j]``, or ``j < num_head`` when ``corrupt_head`` is None) and ``q_tail[b]`` otherwise.

    Differentiable in ``q_head``, ``q_tail`` and ``table`` (dense table gradient). None when not applicable (an id
    outside the table raises ``IndexError``, as the PyTorch path does).
    """
    if kind not in KINDS or q_head.dim() != 2 or q_tail.shape != q_head.shape or table.dim() != 2 or ids.dim() != 2:
        return None
    b, d = q_head.shape
    if ids.shape[0] != b or table.shape[1] != d or ids.dtype != torch.int64 or ids.device.type != "cpu":
        return None
    if not _cpu_f32(q_head, q_tail, table) or (kind == "complex_l1" and d % 2) or ids.numel() >= 2 ** 31:
        return None
    if corrupt_head is not None and (corrupt_head.shape != ids.shape or corrupt_head.dtype != torch.bool
                                     or corrupt_head.device.type != "cpu"):
        return None
    if table.stride(1) != 1:
        return None
    if _lib() is None:
        return None
    num_head = max(0, min(int(num_head), ids.shape[1]))
    if torch.is_grad_enabled() and (q_head.requires_grad or q_tail.requires_grad or table.requires_grad):
        return _CorruptionScores.apply(q_head, q_tail, table, ids, corrupt_head, KINDS[kind], num_head)
    return torch.ops.kgdistill.corruption_scores(q_head, q_tail, table, ids, corrupt_head, KINDS[kind], num_head)[0]
