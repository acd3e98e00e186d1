"""Prometheus metrics of the prediction service: requests by route and status, latency, batch sizes.

Every app has its own :class:`prometheus_client.CollectorRegistry` (no process-wide state), exposed in the text format
at ``GET /metrics``. :class:`MetricsMiddleware` wraps the whole ASGI app, so requests answered by the hot path are
counted as well as those answered by the FastAPI routes; routes not in ``paths`` are counted under ``other`` (the
label set stays bounded whatever clients send).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

#: latency buckets (seconds): a small model answers in a millisecond, a large batch in a second or more
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: batch-size buckets: queries (or triples) scored by one model call
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServiceMetrics:
    """The service's counters and histograms in a registry of its own; :meth:`render` gives the text format."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = frozenset(paths)
        self.registry = CollectorRegistry()
        self.requests = Counter("kgdistill_requests", "HTTP requests answered, by route and status",
                                ["path", "status"], registry=self.registry)
        self.latency = Histogram("kgdistill_request_seconds", "time from the request to the end of the answer",
                                 ["path"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_sizes = Histogram("kgdistill_batch_size", "queries or triples scored by one model call",
                                     buckets=BATCH_BUCKETS, registry=self.registry)

    def route(self, path: str) -> str:
        return path if path in self.paths else "other"

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware: counts every HTTP request by route and status and times it."""

    def __init__(self, app: Any, metrics: ServiceMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = self.metrics.route(scope.get("path", ""))
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)


__all__ = ["ServiceMetrics", "MetricsMiddleware", "LATENCY_BUCKETS", "BATCH_BUCKETS"]
