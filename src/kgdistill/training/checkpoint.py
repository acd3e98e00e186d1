"""Atomic checkpoint files: a crash mid-write never destroys the previous checkpoint."""

from __future__ import annotations

import os
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
    path = Path(path)
    if not path.exists():
        raise RunFolderError(f"{path}: no checkpoint to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - a damaged file must give one clear message
        raise RunFolderError(f"{path}: checkpoint cannot be read ({type(err).__name__}: {err})") from None
