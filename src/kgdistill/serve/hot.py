"""ASGI fast path for the prediction routes: well-formed JSON requests are answered without FastAPI's routing,
dependency solving and response handling; every other request goes on, unchanged, to the application.

A request is taken when it is ``POST`` to one of ``routes`` with ``Content-Type: application/json``, its body parses
with :func:`json.loads` (what FastAPI uses), and the route's handler accepts the parsed value (it returns the answer's
JSON bytes, or None to decline: invalid fields, unknown names). Declined requests are handed to the application with
their body, so that their answer, an error message included, is exactly the application's.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from kgdistill.serve.limits import replay_body

Handler = Callable[[Any], Awaitable[bytes | None]]


def _is_json(content_type: bytes) -> bool:
    return content_type.split(b";", 1)[0].strip().lower() == b"application/json"


class HotRoutes:
    """Answers ``POST`` requests to ``routes`` (path → handler) ahead of ``app``; see the module docstring."""

    def __init__(self, app: Any, routes: dict[str, Handler]) -> None:
        self.app, self.routes = app, routes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        handler = self.routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        if handler is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        content_type = next((v for k, v in scope.get("headers") or () if k == b"content-type"), None)
        if content_type is None or not _is_json(content_type):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            fields = json.loads(body) if body else None
        except Exception:  # noqa: BLE001 - invalid JSON or encoding, too deeply nested: the application answers it
            fields = None
        answer = await handler(fields) if fields is not None else None
        if answer is None:
            await self.app(scope, replay_body(body, receive), send)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(answer)).encode()),
                                (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer})
