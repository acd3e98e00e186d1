"""Comparison of runs: a table (Markdown, CSV, JSON) with each student's teacher and queries/s measured afresh for
every row, plots (MRR vs parameters with the Pareto front and teacher → student arrows; training loss and
validation MRR per epoch with the stage boundaries of chained methods) and a one-page HTML report linking each
run's config and metrics. Needs the ``report`` extra (matplotlib) for the plots.

``collect_runs`` / ``collect_run`` / ``measure_qps`` / ``measure_throughput`` (:mod:`.collect`), ``chain_stages`` /
``lineage_pairs`` / ``training_curves`` (:mod:`.lineage`), ``compare`` / ``write_html`` / ``table``
(:mod:`.output`), ``plot_pareto`` / ``plot_training_curves`` / ``plot_validation_curves`` / ``pareto_front``
(:mod:`.plots`); imported lazily so that the CLI starts without loading matplotlib.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {"COLUMNS": "collect", "collect_run": "collect", "collect_runs": "collect", "measure_qps": "collect",
            "measure_throughput": "collect", "chain_stages": "lineage", "lineage_pairs": "lineage",
            "training_curves": "lineage", "Comparison": "output", "compare": "output", "table": "output",
            "write_html": "output", "pareto_front": "plots", "plot_pareto": "plots",
            "plot_training_curves": "plots", "plot_validation_curves": "plots"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = __import__(f"kgdistill.report.{_EXPORTS[name]}", fromlist=[name])
        return getattr(module, name)
    raise AttributeError(f"module 'kgdistill.report' has no attribute {name!r}")
