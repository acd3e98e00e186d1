"""Dynamic batching of prediction requests: one worker thread scores all waiting queries with one model call.

Requests enqueue a job and wait on a future. The worker takes the first job, drains whatever else is already
waiting (up to ``max_batch``, optionally waiting ``max_wait_ms`` for more) and answers the tail queries with one
``score_t`` call, the head queries with one ``score_h`` call and the triples with one ``score_hrt`` call. An idle
server therefore adds no delay, and under load the entity table is read once per batch instead of once per query
(for a large model that is the dominant cost). Errors are delivered to the jobs' futures; the worker never stops.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from kgdistill.export import Artifact


@dataclass(frozen=True)
class TopK:
    """Answer of one prediction query: entity ids, scores and whether each answer is a known triple."""

    ids: list[int]
    scores: list[float]
    known: list[bool]


@dataclass
class _Job:
    kind: str  # "tail" | "head" | "score"
    payload: Any
    future: Future = field(default_factory=Future)


@dataclass
class BatchStats:
    """Counters of the worker (exposed by ``GET /metadata``)."""

    batches: int = 0
    queries: int = 0
    largest_batch: int = 0

    def as_dict(self) -> dict[str, float]:
        return {"batches": self.batches, "queries": self.queries, "largest_batch": self.largest_batch,
                "mean_batch": round(self.queries / self.batches, 3) if self.batches else 0.0}


class BatchScorer:
    """Scores queries of one :class:`~kgdistill.export.Artifact` in batches on a worker thread.

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
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="kgdistill-batcher", daemon=True)
        self._thread.start()

    # ---- client side ------------------------------------------------------------------------------------------
    def predict(self, side: str, anchor: int, relation: int, k: int, exclude_known: bool = False) -> Future:
        """Queue ``(anchor, relation, ?)`` (side "tail") or ``(?, relation, anchor)`` (side "head") → Future[TopK]."""
        if side not in ("tail", "head"):
            raise ValueError(f"side must be 'tail' or 'head', got {side!r}")
        job = _Job(side, (anchor, relation, k, exclude_known))
        self._queue.put(job)
        return job.future

    def score(self, triples: Tensor) -> Future:
        """Queue ``triples: LongTensor[n, 3]`` → Future[list[float]]."""
        job = _Job("score", triples)
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
            for kind in ("tail", "head", "score"):
                group = [j for j in jobs if j.kind == kind]
                if not group:
                    continue
                try:
                    with torch.inference_mode():
                        results = self._score_triples(group) if kind == "score" else self._predict(kind, group)
                    for job, result in zip(group, results):
                        job.future.set_result(result)
                except Exception as err:  # noqa: BLE001 - delivered to the waiting requests
                    for job in group:
                        if not job.future.done():
                            job.future.set_exception(err)
            self.stats.batches += 1
            n = sum(self._size(j) for j in jobs)
            self.stats.queries += n
            self.stats.largest_batch = max(self.stats.largest_batch, n)
            if stop:
                return

    def _predict(self, side: str, jobs: list[_Job]) -> list[TopK]:
        model = self.artifact.model
        device = model.device
        anchors = torch.tensor([j.payload[0] for j in jobs])
        relations = torch.tensor([j.payload[1] for j in jobs])
        scores = model.score(side, anchors.to(device), relations.to(device))
        if scores.dtype != torch.float32:
            scores = scores.float()
        known: list[set[int]] = [set() for _ in jobs]
        index = self.artifact.filter_index
        if index is not None:  # known answers of these queries: a handful of (row, entity) pairs
            rows, cols = index.known(side, anchors, relations)
            for i, e in zip(rows.tolist(), cols.tolist()):
                known[i].add(e)
            for i, job in enumerate(jobs):
                if job.payload[3] and known[i]:
                    scores[i, torch.tensor(sorted(known[i]), device=device)] = float("-inf")
        k_max = min(max(j.payload[2] for j in jobs), scores.shape[1])
        top = torch.topk(scores, k_max, dim=1)
        values, ids = top.values.tolist(), top.indices.tolist()
        out = []
        for i, job in enumerate(jobs):
            pairs = [(e, v) for e, v in zip(ids[i][:job.payload[2]], values[i][:job.payload[2]]) if v != float("-inf")]
            out.append(TopK([e for e, _ in pairs], [v for _, v in pairs], [e in known[i] for e, _ in pairs]))
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
