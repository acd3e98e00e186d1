"""The comparison table (terminal, Markdown, CSV, JSON) and the HTML report with the plots."""

from __future__ import annotations

import base64
import csv
import html
import io
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgdistill.atomicio import atomic_open, atomic_write_json, atomic_write_text
from kgdistill.report.collect import COLUMNS, collect_runs
from kgdistill.report.plots import plot_pareto, plot_validation_curves
from kgdistill.tables import format_table

PLOTS = {"pareto": "mrr_vs_parameters.png", "validation": "validation_mrr.png"}


@dataclass
class Comparison:
    """Result of :func:`compare`: the rows, the table as Markdown and the files written."""

    rows: list[dict[str, Any]]
    markdown: str
    files: dict[str, Path] = field(default_factory=dict)


def display_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows keyed by the table headers, numbers formatted for reading (raw values stay in CSV / JSON)."""
    out = []
    for r in rows:
        d = {header: r.get(key) for key, header in COLUMNS}
        qps, secs = r.get("queries_per_second"), r.get("train_seconds")
        d["queries/s"] = None if qps is None else f"{qps:,.0f}"
        d["train s"] = None if secs is None else f"{float(secs):.1f}"
        out.append(d)
    return out


def table(rows: Sequence[dict[str, Any]], markdown: bool = True) -> str:
    return format_table(display_rows(rows), [h for _, h in COLUMNS], markdown=markdown)


def _write_tables(rows: Sequence[dict[str, Any]], out_dir: Path, markdown: str) -> dict[str, Path]:
    files = {"markdown": out_dir / "compare.md", "csv": out_dir / "compare.csv", "json": out_dir / "compare.json"}
    split = rows[0].get("split") if rows else None
    atomic_write_text(files["markdown"], f"# Comparison of runs ({split or '-'} split, filtered, both sides)\n\n"
                                         f"{markdown}\n")
    keys = [k for k, _ in COLUMNS] + ["split", "dataset", "model_class", "dim", "layers", "path"]
    with atomic_open(files["csv"], "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_json(files["json"], list(rows))
    return files


def compare(runs: Iterable[str | Path] | Sequence[dict[str, Any]], out_dir: str | Path | None = None, *,
            split: str = "test", measure: bool = True, plots: bool = True) -> Comparison:
    """Collect the runs (folders, or rows of :func:`~kgdistill.report.collect.collect_runs`), build the table and,
    with ``out_dir``, write ``compare.md``, ``compare.csv``, ``compare.json`` and the two PNG plots there."""
    runs = list(runs)
    rows = runs if runs and all(isinstance(r, dict) for r in runs) else collect_runs(runs, split=split,
                                                                                      measure=measure)
    markdown = table(rows)
    files: dict[str, Path] = {}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = _write_tables(rows, out, markdown)
        if plots:
            files["pareto"] = out / PLOTS["pareto"]
            files["validation"] = out / PLOTS["validation"]
            plot_pareto(rows, files["pareto"])
            plot_validation_curves(rows, files["validation"])
    return Comparison(rows, markdown, files)


def _png_data_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _html_table(rows: Sequence[dict[str, Any]]) -> str:
    shown = display_rows(rows)
    headers = [h for _, h in COLUMNS]

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}"
        return "-" if v is None else html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(h))}</td>" for h in headers) + "</tr>\n" for r in shown)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}
table{border-collapse:collapse;font-size:0.9em}th,td{border:1px solid #ccc;padding:0.3em 0.6em}
td{text-align:right}td:nth-child(-n+4){text-align:left}th{background:#f3f3f3}img{max-width:100%}"""


def write_html(rows: Sequence[dict[str, Any]], out_dir: str | Path, title: str = "kgdistill report") -> Path:
    """Write ``out_dir/index.html``: one self-contained page (plots embedded) with the table and the two plots;
    the PNGs and the table files are written next to it. Returns the page's path."""
    out = Path(out_dir)
    result = compare(list(rows), out, plots=False)
    figs = {"pareto": plot_pareto(rows), "validation": plot_validation_curves(rows)}
    for key, fig in figs.items():
        result.files[key] = out / PLOTS[key]
        with atomic_open(result.files[key], "wb", encoding=None) as f:
            fig.savefig(f, format="png", dpi=120)
    split = rows[0].get("split") if rows else "-"
    datasets = ", ".join(sorted({str(r.get("dataset")) for r in rows if r.get("dataset")})) or "-"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{len(rows)} runs; dataset {html.escape(datasets)}; metrics: {html.escape(str(split))} split, filtered ranking, both
directions; queries/s: tail queries scored against all entities (batch of 128); generated
{html.escape(time.strftime('%Y-%m-%d %H:%M'))}.</p>
<h2>Runs</h2>
{_html_table(rows)}
<h2>MRR vs parameters</h2>
<img id="pareto" alt="MRR against non-zero parameters, Pareto front marked" src="{_png_data_uri(figs['pareto'])}">
<h2>Validation MRR per epoch</h2>
<img id="validation" alt="validation MRR per epoch" src="{_png_data_uri(figs['validation'])}">
<p>Files: {", ".join(html.escape(p.name) for p in result.files.values())}</p>
</body></html>
"""
    path = out / "index.html"
    atomic_write_text(path, page)
    return path
