"""The leaderboard of a :func:`~kgdistill.distill.benchmark.benchmark`: per method the mean ± sd over seeds of the
final students' summary rows (:func:`~kgdistill.distill.stage.summary_row`), paired differences of test MRR to
scratch and to KD, the budget each method spent, the teacher's row; written as Markdown, CSV, JSON and a Pareto
plot (test MRR against non-zero parameters)."""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgdistill.tables import format_table

#: summary-row keys aggregated over seeds (``train s``: summed over a run's stages)
METRICS = ("MRR", "H@1", "H@3", "H@10", "params", "nonzero", "bytes", "queries/s", "train s")
#: the references of the paired differences
REFERENCES = ("scratch", "kd")
FILES = {"markdown": "leaderboard.md", "csv": "leaderboard.csv", "json": "leaderboard.json",
         "plot": "leaderboard_pareto.png"}


def mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n − 1; None for one value); ``(None, None)`` for none."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None


def paired_difference(a: dict[int, float], b: dict[int, float]) -> dict[str, Any] | None:
    """``a − b`` over the seeds both have: mean, standard error (sd / √n; None for one seed), the seeds where
    ``a > b`` and the per-seed differences."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    n = len(diffs)
    se = statistics.stdev(diffs) / math.sqrt(n) if n > 1 else None
    return {"mean": statistics.fmean(diffs), "se": se, "ahead": sum(d > 0 for d in diffs), "n": n,
            "seeds": seeds, "diffs": diffs}


#: columns shown as whole numbers (the others with 4 decimals)
COUNTS = ("params", "nonzero", "bytes", "queries/s")


def _pm(mean: float | None, sd: float | None, key: str = "") -> str:
    """``mean ± sd`` for a table cell (``sd`` None: the mean alone; 0 for a count: the count alone)."""
    if mean is None:
        return "-"
    if key in COUNTS:
        return f"{mean:,.0f}" + ("" if not sd else f" ± {sd:,.0f}")
    return f"{mean:.4f}" + ("" if sd is None else f" ± {sd:.4f}")


def _diff_text(d: dict[str, Any] | None) -> str:
    if d is None:
        return "-"
    se = "" if d["se"] is None else f" ± {d['se']:.4f}"
    return f"{d['mean']:+.4f}{se} ({d['ahead']}/{d['n']})"


@dataclass
class Leaderboard:
    """A benchmark's results: ``rows`` (one per method and dim, aggregated over seeds), the per-seed ``runs``, the
    teacher's row, the settings and plans, notes, and the files written."""

    settings: dict[str, Any]
    plans: list[dict[str, Any]]
    teacher: dict[str, Any]
    runs: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def row(self, label: str) -> dict[str, Any]:
        return next(r for r in self.rows if r["method"] == label)

    def markdown(self) -> str:
        s = self.settings
        dims = ", ".join(map(str, s["dims"]))
        n = len(s["methods"])
        head = (f"# Benchmark: {n} method{'s' * (n != 1)} from {s['teacher']}\n\nStudent dim {dims}, {s['seeds']} "
                f"seed{'s' * (s['seeds'] != 1)}, budget `{s['budget']}` (E = {s['epochs']} epochs: "
                + ("every stage E" if s["budget"] == "final" else "the stages of a method share E, ⌊E/k⌋ each; "
                   "DualDE ⌈E/2⌉ + ⌊E/2⌋") + "). Test split, filtered, both directions; mean ± sd over seeds.\n")
        main = [{"method": "teacher", "dim": self.teacher.get("dim"), "seeds": "-",
                 **{k: _pm(self.teacher.get(k), None, k) for k in METRICS}, "stages × epochs": "-",
                 "epochs done": "-", "epochs × triples": "-"}]
        for r in self.rows:
            main.append({"method": r["method"], "dim": r["dim"], "seeds": r["seeds"],
                         **{k: _pm(r[f"{k} mean"], r[f"{k} sd"], k) for k in METRICS},
                         "stages × epochs": r["stage_epochs"], "epochs done": f"{r['student_epochs mean']:g}",
                         "epochs × triples": f"{r['epoch_examples mean']:,.0f}"})
        paired = [{"method": r["method"], **{f"Δ MRR vs {ref} (ahead)": _diff_text(r.get(f"vs {ref}"))
                                             for ref in REFERENCES}} for r in self.rows]
        parts = [head, format_table(main, list(main[0])),
                 "\n## Paired differences of test MRR\n\nmean ± standard error over the seeds both ran; in brackets "
                 "the seeds where the method is ahead of the reference.\n", format_table(paired, list(paired[0]))]
        if self.notes:
            parts.append("\n## Notes\n\n" + "\n".join(f"- {n}" for n in self.notes))
        if "plot" in self.files:
            parts.append(f"\n![test MRR vs non-zero parameters]({self.files['plot'].name})")
        if self.environment:
            parts.append("\n" + "; ".join(f"{k}: {v}" for k, v in self.environment.items() if v is not None) + ".")
        return "\n".join(parts) + "\n"

    def write(self, out: str | Path) -> dict[str, Path]:
        """Write ``leaderboard.md``, ``.csv``, ``.json`` and ``leaderboard_pareto.png`` (with matplotlib) in ``out``."""
        out = Path(out)
        self.files = {k: out / v for k, v in FILES.items()}
        try:
            from kgdistill.distill.leaderboard_plot import plot_leaderboard

            plot_leaderboard(self.teacher, self.rows, self.files["plot"])
        except ModuleNotFoundError as err:
            del self.files["plot"]
            self.notes.append(f"no Pareto plot: {err.name} is not installed (pip install 'kgdistill[report]')")
        self.files["markdown"].write_text(self.markdown(), encoding="utf-8")
        flat = [{"method": "teacher", "dim": self.teacher.get("dim"), "seeds": 0,
                 **{f"{k} mean": self.teacher.get(k) for k in METRICS}}]
        for r in self.rows:
            f = {k: v for k, v in r.items() if not k.startswith("vs ")}
            for ref in REFERENCES:
                d = r.get(f"vs {ref}") or {}
                f.update({f"dMRR vs {ref} mean": d.get("mean"), f"dMRR vs {ref} se": d.get("se"),
                          f"dMRR vs {ref} ahead": d.get("ahead"), f"dMRR vs {ref} n": d.get("n")})
            flat.append(f)
        keys = ["method", "dim", "seeds", *(f"{k} {s}" for k in METRICS for s in ("mean", "sd")), "stages",
                "stage_epochs", "student_epochs mean", "epoch_examples mean",
                *(f"dMRR vs {ref} {s}" for ref in REFERENCES for s in ("mean", "se", "ahead", "n"))]
        keys += [k for k in dict.fromkeys(k for r in flat for k in r) if k not in keys]
        with open(self.files["csv"], "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(flat)
        self.files["json"].write_text(json.dumps(
            {"settings": self.settings, "plans": self.plans, "teacher": self.teacher, "rows": self.rows,
             "runs": self.runs, "notes": self.notes, "environment": self.environment}, indent=2), encoding="utf-8")
        return self.files


def _budget_notes(rows: list[dict[str, Any]]) -> list[str]:
    """Pruned rows that are not smaller or not faster than the dense scratch row of their dim, said plainly."""
    notes = []
    for r in rows:
        if r["method"].startswith("scratch") or not r["nonzero mean"] or r["nonzero mean"] >= r["params mean"]:
            continue
        dense = next((d for d in rows if d["dim"] == r["dim"] and d["method"].startswith("scratch")), None)
        if dense is None:
            continue
        if r["bytes mean"] >= dense["bytes mean"]:
            notes.append(f"{r['method']}: its pruned artifact is not smaller on disk than the dense {r['dim']}-dim "
                         f"model ({r['bytes mean']:,.0f} vs {dense['bytes mean']:,.0f} bytes)")
        if (r["queries/s mean"] or 0) <= (dense["queries/s mean"] or 0):
            notes.append(f"{r['method']}: it scores no faster than the dense {r['dim']}-dim model "
                         f"({r['queries/s mean']:,.0f} vs {dense['queries/s mean']:,.0f} queries/s)")
    return notes


def _setting(value: Any) -> str:
    """A setting as a reader writes it: floats to 6 significant digits (``0.1 * 0.1`` shows as 0.01)."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _same_setting(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9)
    return bool(a == b)


def _recipe_notes(records: list[dict[str, Any]]) -> list[str]:
    """The students' recipe (the final stage's training settings, from the scratch runs where there are some), and
    every method whose final stage trained otherwise: so that a reader sees what scratch was given."""
    with_recipe = [r for r in records if r.get("recipe")]
    if not with_recipe:
        return []
    first = next((r for r in with_recipe if r["method"] == "scratch"), with_recipe[0])
    base = first["recipe"]
    text = ", ".join(f"{k} {_setting(v)}" for k, v in base.items() if v is not None)
    notes = [f"students' recipe (the final stage of {first['label']}): {text}; a scratch row far below the teacher "
             f"may be a recipe that under-trains the student's size (check its lr and batch first)"]
    for label in dict.fromkeys(r["label"] for r in with_recipe):
        recipe = next(r["recipe"] for r in with_recipe if r["label"] == label)
        differ = {k: v for k, v in recipe.items() if not _same_setting(base.get(k), v)}
        if differ:
            notes.append(f"{label}: its final stage trained with "
                         + ", ".join(f"{k} {_setting(v)}" for k, v in differ.items()))
    return notes


def build_leaderboard(settings: dict[str, Any], plans: list[dict[str, Any]], records: list[dict[str, Any]],
                      teacher: dict[str, Any], notes: list[str] | None = None,
                      environment: dict[str, Any] | None = None) -> Leaderboard:
    """Aggregate the per-seed ``records`` (of :func:`~kgdistill.distill.benchmark.read_record`) per plan."""
    rows, row_plans = [], []
    for plan in plans:
        mine = [r for r in records if r["label"] == plan["label"]]
        if not mine:
            continue
        row: dict[str, Any] = {"method": plan["label"], "dim": plan["dim"], "seeds": len(mine),
                               "stages": len(plan["stage_epochs"]),
                               "stage_epochs": " + ".join(map(str, plan["stage_epochs"]))}
        for key in METRICS:
            row[f"{key} mean"], row[f"{key} sd"] = mean_sd([r["row"].get(key) for r in mine])
        for key in ("student_epochs", "epoch_examples"):
            row[f"{key} mean"] = statistics.fmean(r[key] for r in mine)
        rows.append(row)
        row_plans.append(plan)
    for row, plan in zip(rows, row_plans):
        mrr = {r["seed"]: r["row"]["MRR"] for r in records if r["label"] == plan["label"]}
        for ref in REFERENCES:
            ref_plan = next((p for p in plans if p["method"] == ref and p["dim"] == plan["dim"]), None)
            if ref_plan is None or ref_plan["label"] == plan["label"]:
                continue
            ref_mrr = {r["seed"]: r["row"]["MRR"] for r in records if r["label"] == ref_plan["label"]}
            row[f"vs {ref}"] = paired_difference(mrr, ref_mrr)
    return Leaderboard(settings, plans, teacher, records, rows,
                       [*(notes or []), *_recipe_notes(records), *_budget_notes(rows)],
                       dict(environment or {}))


__all__ = ["Leaderboard", "build_leaderboard", "paired_difference", "mean_sd", "METRICS", "FILES"]
