"""Slow and idle clients cannot stall the service.

uvicorn bounds nothing between a connection's first byte and its complete request: a client that sends
``GET /health HTTP/1.1\\r\\nHost: x\\r\\n`` and never the blank line holds its connection forever, and with
``limit_concurrency`` such connections count against the limit, so 520 of them made every other client get 503.

:func:`guarded_protocol` wraps uvicorn's HTTP protocol class (httptools or h11) with:

* a **request deadline**: from the moment a connection opens, and again from each completed response (keep-alive),
  the client has ``request_timeout`` seconds to deliver a complete request, headers and body. A connection still
  short of that at the deadline is closed. A request whose bytes are all in is never cut: the application may take
  as long as it needs to answer.
* a **connection cap**: above ``max_connections`` open connections, each new one closes the oldest connection that
  is waiting for its client (idle, or with an incomplete request), never one whose request is being answered; so
  well-formed clients get in even when the process runs short of file descriptors.

:class:`ConcurrencyLimit` bounds requests *in progress* (503 above the limit), which is what uvicorn's
``limit_concurrency`` was meant for, without counting connections that have not sent a request yet.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from typing import Any

logger = logging.getLogger(__name__)

#: seconds a client has to send a complete request (headers + body) after connecting or after a response
REQUEST_TIMEOUT = 10.0
#: open connections above which the oldest connection waiting for its client is closed
MAX_CONNECTIONS = 768


def _protocol_class(http: str) -> type[asyncio.Protocol]:
    from uvicorn.config import HTTP_PROTOCOLS
    from uvicorn.importer import import_from_string

    cls = import_from_string(HTTP_PROTOCOLS.get(http, http))
    if http == "auto":  # uvicorn's auto choice: httptools when installed, else h11
        try:
            import httptools  # noqa: F401

            cls = import_from_string(HTTP_PROTOCOLS["httptools"])
        except ImportError:
            cls = import_from_string(HTTP_PROTOCOLS["h11"])
    return cls


def guarded_protocol(http: str = "auto", request_timeout: float = REQUEST_TIMEOUT,
                     max_connections: int = MAX_CONNECTIONS) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class for ``http`` (auto | httptools | h11) with the request deadline and the
    connection cap of this module; pass it as ``uvicorn.Config(http=...)``."""
    if not request_timeout > 0 or max_connections < 1:
        raise ValueError("request_timeout must be > 0 and max_connections ≥ 1")
    base: Any = _protocol_class(http)
    # one table per server class: connection → None, oldest first (shared by the server's connections only)
    open_connections: OrderedDict[Any, None] = OrderedDict()

    class GuardedProtocol(base):  # type: ignore[misc, valid-type]
        """See :mod:`kgdistill.serve.guard`."""

        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            open_connections[self] = None
            self._arm()
            if len(open_connections) > max_connections:
                for other in list(open_connections):
                    if other is not self and not other._answering():
                        other._close("connection cap reached")
                        break

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            open_connections.pop(self, None)
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self in open_connections:
                open_connections.move_to_end(self)  # recently active: the last to be closed by the cap
            self._arm()  # the next request (keep-alive) gets its own deadline

        # ---- the deadline ------------------------------------------------------------------------------------
        def _answering(self) -> bool:
            """A complete request is in and its response not finished: the application is working on it."""
            cycle = getattr(self, "cycle", None)
            return cycle is not None and not cycle.response_complete and not cycle.more_body

        def _arm(self) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self._deadline = self.loop.call_later(request_timeout, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if not self._answering():
                self._close(f"no complete request within {request_timeout:g} s")

        def _close(self, why: str) -> None:
            logger.debug("closing %s: %s", getattr(self, "client", None), why)
            self._disarm()
            open_connections.pop(self, None)
            if not self.transport.is_closing():
                self.transport.close()

    GuardedProtocol.__name__ = f"Guarded{base.__name__}"
    GuardedProtocol.__qualname__ = GuardedProtocol.__name__
    return GuardedProtocol


class ConcurrencyLimit:
    """ASGI middleware: at most ``limit`` HTTP requests in progress; above it, 503 at once (``Retry-After: 1``)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit, self.active = app, limit, 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            body = json.dumps({"detail": f"too many requests in progress (limit {self.limit}); retry"}).encode()
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()), (b"retry-after", b"1")]})
            await send({"type": "http.response.body", "body": body})
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


__all__ = ["REQUEST_TIMEOUT", "MAX_CONNECTIONS", "guarded_protocol", "ConcurrencyLimit"]
