"""Progress bars and log lines.

Bars are drawn only when asked for *and* stderr is a terminal (tqdm's ``disable=None``): a log file or a pipe never
receives bar frames. Everything else (one line per epoch, per validation) goes through :mod:`logging` under the
``kgdistill`` logger; the library adds no handler (a library caller configures logging as usual), the command line
installs :class:`TqdmHandler` through :func:`configure_logging`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any


def bar(total: int, desc: str, *, enabled: bool = True, **kwargs: Any) -> Any:
    """A ``tqdm`` bar on stderr, drawn only when ``enabled`` and stderr is a terminal (otherwise a no-op bar)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=None if enabled else True, file=sys.stderr, **kwargs)


class TqdmHandler(logging.Handler):
    """Writes records to the current ``sys.stderr`` through ``tqdm.write``, so log lines do not tear a bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm.auto import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging's contract: report, never raise
            self.handleError(record)


def configure_logging(level: int = logging.INFO) -> logging.Logger:
    """Log ``kgdistill.*`` records at ``level`` and above to stderr, one line each (idempotent); the command line
    calls it, a library caller may."""
    logger = logging.getLogger("kgdistill")
    if not any(isinstance(h, TqdmHandler) for h in logger.handlers):
        handler = TqdmHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(level)
    return logger
