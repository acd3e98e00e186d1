"""Comparison of runs: a table (Markdown, CSV, JSON), plots (MRR vs parameters with the Pareto front, validation
curves) and a one-page HTML report. Needs the ``report`` extra (matplotlib) for the plots.

``collect_runs`` / ``collect_run`` / ``measure_qps`` (:mod:`.collect`), ``compare`` / ``write_html`` / ``table``
(:mod:`.output`), ``plot_pareto`` / ``plot_validation_curves`` / ``pareto_front`` (:mod:`.plots`); imported lazily
so that the CLI starts without loading matplotlib.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {"COLUMNS": "collect", "collect_run": "collect", "collect_runs": "collect", "measure_qps": "collect",
            "Comparison": "output", "compare": "output", "table": "output", "write_html": "output",
            "pareto_front": "plots", "plot_pareto": "plots", "plot_validation_curves": "plots"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = __import__(f"kgdistill.report.{_EXPORTS[name]}", fromlist=[name])
        return getattr(module, name)
    raise AttributeError(f"module 'kgdistill.report' has no attribute {name!r}")
