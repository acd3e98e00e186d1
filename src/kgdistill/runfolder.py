"""Guarding run folders: one writer at a time, and never a folder of someone else's files.

* :class:`RunFolderLock` — an exclusive ``fcntl.flock`` on ``RUN_DIR/.kgdistill.lock``, held by the process that
  writes the folder for as long as it writes. A second writer is refused with one line naming the holder's pid.
  The kernel drops the lock when the holder exits, however it exits (SIGKILL included), so a crashed run never
  leaves a stale lock behind; the lock file itself stays and marks the folder as a kgdistill run folder.
* :func:`check_output_folder` — the checks made before anything is created: the path is not a file and not below
  a file, and an existing folder is either empty or a kgdistill run folder.
* :func:`check_no_finished_run` — a new run never replaces a run that has results (a checkpoint, a model or
  metrics), even one finished with ``--epochs 0``.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from kgdistill.errors import ConfigError, RunFolderError

LOCK_FILE = ".kgdistill.lock"
#: files whose presence means "this folder holds a run with results"
RESULT_FILES = ("checkpoints/last.pt", "model.safetensors", "model.json", "metrics.json")

F = TypeVar("F", bound=Callable[..., Any])


class RunFolderLockedError(RunFolderError):
    """Another process holds the run folder's lock (a failure, not bad input: exit status 1)."""

    exit_code = 1


class RunFolderLock:
    """Exclusive lock of one run folder (``with RunFolderLock(folder): ...``); creates the folder if needed."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunFolderLock:
        """Take the lock without waiting; raise :class:`RunFolderLockedError` naming the holder's pid."""
        if self._fd is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunFolderLockedError(
                f"{self.folder}: in use by another kgdistill process (pid {holder}); wait for it to finish, or "
                f"choose another output folder") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the lock file stays: it marks the folder as a run folder)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the only descriptor releases the flock

    def __enter__(self) -> RunFolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # a lock object dropped without release() must not keep the folder locked
        self.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return text if text.isdigit() else "unknown"


@contextmanager
def run_folder_lock(folder: str | Path, enabled: bool = True) -> Iterator[RunFolderLock | None]:
    """``with run_folder_lock(folder, enabled=ctx.is_main):`` — the lock on the writing rank, nothing elsewhere."""
    if not enabled:
        yield None
        return
    with RunFolderLock(folder) as lock:
        yield lock


def locks_run_dir(fn: F) -> F:
    """Decorator for functions taking ``run_dir=`` (and optionally ``ctx=``): hold the folder's lock during the call
    on the writing rank (rank 0, or the only process)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = kwargs.get("ctx")
        is_main = ctx is None or getattr(ctx, "is_main", True)
        check_output_folder(kwargs["run_dir"])
        with run_folder_lock(kwargs["run_dir"], enabled=is_main):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` was written by kgdistill (its lock file, or a ``meta.json`` written by kgdistill)."""
    if (folder / LOCK_FILE).exists():
        return True
    if (folder / "checkpoints" / "last.pt").is_file() and (folder / "trace.jsonl").is_file():
        return True  # an interrupted run written before run folders had a lock file
    meta = folder / "meta.json"
    if meta.is_file():
        try:
            return isinstance(data := json.loads(meta.read_text(encoding="utf-8")), dict) and "kgdistill" in data
        except (OSError, ValueError):
            return False
    return False


def check_output_folder(folder: str | Path, option: str = "--out") -> None:
    """Before creating anything: ``folder`` is not a file, not below a file, and, if it exists, is either empty or
    a kgdistill run folder (a folder of other files is never written into)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option} {folder}: is a file, not a folder; choose a folder for the run")
    for parent in folder.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{option} {folder}: {parent} is a file, so no folder can be created below it")
            break
    if folder.is_dir() and any(folder.iterdir()) and not is_run_folder(folder):
        shown = sorted(p.name for p in folder.iterdir())
        listing = ", ".join(shown[:5]) + (f" and {len(shown) - 5} more" if len(shown) > 5 else "")
        raise RunFolderError(f"{folder}: exists and is not a kgdistill run folder (it holds {listing}); a run is "
                             f"only written into a new or empty folder, choose another {option}")


def check_no_finished_run(folder: str | Path) -> None:
    """A new (not resumed) run must not replace a run with results in ``folder``."""
    folder = Path(folder)
    found = [name for name in RESULT_FILES if (folder / name).exists()]
    if found:
        raise RunFolderError(f"{folder}: already holds a run ({', '.join(found)}); resume it (--resume) or choose "
                             f"another output folder")


__all__ = ["LOCK_FILE", "RunFolderLock", "RunFolderLockedError", "run_folder_lock", "locks_run_dir",
           "is_run_folder", "check_output_folder", "check_no_finished_run"]
