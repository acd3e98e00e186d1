"""Who taught whom, and the training curves of a run across the stages of its chain.

A distilled run records its teacher in ``distill.yaml`` (embedding methods: ``teacher`` as it was given on the
command line, and ``teacher_path``, absolute, in folders written since) or in ``config.yaml`` under ``distill``
(text methods). A relative ``teacher`` was relative to the directory the command ran in, which is not recorded:
it is looked for next to the run folder and in each folder above it.

Chained methods write one run folder per stage, side by side. IterDE (and IterDE + MetaSD) trains a fresh student
per step from the previous step's student; DualDE's second stage continues the first stage's student (the teacher
stays the teacher); PMD records the previous stage as the teacher. :func:`chain_stages` finds the stages before a
run, in order: the parent folder's ``summary.json`` gives the order where it lists the run, else the stages' start
times. :func:`training_curves` joins the stages' ``trace.jsonl`` (epoch loss, validation MRR) on one epoch axis.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

#: methods whose stages are folders side by side under one output folder; the value says who taught a later stage:
#: ``previous`` (the previous stage's student) or ``teacher`` (the recorded teacher; the student is continued)
CHAINED_METHODS: dict[str, str] = {"iterde": "previous", "iterde-metasd": "previous", "dualde": "teacher"}


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None


def distill_record(run_dir: str | Path) -> dict[str, Any]:
    """``method``, ``stage``, ``teacher`` (as recorded) and ``teacher_path`` of a distilled run folder, from its
    ``distill.yaml`` or its config's ``distill`` section; ``{}`` for a trained run."""
    run_dir = Path(run_dir)
    step = _read_yaml(run_dir / "distill.yaml")
    if not step:
        section = _read_yaml(run_dir / "config.yaml").get("distill")
        step = section if isinstance(section, dict) else {}
    if not step.get("teacher") and not step.get("teacher_path"):
        return {}
    return {k: step.get(k) for k in ("method", "stage", "teacher", "teacher_path")}


def _is_run(path: Path) -> bool:
    return (path / "model.json").is_file() or (path / "config.yaml").is_file()


def resolve_teacher(run_dir: str | Path, record: dict[str, Any] | None = None) -> Path | None:
    """The teacher's run folder (absolute) of a distilled run, or ``None`` (a trained run, or a teacher that is no
    longer found): ``teacher_path`` where recorded, else ``teacher`` as an absolute path, next to the run folder,
    in a folder above it, or in the current directory."""
    run_dir = Path(run_dir).resolve()
    record = distill_record(run_dir) if record is None else record
    for key in ("teacher_path", "teacher"):
        value = record.get(key)
        if not value:
            continue
        given = Path(str(value))
        candidates = [given] if given.is_absolute() else [*(a / given for a in run_dir.parents), Path.cwd() / given]
        for c in candidates:
            if c.is_dir() and _is_run(c) and c.resolve() != run_dir:
                return c.resolve()
    return None


def _siblings_in_order(run_dir: Path, method: str, teacher: Path | None) -> list[Path]:
    """Stage folders next to ``run_dir`` written by ``method`` from the same teacher, in the order they ran."""
    parent = run_dir.parent
    stages = []
    for d in sorted(p for p in parent.iterdir() if p.is_dir()):
        rec = distill_record(d)
        if rec.get("method") == method and (d == run_dir or resolve_teacher(d, rec) == teacher):
            stages.append(d)
    summary = _read_json(parent / "summary.json")
    order = [str(r.get("row")) for r in summary.get("rows", []) if isinstance(r, dict)] \
        if isinstance(summary, dict) else []
    if run_dir.name in order:
        return [parent / name for name in order if parent / name in stages]

    def started(d: Path) -> str:
        meta = _read_json(d / "meta.json")
        return str(meta.get("started", "")) if isinstance(meta, dict) else ""

    return sorted(stages, key=lambda d: (started(d), d.name))


def chain_stages(run_dir: str | Path) -> list[Path]:
    """The stage folders of the chain that ends with ``run_dir`` (absolute, oldest first, ``run_dir`` last);
    ``[run_dir]`` for a run that is not a later stage of a chain."""
    run_dir = Path(run_dir).resolve()
    stages = [run_dir]
    seen = {run_dir}
    while True:  # PMD: the recorded teacher is the previous stage, a sibling of the same method
        current = stages[0]
        rec = distill_record(current)
        teacher = resolve_teacher(current, rec)
        if (teacher is None or teacher in seen or teacher.parent != current.parent
                or distill_record(teacher).get("method") != rec.get("method")):
            break
        stages.insert(0, teacher)
        seen.add(teacher)
    if len(stages) > 1:
        return stages
    rec = distill_record(run_dir)
    if rec.get("method") not in CHAINED_METHODS:
        return stages
    order = _siblings_in_order(run_dir, str(rec["method"]), resolve_teacher(run_dir, rec))
    return order[:order.index(run_dir) + 1] if run_dir in order else stages


def stage_teacher(run_dir: str | Path) -> Path | None:
    """The run that taught ``run_dir``: the previous stage for IterDE's later steps, else the recorded teacher."""
    run_dir = Path(run_dir).resolve()
    rec = distill_record(run_dir)
    if CHAINED_METHODS.get(str(rec.get("method"))) == "previous":
        stages = chain_stages(run_dir)
        if len(stages) > 1:
            return stages[-2]
    return resolve_teacher(run_dir, rec)


def read_trace(run_dir: str | Path) -> dict[str, list[dict[str, float]]]:
    """``loss`` (``epoch`` events) and ``validation`` (MRR of ``validation`` events) per epoch of one run folder's
    ``trace.jsonl``; a resumed run may repeat epochs, the last record of each is kept."""
    path = Path(run_dir) / "trace.jsonl"
    loss: dict[int, float] = {}
    mrr: dict[int, float] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line) if line.strip() else None
            except ValueError:
                continue
            if not isinstance(rec, dict) or "epoch" not in rec:
                continue
            if rec.get("event") == "epoch" and rec.get("loss") is not None:
                loss[int(rec["epoch"])] = float(rec["loss"])
            elif rec.get("event") == "validation" and rec.get("mrr") is not None:
                mrr[int(rec["epoch"])] = float(rec["mrr"])
    return {"loss": [{"epoch": e, "loss": loss[e]} for e in sorted(loss)],
            "validation": [{"epoch": e, "mrr": mrr[e]} for e in sorted(mrr)]}


def _epochs_of(run_dir: Path, trace: dict[str, list[dict[str, float]]]) -> int:
    meta = _read_json(run_dir / "meta.json")
    done = meta.get("epochs_done") if isinstance(meta, dict) else None
    seen = [int(r["epoch"]) for part in trace.values() for r in part]
    return max(seen + ([done] if isinstance(done, int) else []), default=0)


def training_curves(stages: Sequence[str | Path]) -> dict[str, list[dict[str, Any]]]:
    """Loss and validation MRR of ``stages`` (a chain, oldest first) on one epoch axis: stage ``k``'s epochs follow
    the epochs of the stages before it. ``stages``: each stage's ``name``, ``path``, ``first_epoch`` and
    ``last_epoch`` on that axis (a boundary lies between one stage's last epoch and the next one's first)."""
    loss: list[dict[str, Any]] = []
    validation: list[dict[str, Any]] = []
    spans: list[dict[str, Any]] = []
    offset = 0
    for stage in stages:
        stage = Path(stage)
        trace = read_trace(stage)
        loss += [{"epoch": offset + r["epoch"], "loss": r["loss"]} for r in trace["loss"]]
        validation += [{"epoch": offset + r["epoch"], "mrr": r["mrr"]} for r in trace["validation"]]
        epochs = _epochs_of(stage, trace)
        spans.append({"name": stage.name, "path": str(stage), "first_epoch": offset + 1, "last_epoch": offset + epochs})
        offset += epochs
    return {"loss": loss, "validation": validation, "stages": spans}


def lineage_pairs(rows: Sequence[dict[str, Any]]) -> list[tuple[int, int]]:
    """``(student, teacher)`` row indices for every row whose teacher (``teacher_path``) is also a row."""
    index = {str(Path(r["path"]).resolve()): i for i, r in enumerate(rows) if r.get("path")}
    pairs = []
    for i, r in enumerate(rows):
        t = r.get("teacher_path")
        if t and str(Path(t).resolve()) in index and index[str(Path(t).resolve())] != i:
            pairs.append((i, index[str(Path(t).resolve())]))
    return pairs


__all__ = ["CHAINED_METHODS", "chain_stages", "distill_record", "lineage_pairs", "read_trace", "resolve_teacher",
           "stage_teacher", "training_curves"]
