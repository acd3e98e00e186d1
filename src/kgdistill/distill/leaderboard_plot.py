"""The leaderboard's Pareto plot: test MRR (mean ± sd over seeds) against non-zero parameters, one marker per method
and the teacher, the Pareto front as a step line (the style of :mod:`kgdistill.report.plots`), labels placed so that
they overlap neither each other nor the markers and stay inside the axes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from kgdistill.report.plots import MARKERS, _figure, pareto_front

#: label offsets in points tried in order (dx, dy, horizontal alignment, vertical alignment), then at 2× and 3×
_OFFSETS = ((7, 5, "left", "bottom"), (7, -5, "left", "top"), (-7, 5, "right", "bottom"), (-7, -5, "right", "top"),
            (0, 9, "center", "bottom"), (0, -9, "center", "top"), (9, 0, "left", "center"), (-9, 0, "right", "center"))


def _overlap(a: Bbox, b: Bbox) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def _outside(box: Bbox, frame: Bbox) -> float:
    """Area of ``box`` outside ``frame``."""
    return box.width * box.height - _overlap(box, frame)


def place_labels(fig: Figure, ax: Any, points: Sequence[tuple[float, float, str]], fontsize: float = 8) -> list[Any]:
    """Annotate each ``(x, y, text)`` at the first candidate offset whose box overlaps no placed label, no marker,
    not the legend and stays inside the axes (else the candidate with the least overlap). The layout is frozen
    first, so that the boxes measured here are those saved."""
    fig.canvas.draw()
    fig.set_layout_engine("none")
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    frame = ax.get_window_extent(renderer)
    pix = fig.dpi / 72.0
    markers = []
    for x, y, _ in points:
        px, py = ax.transData.transform((x, y))
        markers.append(Bbox.from_extents(px - 5 * pix, py - 5 * pix, px + 5 * pix, py + 5 * pix))
    if ax.get_legend() is not None:
        markers.append(ax.get_legend().get_window_extent(renderer))
    placed: list[Bbox] = []
    texts = []
    for x, y, text in sorted(points, key=lambda p: -p[1]):
        best = None
        for scale in (1, 2, 3):
            for dx, dy, ha, va in _OFFSETS:
                ann = ax.annotate(text, (x, y), xytext=(dx * scale, dy * scale), textcoords="offset points",
                                  ha=ha, va=va, fontsize=fontsize)
                box = ann.get_window_extent(renderer)
                cost = (sum(_overlap(box, p) for p in placed) + sum(_overlap(box, m) for m in markers)
                        + 2 * _outside(box, frame))
                if best is None or cost < best[0]:
                    if best is not None:
                        best[1].remove()
                    best = (cost, ann, box)
                else:
                    ann.remove()
                if best[0] == 0:
                    break
            if best is not None and best[0] == 0:
                break
        assert best is not None
        placed.append(best[2])
        texts.append(best[1])
    return texts


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
