"""Atomic checkpoint files: a crash mid-write never destroys the previous checkpoint."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from kgdistill.atomicio import atomic_write_text, fsync_dir, sha256_file
from kgdistill.errors import RunFolderError


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Write ``obj`` to a temporary file, fsync, then rename over ``path`` (atomic on POSIX); its sha256 goes to
    ``path.sha256`` (checked by :func:`load_checkpoint`). The temporary name carries the pid, so two processes
    never write into each other's temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        digest = sha256_file(tmp)
        atomic_write_text(_sidecar(path), f"{digest}  {path.name}\n")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _check_sidecar(path: Path) -> None:
    """Compare ``path`` with the sha256 recorded when it was written (checkpoints of older versions have none)."""
    sidecar = _sidecar(path)
    if not sidecar.exists():
        return
    want = sidecar.read_text(encoding="utf-8", errors="replace").split()[:1]
    if want != [sha256_file(path)]:
        raise RunFolderError(f"{path}: damaged: its sha256 differs from the one recorded in {sidecar.name} when it "
                             f"was written; the checkpoint cannot be trusted")


def _check_finite(ckpt: dict[str, Any], path: Path) -> None:
    for part in ("model", "best_model", "best_state"):
        tensors = ckpt.get(part)
        if not isinstance(tensors, dict):
            continue
        for name, t in tensors.items():
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise RunFolderError(f"{path}: damaged: {part} tensor {name!r} holds NaN/Inf values (a checkpoint "
                                     f"is only written after a finite step)")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`atomic_torch_save` without executing code from it.

    ``torch.load(weights_only=True)`` only rebuilds tensors and plain containers/values (dicts, lists, ints,
    floats, strings, ...), which is all a kgdistill checkpoint holds; a pickle asking for any other object (a
    ``__reduce__`` that would run code on load) is refused with one message naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise RunFolderError(f"{path}: no checkpoint to resume from")
    _check_sidecar(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(err))
        if found or "Unsupported global" in str(err):
            what = f" ({found.group(1)})" if found else ""
            raise RunFolderError(
                f"{path}: refused to load: the checkpoint asks to rebuild a Python object other than tensors and "
                f"plain values{what}, and loading it could run code; kgdistill only reads the checkpoints it "
                f"writes") from None
        raise RunFolderError(f"{path}: checkpoint cannot be read (damaged or not a checkpoint)") from None
    except Exception as err:  # noqa: BLE001 - a damaged file must give one clear message
        raise RunFolderError(f"{path}: checkpoint cannot be read (damaged or not a checkpoint: "
                             f"{type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict):
        raise RunFolderError(f"{path}: not a kgdistill checkpoint (expected a dict, found {type(ckpt).__name__})")
    _check_finite(ckpt, path)
    return ckpt
