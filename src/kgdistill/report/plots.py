"""Matplotlib figures of a comparison (Agg canvas, no pyplot global state): the MRR / size trade-off and the
validation curves. Each function returns the :class:`~matplotlib.figure.Figure` so that callers (and tests) can
read its data; lines carry ``gid`` tags (``method:NAME``, ``pareto``, ``run:NAME``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">")


def pareto_front(xs: Sequence[float], ys: Sequence[float]) -> list[int]:
    """Indices of the points not dominated when minimising ``x`` and maximising ``y``, ordered by ``x``."""
    front = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        dominated = any(xj <= x and yj >= y and (xj < x or yj > y) for j, (xj, yj) in enumerate(zip(xs, ys)) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (xs[i], -ys[i]))


def _figure(width: float = 7.0, height: float = 4.5) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_pareto(rows: Sequence[dict[str, Any]], path: str | Path | None = None, *,
                x_key: str = "parameters_nonzero", y_key: str = "mrr") -> Figure:
    """MRR against (non-zero) parameters, log x; one marker per method; the Pareto front drawn as a step line."""
    fig = _figure()
    ax = fig.add_subplot()
    pts = [r for r in rows if r.get(x_key) and r.get(y_key) is not None]
    methods = list(dict.fromkeys(r["method"] for r in pts))
    for i, method in enumerate(methods):
        sel = [r for r in pts if r["method"] == method]
        ax.plot([r[x_key] for r in sel], [r[y_key] for r in sel], linestyle="none", marker=MARKERS[i % len(MARKERS)],
                markersize=8, label=method, gid=f"method:{method}")
    if pts:
        front = pareto_front([r[x_key] for r in pts], [r[y_key] for r in pts])
        ax.plot([pts[i][x_key] for i in front], [pts[i][y_key] for i in front], color="black", linewidth=1.2,
                drawstyle="steps-post", marker="o", markerfacecolor="none", markersize=13, label="Pareto front",
                gid="pareto")
        ax.set_xscale("log")
        ax.margins(x=0.15, y=0.12)  # room for the labels of the outermost points
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no runs with metrics", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("non-zero parameters (log)" if x_key == "parameters_nonzero" else x_key)
    ax.set_ylabel(f"{rows[0].get('split') or 'test'} MRR" if rows else "MRR")
    ax.set_title("MRR vs model size")
    ax.grid(True, which="both", alpha=0.3)
    if pts:  # after the layout is final: labels overlap nothing and stay inside the axes
        from kgdistill.report.labels import place_labels

        place_labels(fig, ax, [(r[x_key], r[y_key], r["run"]) for r in pts], fontsize=7)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_validation_curves(rows: Sequence[dict[str, Any]], path: str | Path | None = None) -> Figure:
    """Validation MRR against epoch, one line per run (runs without validation records are left out)."""
    fig = _figure()
    ax = fig.add_subplot()
    drawn = 0
    for r in rows:
        curve = r.get("validation") or []
        if not curve:
            continue
        ax.plot([c["epoch"] for c in curve], [c["mrr"] for c in curve], marker="o", markersize=3, label=r["run"],
                gid=f"run:{r['run']}")
        drawn += 1
    if drawn:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no validation records", ha="center", va="center", transform=ax.transAxes)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation MRR")
    ax.set_title("Validation MRR per epoch")
    ax.grid(True, alpha=0.3)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
