"""Matplotlib figures of a comparison (Agg canvas, no pyplot global state): the MRR / size trade-off with the
teacher → student lineage, and the training curves (loss and validation MRR per epoch, stage boundaries of chained
methods). Each function returns the :class:`~matplotlib.figure.Figure` so that callers (and tests) can read its
data; artists carry ``gid`` tags (``method:NAME``, ``pareto``, ``lineage:TEACHER->STUDENT``, ``run:NAME``,
``loss:NAME``, ``validation:NAME``, ``stage:NAME:STAGE``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogFormatter, MaxNLocator

from kgdistill.report.lineage import lineage_pairs

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
    """MRR against (non-zero) parameters, log x; one marker per method; the Pareto front drawn as a step line; an
    arrow from each teacher to each of its students where both are rows (``lineage:TEACHER->STUDENT``)."""
    fig = _figure()
    ax = fig.add_subplot()
    pts = [r for r in rows if r.get(x_key) and r.get(y_key) is not None]
    links = 0
    for s, t in lineage_pairs(pts):
        student, teacher = pts[s], pts[t]
        ax.annotate("", xy=(student[x_key], student[y_key]), xytext=(teacher[x_key], teacher[y_key]),
                    arrowprops=dict(arrowstyle="-|>", color="0.55", linestyle="--", linewidth=0.9, shrinkA=6,
                                    shrinkB=6, mutation_scale=10),
                    gid=f"lineage:{teacher['run']}->{student['run']}", zorder=1)
        links += 1
    if links:  # a legend entry for the arrows
        ax.add_line(Line2D([], [], color="0.55", linestyle="--", linewidth=0.9, label="teacher → student"))
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


def curve_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows whose curves are drawn: a run that is an earlier stage of another row's chain is drawn within that
    row's curve, not again on its own."""
    earlier = {s["path"] for r in rows for s in (r.get("curves") or {}).get("stages", [])[:-1]}
    return [r for r in rows if not (r.get("curves") or {}).get("stages")
            or r["curves"]["stages"][-1]["path"] not in earlier]


def _broken(points: Sequence[dict[str, Any]], key: str, cuts: Sequence[float]) -> tuple[list[float], list[float]]:
    """Epochs and values of ``points`` with a gap (a NaN value) at each stage boundary in ``cuts``: a new stage
    trains a new student or with another loss, so its curve is not joined to the previous stage's."""
    xs: list[float] = []
    ys: list[float] = []
    pending = sorted(cuts)
    for p in points:
        while pending and p["epoch"] > pending[0]:
            if xs:
                xs.append(pending[0])
                ys.append(float("nan"))
            pending.pop(0)
        xs.append(p["epoch"])
        ys.append(p[key])
    return xs, ys


def plot_training_curves(rows: Sequence[dict[str, Any]], path: str | Path | None = None) -> Figure:
    """Training loss (top, log scale where every loss is positive) and validation MRR (bottom) per epoch, one colour
    per run (``loss:RUN``, ``validation:RUN``); a chained run (IterDE, DualDE, PMD) runs through its stages on one
    epoch axis, with a dashed vertical line at each stage boundary (``stage:RUN:STAGE``, on both panels) labelled
    with the stage that starts there. Rows without a ``curves`` entry use their ``validation`` records."""
    fig = _figure(7.5, 6.5)
    ax_loss, ax_val = fig.subplots(2, 1, sharex=True)
    colors = [f"C{i}" for i in range(10)]  # the default colour cycle
    boundaries: list[tuple[float, str, str]] = []
    drawn = 0
    for i, r in enumerate(curve_rows(rows)):
        curves = r.get("curves") or {"loss": [], "validation": r.get("validation") or [], "stages": []}
        loss, val, stages = curves.get("loss") or [], curves.get("validation") or [], curves.get("stages") or []
        if not loss and not val:
            continue
        color = colors[i % len(colors)]
        label = r["run"] if len(stages) < 2 else f"{r['run']} ({len(stages)} stages)"
        cuts = [s["first_epoch"] - 0.5 for s in stages[1:]]
        if loss:
            x, y = _broken(loss, "loss", cuts)
            ax_loss.plot(x, y, color=color, marker="o", markersize=2.5, linewidth=1.2, label=label,
                         gid=f"loss:{r['run']}")
        if val:
            x, y = _broken(val, "mrr", cuts)
            ax_val.plot(x, y, color=color, marker="o", markersize=3, linewidth=1.2, label=label,
                        gid=f"validation:{r['run']}")
        for stage in stages[1:]:
            x = stage["first_epoch"] - 0.5
            for ax in (ax_loss, ax_val):
                ax.axvline(x, color=color, linestyle="--", linewidth=0.9, alpha=0.8, gid=f"stage:{r['run']}:"
                           f"{stage['name']}")
            boundaries.append((x, stage["name"], color))
        drawn += 1
    losses = [line.get_ydata() for line in ax_loss.get_lines() if str(line.get_gid()).startswith("loss:")]
    if losses and all(float(np.nanmin(y)) > 0 for y in losses if len(y)):
        ax_loss.set_yscale("log")
        for which in (ax_loss.yaxis.set_major_formatter, ax_loss.yaxis.set_minor_formatter):
            which(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))  # 2, 3, 10, not 2×10⁰
    for ax, what in ((ax_loss, "training loss"), (ax_val, "validation MRR")):
        ax.set_ylabel(what)
        ax.grid(True, alpha=0.3)
        if not any(str(line.get_gid()).split(":")[0] in ("loss", "validation") for line in ax.get_lines()):
            ax.text(0.5, 0.5, f"no {what} records", ha="center", va="center", transform=ax.transAxes)
    if drawn:
        ax_val.legend(fontsize=7)
    ax_val.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_val.set_xlabel("epoch (a chain's stages one after another)")
    ax_loss.set_title("Training loss and validation MRR per epoch")
    if boundaries:  # after the layout is final: the stage names overlap nothing and stay inside the axes
        from kgdistill.report.labels import place_labels

        ax_loss.set_ylim(ax_loss.get_ylim())
        ax_loss.set_xlim(ax_loss.get_xlim())
        fig.canvas.draw()
        top = ax_loss.transData.inverted().transform(ax_loss.transAxes.transform((0.0, 0.93)))[1]
        for text in place_labels(fig, ax_loss, [(x, top, name) for x, name, _ in boundaries], fontsize=6.5):
            color = next(c for x, name, c in boundaries if name == text.get_text() and x == text.xy[0])
            text.set_color(color)
            text.set_gid(f"stage-label:{text.get_text()}")
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
