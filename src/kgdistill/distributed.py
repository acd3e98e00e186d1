"""Multi-process training on ``torch.distributed`` (gloo on CPU, NCCL on CUDA), launched by ``torchrun``.

Single-process runs never touch this module's process group: :func:`init_distributed` returns a context with
``world_size == 1`` when the ``torchrun`` environment variables are absent.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from kgdistill.errors import KGDistillError

#: Seconds a collective may wait for a peer before the job fails (a dead rank must not hang the others forever).
DEFAULT_TIMEOUT_S = 600


class DistributedError(KGDistillError):
    """A distributed launch or collective failed; the message says which rank and why."""

    exit_code = 1


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size``; ``device`` is this rank's device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def backend_for(device: str) -> str:
    """``nccl`` for CUDA devices, ``gloo`` otherwise."""
    return "nccl" if str(device).startswith("cuda") else "gloo"


def init_distributed(device: str = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S) -> DistContext:
    """Join the process group described by the ``torchrun`` environment (``RANK``, ``WORLD_SIZE``, ...).

    Without those variables (a plain ``python`` run) this returns a single-process context. On CUDA each rank
    uses ``cuda:LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if str(device).startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend_for(device), timeout=datetime.timedelta(seconds=timeout_s))
        except Exception as err:  # noqa: BLE001 - rendezvous errors come in many types
            raise DistributedError(f"rank {rank}: could not join the process group ({err})") from None
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=device)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous ``[start, end)`` of ``n`` items for ``rank``; sizes differ by at most one."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every rank's gradient of the gathered tensor (all-reduce) and
    returns this rank's slice: a loss on any rank reaches the rows computed on every other rank."""

    @staticmethod
    def forward(ctx_: Any, x: torch.Tensor, sizes: tuple[int, ...],  # type: ignore[override]
                rank: int) -> torch.Tensor:
        ctx_.sizes, ctx_.rank = sizes, rank
        longest = max(sizes)
        padded = x.detach().contiguous()
        if padded.shape[0] < longest:
            padded = torch.cat([padded, padded.new_zeros((longest - padded.shape[0], *padded.shape[1:]))])
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return torch.cat([p[:n] for p, n in zip(parts, sizes)], dim=0)

    @staticmethod
    def backward(ctx_: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx_.sizes[:ctx_.rank])
        return grad[start:start + ctx_.sizes[ctx_.rank]], None, None


def gather_sizes(n: int, ctx: DistContext, device: str | torch.device = "cpu") -> list[int]:
    """Every rank's ``n`` in rank order (one small all-gather; ``[n]`` in a single process)."""
    if not ctx.enabled:
        return [n]
    mine = torch.tensor([n], dtype=torch.long, device=device)
    parts = [torch.empty_like(mine) for _ in range(ctx.world_size)]
    dist.all_gather(parts, mine)
    return [int(p.item()) for p in parts]


def gather_with_grad(x: torch.Tensor, ctx: DistContext, sizes: Sequence[int] | None = None) -> torch.Tensor:
    """Concatenate ``x[b_rank, ...]`` of all ranks along dim 0 → ``[sum(sizes), ...]``, differentiably.

    Used for in-batch negatives across ranks (the contrastive batch grows with the ranks). The backward all-reduces
    the gradient of the gathered tensor (a collective: every rank must run it) and hands this rank its slice, so
    the gradient of a loss on rank ``k`` flows into rows computed on rank ``j``. Summing the per-rank losses ``L_k``
    gives, per rank, the gradient of ``Σ_k L_k`` w.r.t. its own rows; DistributedDataParallel's averaging then
    yields the gradient of ``mean_k L_k`` (with equal local batches: the single-process loss of the global batch).
    ``sizes``: every rank's ``b`` (all-gathered when None; the shards may differ in length). Without grad (e.g. a
    frozen teacher's outputs) it is a plain all-gather.
    """
    if not ctx.enabled:
        return x
    sizes = tuple(int(s) for s in (sizes if sizes is not None else gather_sizes(x.shape[0], ctx, x.device)))
    if len(sizes) != ctx.world_size or sizes[ctx.rank] != x.shape[0]:
        raise DistributedError(f"rank {ctx.rank}: gather_with_grad got sizes {list(sizes)} for a local tensor of "
                               f"{x.shape[0]} rows and {ctx.world_size} ranks")
    return _GatherWithGrad.apply(x, sizes, ctx.rank)


def all_reduce_mean_(tensors: Sequence[torch.Tensor], ctx: DistContext) -> None:
    """Average ``tensors`` over the ranks in place (one flattened all-reduce; nothing in a single process).

    For gradients that DistributedDataParallel does not see (a second optimiser, e.g. MetaSD's meta step or the
    trainable modules of a text distillation objective): every rank must pass tensors of the same shapes, in the
    same order.
    """
    if not ctx.enabled or not tensors:
        return
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= ctx.world_size
    start = 0
    for t in tensors:
        t.copy_(flat[start:start + t.numel()].view_as(t))
        start += t.numel()


def all_reduce_grads_(params: Sequence[torch.nn.Parameter], ctx: DistContext) -> None:
    """Average the ``.grad`` of ``params`` over the ranks; parameters without a gradient are left alone (the same
    graph runs on every rank, so they are the same ones everywhere)."""
    all_reduce_mean_([p.grad for p in params if p.grad is not None], ctx)


#: ``grad_sync`` modes: DistributedDataParallel's dense all-reduce, an exchange of the touched rows of every
#: embedding table, or per step and table whichever of the two moves fewer rows (see :class:`GradSync`).
GRAD_SYNC_MODES = ("dense", "sparse", "auto")
#: ``auto``: tables with fewer elements than this are all-reduced with the other small parameters (latency wins).
AUTO_MIN_TABLE_NUMEL = 1 << 16
#: ``auto``: a table's rows are exchanged sparsely in a step when ``world_size × (most rows touched on one rank)``
#: is at most this fraction of its rows (the rows every rank receives and adds, against a ring all-reduce of the
#: whole table). From the exchange micro-benchmark on 2 CPU processes over gloo (BENCHMARKS.md, "Several
#: processes"): rows won below 0.2–0.5 (two runs), the all-reduce above; 0.2 is the conservative end.
AUTO_SPARSE_MAX_RATIO = 0.2


def touched_rows(grad: torch.Tensor) -> torch.Tensor:
    """Ids of the rows of ``grad`` (dim 0) that are not all zero; NaN and inf count as touched.

    A row's L1 norm is zero exactly when every entry is (a per-row reduction; no ``E × D`` boolean tensor)."""
    flat = grad.reshape(grad.shape[0], -1)
    return torch.linalg.vector_norm(flat, ord=1, dim=1).ne(0).nonzero().squeeze(1)


class GradSync:
    """Averages the gradients of ``params`` over the ranks after ``backward`` — the mean DDP's all-reduce gives —
    exchanging only the touched rows of embedding tables.

    A *table* is a parameter with ≥ 2 dimensions (its rows are ids). For each table every rank finds the rows its
    gradient touched (non-zero rows), all-gathers the row ids and the rows (scaled by ``1 / world_size``, as DDP
    does) and sums every rank's rows into its gradient in rank order (one ``index_copy_`` / ``index_add_`` per rank,
    whose ids are distinct): every rank ends with the same, bitwise equal, dense gradient, equal to the
    dense all-reduce up to float summation order, so the optimiser (Adam, Adagrad, ...) sees what it sees with DDP.
    Untouched rows are zero on every rank and stay zero. The other parameters are all-reduced in one flat tensor.

    ``mode``: ``sparse`` exchanges every table's rows; ``auto`` all-gathers the row counts first (one small
    collective) and, per table and step, exchanges rows when ``world_size × max count ≤ max_ratio × rows`` and
    all-reduces the dense table otherwise (1-N training touches every entity row); tables with fewer than
    ``min_table_numel`` elements go with the small parameters. ``stats`` counts the exchanges and rows sent.
    A parameter whose gradient is None on every rank keeps None; on some ranks only, it gets zeros where missing.
    """

    def __init__(self, params: Sequence[torch.nn.Parameter], ctx: DistContext, mode: str = "sparse", *,
                 min_table_numel: int = AUTO_MIN_TABLE_NUMEL, max_ratio: float = AUTO_SPARSE_MAX_RATIO) -> None:
        if mode not in ("sparse", "auto"):
            raise ValueError(f"GradSync mode must be 'sparse' or 'auto', got {mode!r}")
        self.ctx, self.mode, self.max_ratio = ctx, mode, max_ratio
        params = [p for p in params if p.requires_grad]
        is_table = (lambda p: p.dim() >= 2) if mode == "sparse" else \
            (lambda p: p.dim() >= 2 and p.numel() >= min_table_numel)
        self.tables = [p for p in params if is_table(p)]
        self.others = [p for p in params if not is_table(p)]
        self.stats = {"steps": 0, "sparse": 0, "dense": 0, "rows_sent": 0, "rows_total": 0}
        self._buffers: dict[int, tuple[torch.Tensor, ...]] = {}

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank (what DDP does when it wraps a module)."""
        with torch.no_grad():
            for t in [*module.parameters(), *module.buffers()]:
                broadcast_tensor_(t.data, self.ctx)

    def __call__(self) -> None:
        ctx = self.ctx
        if not ctx.enabled:
            return
        self.stats["steps"] += 1
        for p in self.tables:
            if p.grad is not None and (p.grad.is_sparse or not p.grad.is_contiguous()):
                p.grad = p.grad.to_dense().contiguous() if p.grad.is_sparse else p.grad.contiguous()
        rows = [touched_rows(p.grad) if p.grad is not None else None for p in self.tables]
        counts = torch.tensor([-1 if r is None else r.numel() for r in rows], dtype=torch.long,
                              device=self.tables[0].device if self.tables else "cpu")
        if self.tables:
            parts = [torch.empty_like(counts) for _ in range(ctx.world_size)]
            dist.all_gather(parts, counts)
            gathered = torch.stack(parts).cpu()  # [world, tables]; -1: no gradient on that rank
        for i, (p, mine) in enumerate(zip(self.tables, rows)):
            ranks = gathered[:, i]
            if bool((ranks < 0).all()):
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
                mine = p.grad.new_zeros(0, dtype=torch.long)
            sizes = [max(0, int(n)) for n in ranks]
            self.stats["rows_total"] += p.shape[0]
            if self.mode == "auto" and ctx.world_size * max(sizes) > self.max_ratio * p.shape[0]:
                self._dense(p.grad)
            else:
                self._sparse(i, p.grad, mine, sizes)
        all_reduce_grads_(self.others, ctx)

    def _dense(self, grad: torch.Tensor) -> None:
        self.stats["dense"] += 1
        grad.mul_(1.0 / self.ctx.world_size)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)

    def _sparse(self, key: int, grad: torch.Tensor, mine: torch.Tensor, sizes: list[int]) -> None:
        self.stats["sparse"] += 1
        self.stats["rows_sent"] += len(mine)
        world, longest = self.ctx.world_size, max(sizes)
        if longest == 0:
            return
        flat = grad.view(grad.shape[0], -1)
        send_v, send_i, recv_v, recv_i = self._buffers_for(key, longest, flat)
        n = mine.numel()
        torch.index_select(flat, 0, mine, out=send_v[:n])
        send_v[:n].mul_(1.0 / world)
        send_i[:n].copy_(mine)
        dist.all_gather([recv_i[k, :longest] for k in range(world)], send_i[:longest])
        dist.all_gather([recv_v[k, :longest] for k in range(world)], send_v[:longest])
        # every rank computes (rank 0's rows) + (rank 1's rows) + ... in that order: clear this rank's own rows
        # (rank 0's are overwritten next), write rank 0's rows, add the others' (the other rows are zero here)
        if self.ctx.rank > 0:
            flat.index_fill_(0, mine, 0.0)
        flat.index_copy_(0, recv_i[0, :sizes[0]], recv_v[0, :sizes[0]])
        for k in range(1, world):
            flat.index_add_(0, recv_i[k, :sizes[k]], recv_v[k, :sizes[k]])

    def _buffers_for(self, key: int, longest: int, flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        held = self._buffers.get(key)
        if held is None or held[0].shape[0] < longest or held[0].shape[1] != flat.shape[1] \
                or held[0].dtype != flat.dtype or held[0].device != flat.device:
            cap = max(longest, held[0].shape[0] if held is not None else 0)
            world, width = self.ctx.world_size, flat.shape[1]
            held = (flat.new_empty(cap, width), torch.empty(cap, dtype=torch.long, device=flat.device),
                    flat.new_empty(world, cap, width), torch.empty(world, cap, dtype=torch.long, device=flat.device))
            self._buffers[key] = held
        return held


def broadcast_tensor_(x: torch.Tensor, ctx: DistContext, src: int = 0) -> torch.Tensor:
    """Overwrite ``x`` in place with rank ``src``'s values (nothing in a single process); returns ``x``."""
    if not ctx.enabled:
        return x
    if x.dtype == torch.bool:  # not every backend broadcasts bool tensors
        carrier = x.to(torch.uint8)
        dist.broadcast(carrier, src=src)
        x.copy_(carrier.bool())
    else:
        dist.broadcast(x, src=src)
    return x


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    if not ctx.enabled:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def launch_torchrun(nproc: int, argv: Sequence[str], threads_per_process: int = 1) -> int:
    """Re-run ``kgdistill ARGV`` under ``torchrun --standalone --nproc-per-node NPROC`` (the ``--nproc`` flag)."""
    if nproc < 1:
        raise DistributedError(f"--nproc must be ≥ 1, got {nproc}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "kgdistill", *argv]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(threads_per_process))
    return subprocess.call(cmd, env=env)
