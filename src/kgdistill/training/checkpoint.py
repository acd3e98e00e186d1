"""Atomic checkpoint files: a crash mid-write never destroys the previous checkpoint."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from kgdistill.errors import RunFolderError


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Write ``obj`` to ``path.tmp``, fsync, then rename over ``path`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`atomic_torch_save` without executing code from it.

    ``torch.load(weights_only=True)`` only rebuilds tensors and plain containers/values (dicts, lists, ints,
    floats, strings, ...), which is all a kgdistill checkpoint holds; a pickle asking for any other object (a
    ``__reduce__`` that would run code on load) is refused with one message naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise RunFolderError(f"{path}: no checkpoint to resume from")
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
    return ckpt
