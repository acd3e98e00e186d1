"""Optional compiled CPU kernels for the hot loops of training and evaluation.

Two kernels, each with a pure-PyTorch twin that stays the reference (tests compare both, values and gradients):

* :func:`all_pairs` — ``-||q_i - e_j||`` for all query / entity pairs with the L1 or complex-L1 distance, tiled so
  that no ``n × k × D`` temporary exists (all-entity evaluation of TransE-L1 and RotatE; L2 and dot are matrix
  products and stay with PyTorch);
* :func:`corruption_scores` — scores of negative samples straight from the entity table and the negative ids,
  with a backward that scatters into the dense table gradient without ever materialising ``B × N × D``.

(A third, a fused Adam step, was removed: ``torch.optim.Adam(fused=True)`` measured faster, see BENCHMARKS.md.)

The library is compiled at first use (see :mod:`kgdistill.kernels._build`). Every function here returns None when
the kernels are unavailable, disabled, or not applicable to the inputs (device, dtype, layout, autograd needs), and
the caller then runs its PyTorch code. ``KGDISTILL_KERNELS=0`` in the environment (read when first needed, never
written), or the :func:`use` / :func:`disabled` context managers switch them off; the switch is a context variable,
so a block that turns them off affects only its own thread (or asyncio task), and importing changes nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from kgdistill.kernels import _build

__all__ = ["KINDS", "GradientLink", "all_pairs", "available", "corruption_scores", "disabled", "enabled",
           "gather_rows", "load_error", "set_enabled", "use"]

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


def _lib():
    return _build.load() if enabled() else None


def available() -> bool:
    """True when the kernels are enabled and the compiled library loads (builds it on first call)."""
    return _lib() is not None


def load_error() -> str | None:
    return _build.load_error()


def _threads() -> int:
    return max(1, torch.get_num_threads())


def _cpu_f32(*tensors: Tensor) -> bool:
    return all(t.device.type == "cpu" and t.dtype == torch.float32 and not t.is_sparse for t in tensors)


def _needs_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


# ---- all pairs ----------------------------------------------------------------------------------------------------
def all_pairs(kind: str, q: Tensor, e: Tensor) -> Tensor | None:
    """``[n, k]`` scores ``-dist(q_i, e_j)`` for ``kind`` in ``l1``, ``complex_l1``; None when not applicable.

    Forward only: returns None when autograd would need a gradient.
    """
    if kind not in _ALL_PAIRS_KINDS or q.dim() != 2 or e.dim() != 2 or q.shape[1] != e.shape[1]:
        return None
    if not _cpu_f32(q, e) or _needs_grad(q, e) or (kind == "complex_l1" and q.shape[1] % 2):
        return None
    lib = _lib()
    if lib is None:
        return None
    if q.stride(1) != 1:
        q = q.contiguous()
    if e.stride(1) != 1:
        e = e.contiguous()
    n, k, d = q.shape[0], e.shape[0], q.shape[1]
    out = torch.empty(n, k, dtype=torch.float32)
    if n and k:
        lib.kg_all_pairs(KINDS[kind], q.data_ptr(), n, q.stride(0), e.data_ptr(), k, e.stride(0), d, out.data_ptr(),
                         _threads())
    return out


# ---- corruption scores --------------------------------------------------------------------------------------------
class GradientLink:
    """Joins the table gradient of :func:`corruption_scores` and of :func:`gather_rows` into one dense tensor.

    Without it, the anchor rows of a training batch (a plain ``F.embedding``) give the table a second dense
    ``E × D`` gradient (allocated, zeroed, then added) or a sparse one that autograd adds out of place. With it, the
    corruption kernel's backward hands its dense table gradient to the link instead of to autograd, and the gather's
    backward — which autograd runs after it, because the queries scored by the kernel are computed from the gathered
    rows — adds its rows in place and returns the sum as the only table gradient. Values are unchanged. If the
    order is ever the other way round (the gather ran first), each backward returns its own gradient as usual.
    """

    __slots__ = ("grad", "gather_done", "table")

    def __init__(self, table: Tensor) -> None:
        self.table = table
        self.grad: Tensor | None = None
        self.gather_done = False


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, table: Tensor, ids: Tensor, link: GradientLink) -> Tensor:  # type: ignore[override]
        ctx.link, ctx.num_rows = link, table.shape[0]
        ctx.save_for_backward(ids)
        link.gather_done = False
        return torch.nn.functional.embedding(ids, table)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_rows: Tensor):  # type: ignore[override]
        (ids,) = ctx.saved_tensors
        link: GradientLink = ctx.link
        grad, link.grad = link.grad, None  # release the link's reference: autograd may then reuse the buffer
        link.gather_done = True
        if not ctx.needs_input_grad[0]:
            return None, None, None
        d = grad_rows.shape[-1]
        if grad is None:
            grad = torch.zeros(ctx.num_rows, d, dtype=grad_rows.dtype, device=grad_rows.device)
        grad.index_add_(0, ids.reshape(-1), grad_rows.reshape(-1, d).to(grad.dtype))
        return grad, None, None


def gather_rows(table: Tensor, ids: Tensor, link: GradientLink | None = None) -> Tensor:
    """``F.embedding(ids, table)``; with a ``link`` shared with :func:`corruption_scores` on the same table, the two
    table gradients become one dense tensor (see :class:`GradientLink`)."""
    if link is None or link.table is not table or not (torch.is_grad_enabled() and table.requires_grad):
        return torch.nn.functional.embedding(ids, table)
    return _GatherRows.apply(table, ids, link)


class _CorruptionScores(torch.autograd.Function):
    @staticmethod
    def forward(ctx, code: int, q_head: Tensor, q_tail: Tensor, table: Tensor, ids: Tensor,  # type: ignore[override]
                num_head: int, mask: Tensor | None, link: GradientLink | None) -> Tensor:
        lib = _build.load()
        b, k = ids.shape
        e, d = table.shape
        offsets = torch.empty(e + 1, dtype=torch.int64)
        order = torch.empty(b * k, dtype=torch.int32)
        lib.kg_group_by_entity(ids.data_ptr(), b * k, e, offsets.data_ptr(), order.data_ptr())
        out = torch.empty(b, k, dtype=torch.float32)
        mask_ptr = mask.data_ptr() if mask is not None else None
        lib.kg_corrupt_fwd(code, q_head.data_ptr(), q_tail.data_ptr(), q_head.stride(0), table.data_ptr(),
                           table.stride(0), d, offsets.data_ptr(), order.data_ptr(), e, k, num_head, mask_ptr,
                           out.data_ptr(), _threads())
        ctx.code, ctx.num_head, ctx.link = code, num_head, link
        ctx.save_for_backward(q_head, q_tail, table, offsets, order, out, mask)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        q_head, q_tail, table, offsets, order, out, mask = ctx.saved_tensors
        lib = _build.load()
        b, k = out.shape
        e, d = table.shape
        grad_out = grad_out.to(torch.float32).contiguous()
        threads = _threads()
        grad_table = torch.empty(e, d, dtype=torch.float32)
        grad_head = torch.empty(b, d, dtype=torch.float32)
        grad_tail = torch.empty(b, d, dtype=torch.float32)
        scratch = torch.empty(threads, 2, b, d, dtype=torch.float32)
        mask_ptr = mask.data_ptr() if mask is not None else None
        lib.kg_corrupt_bwd(ctx.code, q_head.data_ptr(), q_tail.data_ptr(), q_head.stride(0), table.data_ptr(),
                           table.stride(0), d, offsets.data_ptr(), order.data_ptr(), e, b, k, ctx.num_head, mask_ptr,
                           out.data_ptr(), grad_out.data_ptr(), grad_table.data_ptr(), grad_head.data_ptr(),
                           grad_tail.data_ptr(), scratch.data_ptr(), threads)
        needs = ctx.needs_input_grad
        link: GradientLink | None = ctx.link
        table_grad: Tensor | None = grad_table if needs[3] else None
        # Hand the table gradient to the gather of the anchor rows, which runs after this node (it produced the
        # queries); only when this node passes query gradients on and the gather has not run yet.
        if table_grad is not None and link is not None and not link.gather_done and (needs[1] or needs[2]):
            link.grad, table_grad = table_grad, None
        return (None, grad_head if needs[1] else None, grad_tail if needs[2] else None, table_grad,
                None, None, None, None)


def corruption_scores(kind: str, q_head: Tensor, q_tail: Tensor, table: Tensor, ids: Tensor, num_head: int = 0,
                      corrupt_head: Tensor | None = None, link: GradientLink | None = None) -> Tensor | None:
    """``[B, K]`` scores ``sim(q, table[ids[b, j]])`` with ``q = q_head[b]`` where column ``j`` corrupts the head
    (``corrupt_head[b, j]``, or ``j < num_head`` when ``corrupt_head`` is None) and ``q_tail[b]`` otherwise.

    Differentiable in ``q_head``, ``q_tail`` and ``table`` (dense table gradient). ``link``: see
    :class:`GradientLink` (only honoured when it belongs to ``table``). None when not applicable.
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
    lib = _lib()
    if lib is None:
        return None
    if ids.numel():  # the torch path raises IndexError on bad ids; the kernel must never read outside the table
        lo, hi = torch.aminmax(ids)
        if int(lo) < 0 or int(hi) >= table.shape[0]:
            return None
    ids = ids.contiguous()
    q_head, q_tail = q_head.contiguous(), q_tail.contiguous()
    mask = corrupt_head.contiguous().view(torch.uint8) if corrupt_head is not None else None
    num_head = max(0, min(int(num_head), ids.shape[1]))
    if link is not None and link.table is not table:
        link = None
    return _CorruptionScores.apply(KINDS[kind], q_head, q_tail, table, ids, num_head, mask, link)

