"""Label placement for scatter plots: each label where it overlaps no other label, no marker and not the legend,
inside the axes, nearer its own point than any other (else farther out with a leader line). Used by the
comparison's MRR-vs-size plot and the benchmark leaderboard's Pareto plot."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

#: label directions in points (dx, dy, horizontal alignment, vertical alignment), tried at each of ``_RINGS``
_OFFSETS = ((7, 5, "left", "bottom"), (7, -5, "left", "top"), (-7, 5, "right", "bottom"), (-7, -5, "right", "top"),
            (0, 9, "center", "bottom"), (0, -9, "center", "top"), (9, 0, "left", "center"), (-9, 0, "right", "center"))
#: distance multipliers of ``_OFFSETS``; beyond the first a thin leader line joins the label to its point
_RINGS = (1.0, 2.5, 4.0, 6.0)
#: cost (in px²) of a label without a leader line that sits nearer to another point than to its own
_AMBIGUOUS = 500.0


def _overlap(a: Bbox, b: Bbox) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def _outside(box: Bbox, frame: Bbox) -> float:
    """Area of ``box`` outside ``frame``."""
    return box.width * box.height - _overlap(box, frame)


def _distance(box: Bbox, px: float, py: float) -> float:
    """Distance from the point ``(px, py)`` to ``box`` (0 inside)."""
    return math.hypot(max(box.x0 - px, 0.0, px - box.x1), max(box.y0 - py, 0.0, py - box.y1))


def place_labels(fig: Figure, ax: Any, points: Sequence[tuple[float, float, str]], fontsize: float = 8) -> list[Any]:
    """Annotate each ``(x, y, text)`` where its text overlaps no placed label, no marker and not the legend, stays
    inside the axes and sits clearly nearer to its own point than to any other (else farther out with a leader
    line); among such places the nearest, otherwise the one of least overlap. The layout is frozen first, so that the
    boxes measured here are those saved."""
    fig.canvas.draw()
    fig.set_layout_engine("none")
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    frame = ax.get_window_extent(renderer)
    pix = fig.dpi / 72.0
    centers = [tuple(ax.transData.transform((x, y))) for x, y, _ in points]
    obstacles = [Bbox.from_extents(px - 5 * pix, py - 5 * pix, px + 5 * pix, py + 5 * pix) for px, py in centers]
    if ax.get_legend() is not None:
        obstacles.append(ax.get_legend().get_window_extent(renderer))
    texts = []
    for i in sorted(range(len(points)), key=lambda k: -points[k][1]):
        x, y, text = points[i]
        best: tuple[float, Any, Bbox, float] | None = None
        # points drawn on (almost) the same spot cannot be told apart by where the label is
        others = [c for k, c in enumerate(centers) if k != i and math.dist(c, centers[i]) > 3 * pix]
        for ring in _RINGS:
            lead = dict(arrowstyle="-", color="0.45", linewidth=0.6, shrinkA=1, shrinkB=4) if ring > 1 else None
            for dx, dy, ha, va in _OFFSETS:
                ann = ax.annotate(text, (x, y), xytext=(dx * ring, dy * ring), textcoords="offset points", ha=ha,
                                  va=va, fontsize=fontsize, arrowprops=lead)
                ann.update_positions(renderer)
                box = Text.get_window_extent(ann, renderer)  # the text alone, not its leader line
                own = _distance(box, *centers[i])
                clash = sum(_overlap(box, o) for o in obstacles) + 2 * _outside(box, frame)
                if lead is None and any(_distance(box, *c) < 1.5 * own for c in others):
                    clash += _AMBIGUOUS
                cost = clash + 0.5 * own
                if best is None or cost < best[0]:
                    if best is not None:
                        best[1].remove()
                    best = (cost, ann, box, clash)
                else:
                    ann.remove()
            if best is not None and best[3] == 0:
                break
        assert best is not None
        obstacles.append(best[2])
        texts.append(best[1])
    return texts


__all__ = ["place_labels"]
