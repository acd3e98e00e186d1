"""The JSONL trace of a run: one JSON object per event (epoch, evaluation, resume), appended and flushed."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

#: ``listener(run_dir, record)`` called after every record a :class:`Trace` writes in this context (the trackers of
#: :mod:`kgdistill.tracking`, the pruning of :mod:`kgdistill.hpo`); an exception it raises stops the training
LISTENERS: ContextVar[tuple[Callable[[Path, dict[str, Any]], None], ...]] = ContextVar("kgdistill_trace_listeners",
                                                                                      default=())


class Trace:
    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None

    def write(self, event: str, **fields: Any) -> None:
        if self.path is None:
            return
        record = {"event": event, "time": round(time.time(), 3), **fields}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        for listener in LISTENERS.get():
            listener(self.path.parent, record)

    def truncate_after_epoch(self, epoch: int) -> None:
        """Drop records of epochs after ``epoch`` (work lost by a crash, redone on resume)."""
        if self.path is None or not self.path.exists():
            return
        kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("epoch", 0) <= epoch]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        tmp.replace(self.path)

    def read(self) -> list[dict[str, Any]]:
        if self.path is None or not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
