"""Serving: the HTTP prediction service over an exported artifact (needs the ``serve`` extra: fastapi, uvicorn).

``create_app(artifact) -> FastAPI`` (:mod:`kgdistill.serve.app`), ``serve(path, host, port)`` and
``ServerThread`` (:mod:`kgdistill.serve.server`), ``BatchScorer`` (:mod:`kgdistill.serve.batching`). Imported
lazily so that ``import kgdistill.serve`` works without the extra installed.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {"create_app": "app", "serve": "server", "ServerThread": "server", "BatchScorer": "batching",
            "TopK": "batching"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = __import__(f"kgdistill.serve.{_EXPORTS[name]}", fromlist=[name])
        return getattr(module, name)
    raise AttributeError(f"module 'kgdistill.serve' has no attribute {name!r}")
