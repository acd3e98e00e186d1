"""Dynamic batching of prediction requests: one worker thread scores all waiting queries with one model call.

Requests enqueue a job and wait on a future. The worker takes the first job, drains whatever else is already
waiting (up to ``max_batch``, optionally waiting ``max_wait_ms`` for more) and answers the tail queries with one
``score_t`` call, the head queries with one ``score_h`` call and the triples with one ``score_hrt`` call. Under load
the entity table is read once per batch instead of once per query (for a large model that is the dominant cost).
Errors are delivered to the jobs' futures; the worker never stops.

When nothing is queued or being scored, :meth:`BatchScorer.predict_now` answers a query on the caller's thread
instead: an idle server then spends no time handing the query to the worker and the answer back.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from kgdistill.artifact import Artifact

_NEG_INF = float("-inf")


@dataclass(frozen=True)
class TopK:
    """Answer of one prediction query: entity ids, scores and whether each answer is a known triple."""

    ids: list[int]
    scores: list[float]
    known: list[bool]


@dataclass
class _Job:
    kind: str  # "tail" | "head" | "score"
    payload: Any  # (anchor, relation, k, exclude_known) | LongTensor[n, 3]
    future: Future = field(default_factory=Future)


@dataclass
class BatchStats:
    """Counters of the scorer (exposed by ``GET /metadata``); ``inline``: queries answered on the caller's thread."""

    batches: int = 0
    queries: int = 0
    largest_batch: int = 0
    inline: int = 0
    #: called with the size of every batch (e.g. a Prometheus histogram's ``observe``)
    observer: Callable[[int], Any] | None = field(default=None, repr=False, compare=False)

    def add(self, n: int, inline: bool = False) -> None:
        if self.observer is not None:
            self.observer(n)
        self.batches += 1
        self.queries += n
        self.largest_batch = max(self.largest_batch, n)
        self.inline += int(inline)

    def as_dict(self) -> dict[str, float]:
        return {"batches": self.batches, "queries": self.queries, "largest_batch": self.largest_batch,
                "mean_batch": round(self.queries / self.batches, 3) if self.batches else 0.0,
                "inline": self.inline}


class BatchScorer:
    """Scores queries of one :class:`~kgdistill.artifact.Artifact` in batches on a worker thread.

    Args:
        artifact: the loaded model with its id maps and known triples.
        max_batch: most queries (or triples) scored by one model call.
        max_wait_ms: how long the worker waits for more queries once it has one (0: take only those waiting).
    """

    def __init__(self, artifact: Artifact, max_batch: int = 64, max_wait_ms: float = 0.0) -> None:
        self.artifact = artifact
        self.max_batch = max(1, max_batch)
        self.max_wait = max_wait_ms / 1000.0
        self.stats = BatchStats()
        self._lock = threading.Lock()
        self._pending = 0  # jobs queued or being scored
        known = artifact.known
        self._e, self._r = artifact.num_entities, artifact.num_relations
        # the known triples as integers (h·R + r)·E + t: whether a top-k answer is known is a set lookup
        self._known_keys: set[int] | None = None if known is None else set(
            ((known[:, 0].long() * self._r + known[:, 1].long()) * self._e + known[:, 2].long()).tolist())
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="kgdistill-batcher", daemon=True)
        self._thread.start()

    # ---- client side ------------------------------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being scored."""
        return self._pending == 0

    def predict(self, side: str, anchor: int, relation: int, k: int, exclude_known: bool = False) -> Future:
        """Queue ``(anchor, relation, ?)`` (side "tail") or ``(?, relation, anchor)`` (side "head") → Future[TopK]."""
        if side not in ("tail", "head"):
            raise ValueError(f"side must be 'tail' or 'head', got {side!r}")
        return self._put(_Job(side, (anchor, relation, k, exclude_known)))

    def predict_now(self, side: str, anchor: int, relation: int, k: int, exclude_known: bool = False) -> TopK:
        """Answer one query on this thread (same answer as :meth:`predict`); meant for when :attr:`idle`."""
        if side not in ("tail", "head"):
            raise ValueError(f"side must be 'tail' or 'head', got {side!r}")
        with torch.inference_mode():
            top = self._predict(side, [(anchor, relation, k, exclude_known)])[0]
        with self._lock:
            self.stats.add(1, inline=True)
        return top

    def score(self, triples: Tensor) -> Future:
        """Queue ``triples: LongTensor[n, 3]`` → Future[list[float]]."""
        return self._put(_Job("score", triples))

    def _put(self, job: _Job) -> Future:
        with self._lock:
            self._pending += 1
        self._queue.put(job)
        return job.future

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    # ---- worker -----------------------------------------------------------------------------------------------
    def _take_batch(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs, size, stop = [first], self._size(first), False
        deadline = time.perf_counter() + self.max_wait
        while size < self.max_batch:
            try:
                remaining = deadline - time.perf_counter()
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                stop = True
                break
            jobs.append(job)
            size += self._size(job)
        return jobs, stop

    @staticmethod
    def _size(job: _Job) -> int:
        return int(job.payload.shape[0]) if job.kind == "score" else 1

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs, stop = self._take_batch(first)
            answers: list[tuple[Future, Any, BaseException | None]] = []
            for kind in ("tail", "head", "score"):
                group = [j for j in jobs if j.kind == kind]
                if not group:
                    continue
                try:
                    with torch.inference_mode():
                        results = (self._score_triples(group) if kind == "score"
                                   else self._predict(kind, [j.payload for j in group]))
                    answers += [(job.future, result, None) for job, result in zip(group, results)]
                except Exception as err:  # noqa: BLE001 - delivered to the waiting requests
                    answers += [(job.future, None, err) for job in group]
            with self._lock:  # idle again before the answers arrive: the next request may be answered inline
                self._pending -= len(jobs)
                self.stats.add(sum(self._size(j) for j in jobs))
            for future, result, err in answers:
                if future.done():
                    continue
                if err is None:
                    future.set_result(result)
                else:
                    future.set_exception(err)
            if stop:
                return

    def _predict(self, side: str, queries: list[tuple[int, int, int, bool]]) -> list[TopK]:
        """Top-k of ``(anchor, relation, k, exclude_known)`` queries with one model call."""
        model = self.artifact.model
        device = model.device
        anchors = torch.tensor([q[0] for q in queries])
        relations = torch.tensor([q[1] for q in queries])
        scores = model.score(side, anchors.to(device), relations.to(device))
        if scores.dtype != torch.float32:
            scores = scores.float()
        index = self.artifact.filter_index
        if index is not None and any(q[3] for q in queries):  # leave out the known answers: find them all
            known: list[set[int]] = [set() for _ in queries]
            rows, cols = index.known(side, anchors, relations)
            for i, e in zip(rows.tolist(), cols.tolist()):
                known[i].add(e)
            for i, q in enumerate(queries):
                if q[3] and known[i]:
                    scores[i, torch.tensor(sorted(known[i]), device=device)] = _NEG_INF
        k_max = min(max(q[2] for q in queries), scores.shape[1])
        values, ids = torch.topk(scores, k_max, dim=1)
        values, ids = values.tolist(), ids.tolist()
        out = []
        keys, n_e = self._known_keys, self._e
        for i, q in enumerate(queries):
            k = q[2]
            pairs = [(e, v) for e, v in zip(ids[i][:k], values[i][:k]) if v != _NEG_INF]
            if keys is None:
                flags = [False] * len(pairs)
            elif side == "tail":  # (anchor, r, e)
                base = (q[0] * self._r + q[1]) * n_e
                flags = [base + e in keys for e, _ in pairs]
            else:  # (e, r, anchor)
                flags = [(e * self._r + q[1]) * n_e + q[0] in keys for e, _ in pairs]
            out.append(TopK([e for e, _ in pairs], [v for _, v in pairs], flags))
        return out

    def _score_triples(self, jobs: list[_Job]) -> list[list[float]]:
        model = self.artifact.model
        triples = torch.cat([j.payload for j in jobs]).to(model.device)
        scores = model.score_hrt(triples).float().cpu().tolist()
        out, start = [], 0
        for job in jobs:
            n = int(job.payload.shape[0])
            out.append(scores[start:start + n])
            start += n
        return out
