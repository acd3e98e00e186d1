"""Progress of a benchmark: which stage of which method and seed is running, and the time left.

A background thread reads the running distillation's folder (a stage folder with ``config.yaml`` and no
``metrics.json`` is the running stage; its ``trace.jsonl`` holds one ``epoch`` record per finished epoch), so the
methods need no hook. A line is logged (logger ``kgdistill.benchmark``; the command line writes it to stderr) when a
run starts and ends, when a stage starts and at most every ``every`` seconds in between. The time left is the
remaining planned student epochs times the seconds per epoch measured on earlier runs of the same method in this
session (else the mean over all methods, else the running one's pace so far).
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("kgdistill.benchmark")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def stage_state(run_dir: Path) -> tuple[int, str | None, int]:
    """``(finished stages, running stage's folder name or None, its finished epochs)`` of a distill folder."""
    if not run_dir.is_dir():
        return 0, None, 0
    stages = [d for d in run_dir.iterdir() if (d / "config.yaml").exists()]
    finished = sum((d / "metrics.json").exists() for d in stages)
    running = sorted((d for d in stages if not (d / "metrics.json").exists()),
                     key=lambda d: (d / "config.yaml").stat().st_mtime)
    if not running:
        return finished, None, 0
    trace = running[-1] / "trace.jsonl"
    try:
        epochs = trace.read_text(encoding="utf-8").count('"event": "epoch"') if trace.exists() else 0
    except OSError:
        epochs = 0
    return finished, running[-1].name, epochs


class BenchmarkProgress:
    """Reports the runs ``[(label, seed, stage epochs)]`` of a benchmark as they go (``enabled=False``: silent);
    lines go to the ``kgdistill.benchmark`` logger, or to ``stream`` when one is given."""

    def __init__(self, runs: list[tuple[str, int, list[int]]], enabled: bool = True, stream: IO[str] | None = None,
                 every: float = 60.0) -> None:
        self.runs, self.enabled, self.stream, self.every = runs, enabled, stream, every
        self.rates: dict[str, list[float]] = {}
        self.done: set[int] = set()
        self.current: dict[str, Any] | None = None
        self.start = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last = (None, 0.0)

    def _epochs_done(self, i: int, run_dir: Path) -> int:
        stage_epochs = self.runs[i][2]
        finished, _, epochs = stage_state(run_dir)
        return sum(stage_epochs[:finished]) + epochs

    def _rate(self, label: str) -> float | None:
        if self.rates.get(label):
            return statistics.fmean(self.rates[label])
        measured = [r for rs in self.rates.values() for r in rs]
        if measured:
            return statistics.fmean(measured)
        cur = self.current
        if cur is not None:
            done = self._epochs_done(cur["i"], cur["dir"]) - cur["before"]
            if done > 0:
                return (time.monotonic() - cur["t"]) / done
        return None

    def seconds_left(self) -> float | None:
        """Estimated seconds until the last run finishes (None before any epoch was timed)."""
        left = 0.0
        for i, (label, _, stage_epochs) in enumerate(self.runs):
            if i in self.done:
                continue
            rate = self._rate(label)
            if rate is None:
                return None
            todo = sum(stage_epochs)
            if self.current is not None and self.current["i"] == i:
                todo -= self._epochs_done(i, self.current["dir"])
            left += max(todo, 0) * rate
        return left

    def status(self) -> str:
        cur = self.current
        n = len(self.runs)
        if cur is None:
            return f"benchmark: {len(self.done)}/{n} runs done"
        label, seed, stage_epochs = self.runs[cur["i"]]
        finished, stage, epoch = stage_state(cur["dir"])
        k = len(stage_epochs)
        if stage is None and finished == 0:
            where = f"starting, {k} stage{'s' * (k != 1)} of {' + '.join(map(str, stage_epochs))} epochs"
        else:
            where = f"stage {min(finished + 1, k)}/{k}"
        if stage is not None:
            where += f" {stage}, epoch {epoch}/{stage_epochs[min(finished, k - 1)]}"
        left = self.seconds_left()
        return (f"benchmark [{cur['i'] + 1}/{n}] {label} seed {seed}: {where}; elapsed "
                f"{_duration(time.monotonic() - self.start)}, "
                + ("time left unknown yet" if left is None else f"about {_duration(left)} left"))

    def _emit(self, line: str) -> None:
        if not self.enabled:
            return
        if self.stream is None:
            log.info(line)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                if self.current is None:
                    continue
                _, stage, _ = stage_state(self.current["dir"])
                now = time.monotonic()
                if (stage is not None and stage != self._last[0]) or now - self._last[1] >= self.every:
                    self._last = (stage, now)
                    self._emit(self.status())

    def skip(self, i: int) -> None:
        """Run ``i`` finished in an earlier session (read back, not run)."""
        self.done.add(i)
        label, seed, _ = self.runs[i]
        self._emit(f"benchmark [{i + 1}/{len(self.runs)}] {label} seed {seed}: finished earlier, kept")

    def begin(self, i: int, run_dir: Path) -> None:
        with self._lock:
            self.current = {"i": i, "dir": Path(run_dir), "t": time.monotonic(), "before": 0}
            self.current["before"] = self._epochs_done(i, Path(run_dir))
            self._last = (None, time.monotonic())
            self._emit(self.status())
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="benchmark-progress", daemon=True)
            self._thread.start()

    def end(self, i: int) -> None:
        with self._lock:
            cur = self.current
            assert cur is not None and cur["i"] == i
            label, seed, stage_epochs = self.runs[i]
            seconds = time.monotonic() - cur["t"]
            epochs = sum(stage_epochs) - cur["before"]
            if epochs > 0:
                self.rates.setdefault(label, []).append(seconds / epochs)
            self.done.add(i)
            self.current = None
            self._emit(f"benchmark [{i + 1}/{len(self.runs)}] {label} seed {seed}: done in {_duration(seconds)}")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)


__all__ = ["BenchmarkProgress", "stage_state"]
