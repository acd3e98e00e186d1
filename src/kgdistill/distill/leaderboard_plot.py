"""The leaderboard's Pareto plot: test MRR (mean ± sd over seeds) against non-zero parameters, one marker per method
and the teacher, the Pareto front as a step line (the style of :mod:`kgdistill.report.plots`), labels placed so that
they overlap neither each other nor the markers and stay inside the axes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from kgdistill.report.labels import place_labels
from kgdistill.report.plots import MARKERS, _figure, pareto_front

def plot_leaderboard(teacher: dict[str, Any], rows: Sequence[dict[str, Any]], path: str | Path | None = None
                     ) -> Figure:
    """Test MRR against non-zero parameters (log x) for the teacher and each method row (error bar: sd over
    seeds); the Pareto front (fewer non-zeros, higher MRR) drawn as a step line."""
    fig = _figure()
    ax = fig.add_subplot()
    pts: list[tuple[float, float, str]] = []
    if teacher.get("nonzero") and teacher.get("MRR") is not None:
        ax.plot([teacher["nonzero"]], [teacher["MRR"]], linestyle="none", marker="*", markersize=12, color="black",
                label="teacher", gid="method:teacher")
        pts.append((float(teacher["nonzero"]), float(teacher["MRR"]), "teacher"))
    for i, r in enumerate(rows):
        if not r.get("nonzero mean") or r.get("MRR mean") is None:
            continue
        ax.errorbar([r["nonzero mean"]], [r["MRR mean"]], yerr=[r.get("MRR sd") or 0.0], linestyle="none",
                    marker=MARKERS[i % len(MARKERS)], markersize=7, capsize=3, label=r["method"],
                    gid=f"method:{r['method']}")
        pts.append((float(r["nonzero mean"]), float(r["MRR mean"]), r["method"]))
    if pts:
        front = pareto_front([p[0] for p in pts], [p[1] for p in pts])
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], color="gray", linewidth=1.0,
                drawstyle="steps-post", zorder=0, label="Pareto front", gid="pareto")
        ax.set_xscale("log")
        ax.margins(x=0.25, y=0.15)
        ax.legend(fontsize=7, loc="best")
    ax.set_xlabel("non-zero parameters (log)")
    ax.set_ylabel("test MRR (mean ± sd over seeds)")
    ax.set_title("MRR vs non-zero parameters")
    ax.grid(True, which="both", alpha=0.3)
    if pts:
        place_labels(fig, ax, pts)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


__all__ = ["plot_leaderboard", "place_labels"]
