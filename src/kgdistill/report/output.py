"""The comparison table (terminal, Markdown, CSV, JSON) and the HTML report with the plots and, for each run,
links to its ``config.yaml`` and ``metrics.json``."""

from __future__ import annotations

import base64
import csv
import html
import io
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgdistill.atomicio import atomic_open, atomic_write_json, atomic_write_text
from kgdistill.report.collect import COLUMNS, collect_runs
from kgdistill.report.plots import plot_pareto, plot_training_curves
from kgdistill.tables import format_table

PLOTS = {"pareto": "mrr_vs_parameters.png", "curves": "training_curves.png"}
#: raw fields written to CSV besides the table's columns
CSV_EXTRA = ("qps_min", "qps_max", "qps_rounds", "qps_threads", "qps_source", "split", "dataset", "model_class", "dim",
             "layers", "teacher_path", "path")
#: the files of a run folder each row of the HTML report links to
LINKED_FILES = ("config.yaml", "metrics.json")


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
        stored = r.get("qps_source") == "stored"
        d["queries/s"] = None if qps is None else f"{qps:,.0f}" + (" (stored)" if stored else "")
        lo, hi = r.get("qps_min"), r.get("qps_max")
        d["q/s min–max"] = None if lo is None or hi is None else f"{_si(lo)}–{_si(hi)}"
        d["train s"] = None if secs is None else f"{float(secs):.1f}"
        out.append(d)
    return out


def _si(v: float) -> str:
    """Three significant digits: 1234567 → 1.23M, 8200000 → 8.20M, 45678 → 45.7k, 999 → 999."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            x = v / scale
            return f"{x:.{2 if abs(x) < 10 else 1 if abs(x) < 100 else 0}f}{unit}"
    return f"{v:.0f}"


def qps_note(rows: Sequence[dict[str, Any]]) -> str:
    """One sentence on how the queries/s column was obtained."""
    measured = [r for r in rows if r.get("qps_source") == "measured"]
    stored = [r for r in rows if r.get("qps_source") == "stored"]
    if measured:
        r = measured[0]
        return (f"queries/s: tail queries (batch of {r.get('qps_batch')}) scored against all entities, measured "
                f"afresh for every row in one process, {r.get('qps_threads')} CPU thread(s): the median of "
                f"{r.get('qps_rounds')} rounds over all rows, min–max of the rounds beside it.")
    if stored:
        return ("queries/s: not measured; \"(stored)\" figures are those the runs' metrics.json recorded when "
                "they were written (other machines, loads and batch sizes: not comparable with each other).")
    return "queries/s: not measured."


def table(rows: Sequence[dict[str, Any]], markdown: bool = True) -> str:
    return format_table(display_rows(rows), [h for _, h in COLUMNS], markdown=markdown)


def _write_tables(rows: Sequence[dict[str, Any]], out_dir: Path, markdown: str) -> dict[str, Path]:
    files = {"markdown": out_dir / "compare.md", "csv": out_dir / "compare.csv", "json": out_dir / "compare.json"}
    split = rows[0].get("split") if rows else None
    atomic_write_text(files["markdown"], f"# Comparison of runs ({split or '-'} split, filtered, both sides)\n\n"
                                         f"{markdown}\n\n{qps_note(rows)}\n")
    keys = [k for k, _ in COLUMNS if k != "qps_range"] + list(CSV_EXTRA)
    with atomic_open(files["csv"], "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_json(files["json"], list(rows))
    return files


def compare(runs: Iterable[str | Path] | Sequence[dict[str, Any]], out_dir: str | Path | None = None, *,
            split: str = "test", measure: bool = True, plots: bool = True) -> Comparison:
    """Collect the runs (folders, or rows of :func:`~kgdistill.report.collect.collect_runs`), build the table and,
    with ``out_dir``, write ``compare.md``, ``compare.csv``, ``compare.json`` and the two PNG plots there
    (``mrr_vs_parameters.png``, ``training_curves.png``)."""
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
            files["curves"] = out / PLOTS["curves"]
            plot_pareto(rows, files["pareto"])
            plot_training_curves(rows, files["curves"])
    return Comparison(rows, markdown, files)


def _png_data_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _anchor(run: str) -> str:
    return "run-" + "".join(c if c.isalnum() or c in "-_." else "-" for c in run)


def run_links(row: dict[str, Any], page_dir: str | Path) -> dict[str, str]:
    """Links (relative to ``page_dir``, ``/``-separated) to the files of :data:`LINKED_FILES` that the row's run
    folder holds."""
    run_dir = Path(row["path"]).resolve()
    base = Path(page_dir).resolve()
    return {name: Path(os.path.relpath(run_dir / name, base)).as_posix() for name in LINKED_FILES
            if (run_dir / name).is_file()}


def _html_table(rows: Sequence[dict[str, Any]], page_dir: str | Path) -> str:
    shown = display_rows(rows)
    headers = [h for _, h in COLUMNS]
    in_table = {r["run"] for r in rows}

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}"
        return "-" if v is None else html.escape(str(v))

    def td(row: dict[str, Any], header: str) -> str:
        v = row.get(header)
        if header == "teacher" and v in in_table:  # a jump to the teacher's row
            return f'<td><a href="#{html.escape(_anchor(str(v)))}">{html.escape(str(v))}</a></td>'
        return f"<td>{cell(v)}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in [*headers, "files"])
    body = []
    for raw, r in zip(rows, shown):
        links = " ".join(f'<a href="{html.escape(href)}">{html.escape(name)}</a>'
                         for name, href in run_links(raw, page_dir).items())
        body.append(f'<tr id="{html.escape(_anchor(raw["run"]))}">' + "".join(td(r, h) for h in headers)
                    + f'<td class="files">{links or "-"}</td></tr>\n')
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{''.join(body)}</tbody>\n</table>"


_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}
table{border-collapse:collapse;font-size:0.9em}th,td{border:1px solid #ccc;padding:0.3em 0.6em}
td{text-align:right}td:nth-child(-n+5),td.files{text-align:left}th{background:#f3f3f3}img{max-width:100%}"""


def write_html(rows: Sequence[dict[str, Any]], out_dir: str | Path, title: str = "kgdistill report") -> Path:
    """Write ``out_dir/index.html``: one page (plots embedded) with the table and the two plots, each row linking
    to its run's ``config.yaml`` and ``metrics.json`` (relative links: the page keeps working when ``out_dir`` and
    the run folders move together); the PNGs and the table files are written next to it. Returns the page's
    path."""
    out = Path(out_dir)
    result = compare(list(rows), out, plots=False)
    figs = {"pareto": plot_pareto(rows), "curves": plot_training_curves(rows)}
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
directions; teacher: the run that taught it (for IterDE's later steps the previous step); generated
{html.escape(time.strftime('%Y-%m-%d %H:%M'))}.</p>
<p>{html.escape(qps_note(rows))}</p>
<h2>Runs</h2>
{_html_table(rows, out)}
<h2>MRR vs parameters</h2>
<img id="pareto" alt="MRR against non-zero parameters, Pareto front marked, arrows from teacher to student"
src="{_png_data_uri(figs['pareto'])}">
<h2>Training loss and validation MRR per epoch</h2>
<img id="curves" alt="training loss and validation MRR per epoch, stage boundaries of chained methods"
src="{_png_data_uri(figs['curves'])}">
<p>Files: {", ".join(html.escape(p.name) for p in result.files.values())}</p>
</body></html>
"""
    path = out / "index.html"
    atomic_write_text(path, page)
    return path
