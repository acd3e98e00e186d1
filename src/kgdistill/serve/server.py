"""Running the service with uvicorn: in the foreground (``kgdistill serve``) or on a thread (tests, benchmarks).

uvicorn's ``auto`` choices use the ``httptools`` HTTP parser and the ``uvloop`` event loop when they are installed
(both are in the ``serve`` extra; much less CPU per request than ``h11`` and asyncio's loop) and fall back to
``h11`` / asyncio otherwise; ``http`` and ``loop`` choose explicitly.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import torch
import uvicorn

from kgdistill.artifact import load_artifact
from kgdistill.serve.app import create_app
from kgdistill.serve.guard import MAX_CONNECTIONS, REQUEST_TIMEOUT, ConcurrencyLimit, guarded_protocol


HTTP_CHOICES = ("auto", "httptools", "h11")
LOOP_CHOICES = ("auto", "uvloop", "asyncio")


def make_server(app: Any, host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "warning",
                access_log: bool = False, limit_concurrency: int | None = 512, http: str = "auto",
                loop: str = "auto", request_timeout: float = REQUEST_TIMEOUT,
                max_connections: int = MAX_CONNECTIONS, timeout_keep_alive: float = 5.0) -> uvicorn.Server:
    """A uvicorn server for ``app``; ``port=0`` binds a free port (see :attr:`ServerThread.port`).
    ``http``: auto | httptools | h11; ``loop``: auto | uvloop | asyncio.

    Slow clients cannot stall it (:mod:`kgdistill.serve.guard`): a client has ``request_timeout`` seconds to send a
    complete request after connecting (or after its previous response), idle keep-alive connections close after
    ``timeout_keep_alive`` seconds, above ``max_connections`` the oldest connection waiting for its client is closed,
    and ``limit_concurrency`` bounds the requests *in progress* (503 above it), not the open connections."""
    if http not in HTTP_CHOICES or loop not in LOOP_CHOICES:
        raise ValueError(f"http must be one of {HTTP_CHOICES} and loop one of {LOOP_CHOICES}")
    if limit_concurrency is not None:
        app = ConcurrencyLimit(app, limit_concurrency)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                            limit_concurrency=None, timeout_keep_alive=timeout_keep_alive, lifespan="on",
                            http=guarded_protocol(http, request_timeout, max_connections), loop=loop)
    return uvicorn.Server(config)


def serve(artifact: str | Path, host: str = "127.0.0.1", port: int = 8000, *, threads: int | None = None,
          log_level: str = "info", access_log: bool = False, limit_concurrency: int | None = 512, http: str = "auto",
          loop: str = "auto", **app_options: Any) -> None:
    """Load ``artifact`` and serve it until interrupted. ``threads``: torch CPU threads for scoring; ``http``,
    ``loop``: see :func:`make_server`; ``app_options`` go to :func:`~kgdistill.serve.app.create_app` (max_batch,
    max_k, …)."""
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    art = load_artifact(artifact)
    app = create_app(art, **app_options)
    print(f"loaded {artifact} ({art.size_bytes or 0:,} bytes) in {time.perf_counter() - start:.2f}s; "
          f"serving on http://{host}:{port} (OpenAPI: /docs, /openapi.json)", flush=True)
    make_server(app, host, port, log_level=log_level, access_log=access_log, limit_concurrency=limit_concurrency,
                http=http, loop=loop).run()


class ServerThread:
    """Serve ``app`` from a background thread on ``host`` and a free port; a context manager.

    >>> with ServerThread(create_app(artifact)) as server:   # doctest: +SKIP
    ...     httpx.get(f"{server.url}/health")
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        self.server = make_server(app, host, port, **options)
        self.host = host
        self._thread = threading.Thread(target=self.server.run, name="kgdistill-uvicorn", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
