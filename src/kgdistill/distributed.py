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


def gather_with_grad(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Concatenate ``x[b, ...]`` of all ranks along dim 0; gradients flow back into this rank's slice.

    Used for in-batch negatives across ranks (the contrastive batch grows with the ranks). All ranks must pass the
    same shape.
    """
    if not ctx.enabled:
        return x
    parts = [torch.empty_like(x) for _ in range(ctx.world_size)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[ctx.rank] = x
    return torch.cat(parts, dim=0)


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
           "-m", "kgdistill.cli", *argv]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(threads_per_process))
    return subprocess.call(cmd, env=env)
