"""One row of facts per run folder: method, teacher, model, size, quality, speed, training time, training curves.

Queries/s are measured afresh for every row of one table, in this process, round after round over all the rows
(the median of the rounds, with their minimum and maximum); a timing stored in a run's ``metrics.json`` (taken
elsewhere, under other load) is only shown when measuring is switched off, marked ``stored``."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from kgdistill.errors import ConfigError, RunFolderError
from kgdistill.artifact import describe_model, import_model_plugins
from kgdistill.export import read_run_files
from kgdistill.models.base import KGCModel, load_model
from kgdistill.report.lineage import (chain_stages, distill_record, read_trace, resolve_teacher, stage_teacher,
                                      training_curves)

#: Columns of the comparison table: (row key, header).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("run", "run"), ("method", "method"), ("teacher", "teacher"), ("model", "model"), ("dim_layers", "dim/layers"),
    ("mrr", "MRR"), ("hits@1", "H@1"), ("hits@3", "H@3"), ("hits@10", "H@10"), ("parameters", "parameters"),
    ("parameters_nonzero", "non-zero"), ("bytes_on_disk", "bytes"), ("queries_per_second", "queries/s"),
    ("qps_range", "q/s min–max"), ("train_seconds", "train s"),
)


def measure_qps(model: KGCModel, num_entities: int, num_relations: int, batch_size: int = 128,
                min_seconds: float = 0.25, max_repeats: int = 50, seed: int = 0) -> float:
    """Tail queries ``(h, r, ?)`` scored against all entities per second, on a fixed random batch of
    ``batch_size`` queries (seeded), repeated until ``min_seconds`` have passed (at most ``max_repeats`` times)."""
    g = torch.Generator().manual_seed(seed)
    device = model.device
    h = torch.randint(num_entities, (batch_size,), generator=g).to(device)
    r = torch.randint(num_relations, (batch_size,), generator=g).to(device)
    model.eval()
    with torch.inference_mode():
        model.score_t(h, r)  # warm-up
        repeats, start = 0, time.perf_counter()
        while repeats < max_repeats and (repeats == 0 or time.perf_counter() - start < min_seconds):
            model.score_t(h, r)
            repeats += 1
        elapsed = time.perf_counter() - start
    return batch_size * repeats / elapsed


def _model_files_bytes(run_dir: Path) -> int:
    """Bytes of the files holding the model: ``model.json`` + ``model.sparse.safetensors`` where a pruned run
    stored its weights sparse, else ``model.safetensors``."""
    sparse = run_dir / "model.sparse.safetensors"
    weights = sparse if sparse.exists() else run_dir / "model.safetensors"
    return sum(p.stat().st_size for p in (weights, run_dir / "model.json") if p.exists())


def _split_metrics(metrics: dict[str, Any], split: str) -> tuple[str | None, dict[str, Any]]:
    for s in (split, "test", "valid"):
        both = (metrics.get(s) or {}).get("both") if isinstance(metrics.get(s), dict) else None
        if both:
            return s, both
    return None, {}


def measure_throughput(models: Sequence[KGCModel], *, rounds: int = 5, round_seconds: float = 0.2,
                       batch_size: int = 128) -> list[dict[str, Any]]:
    """Queries/s of every model, measured here and now: ``rounds`` rounds, each timing every model in turn for
    ``round_seconds`` (:func:`measure_qps`), so that a change of load on the machine reaches all models alike.
    Per model: ``queries_per_second`` (the median of the rounds), ``qps_min``, ``qps_max``, ``qps_samples`` (every
    round), ``qps_rounds``, ``qps_threads`` (torch CPU threads), ``qps_batch`` and ``qps_source="measured"``."""
    if rounds < 1 or round_seconds <= 0:
        raise ConfigError(f"queries/s: rounds must be at least 1 and round_seconds positive, got {rounds} and "
                          f"{round_seconds}")
    samples: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for i, model in enumerate(models):
            samples[i].append(measure_qps(model, model.num_entities, model.num_relations, batch_size=batch_size,
                                          min_seconds=round_seconds, max_repeats=1_000_000))
    threads = torch.get_num_threads()
    return [{"queries_per_second": float(statistics.median(s)), "qps_min": min(s), "qps_max": max(s),
             "qps_samples": s, "qps_rounds": rounds, "qps_threads": threads, "qps_batch": batch_size,
             "qps_source": "measured"} for s in samples]


def _stored_throughput(metrics: dict[str, Any]) -> dict[str, Any]:
    """The queries/s a run's ``metrics.json`` holds (timed when it was written, elsewhere), marked ``stored``."""
    qps = metrics.get("queries_per_second")
    return {"queries_per_second": None if qps is None else float(qps), "qps_min": None, "qps_max": None,
            "qps_samples": [], "qps_rounds": None, "qps_threads": None, "qps_batch": None,
            "qps_source": None if qps is None else "stored"}


def _collect(run_dir: Path, split: str) -> tuple[dict[str, Any], KGCModel]:
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: not a run folder")
    files = read_run_files(run_dir)
    import_model_plugins(str(files["model"].get("class", "")) or None)
    model = load_model(run_dir)
    cfg = model.config()
    metrics, meta = files["metrics"], files["meta"]
    used_split, m = _split_metrics(metrics, split)
    kind = str(files["model"].get("class", type(model).__name__))
    described = describe_model(kind, cfg)
    dim, layers = described["dim"], described["layers"]
    record = distill_record(run_dir)
    teacher = stage_teacher(run_dir)
    if teacher is None and resolve_teacher(run_dir, record) is None and record.get("teacher"):
        teacher_name: str | None = Path(str(record["teacher"])).name  # recorded, but not found any more
    else:
        teacher_name = None if teacher is None else teacher.name
    row = {
        "run": run_dir.name, "path": str(run_dir), "method": files["method"], "teacher": teacher_name,
        "teacher_path": None if teacher is None else str(teacher),
        "model": described["model"], "model_class": kind, "dim": dim, "layers": layers,
        "dim_layers": dim if layers is None else (f"{dim}/{layers}L" if dim is not None else f"{layers}L"),
        "split": used_split, "mrr": m.get("mrr"), "hits@1": m.get("hits@1"), "hits@3": m.get("hits@3"),
        "hits@10": m.get("hits@10"),
        "parameters": int(metrics.get("num_parameters", model.num_parameters())),
        "parameters_nonzero": int(metrics.get("num_nonzero", model.num_parameters(nonzero=True))),
        "bytes_on_disk": int(metrics.get("bytes_on_disk", _model_files_bytes(run_dir))),
        **_stored_throughput(metrics),
        "train_seconds": metrics.get("train_seconds", meta.get("train_seconds")),
        "dataset": (files["config"].get("data") or {}).get("dataset"),
        "validation": read_trace(run_dir)["validation"],
        "curves": training_curves(chain_stages(run_dir)),
    }
    return row, model


def collect_run(run_dir: str | Path, *, split: str = "test", measure: bool = True, rounds: int = 5,
                round_seconds: float = 0.2) -> dict[str, Any]:
    """Facts of one run folder (keys of :data:`COLUMNS` plus ``path``, ``split``, ``teacher_path``, ``validation``,
    ``curves``, the ``qps_*`` fields …).

    Metrics are the run's own ``metrics.json`` (``split``, falling back to test / valid); ``num_nonzero`` and
    ``bytes_on_disk`` are read from it when present (distillation runs record them), else counted. Queries/s:
    measured (:func:`measure_throughput`); ``measure=False``: the stored figure, if any, with ``qps_source="stored"``.
    ``teacher``: the run that taught this one (for IterDE's later steps the previous step), ``curves``: loss and
    validation MRR per epoch through every stage of its chain (:func:`~kgdistill.report.lineage.training_curves`).
    """
    return collect_runs([run_dir], split=split, measure=measure, rounds=rounds, round_seconds=round_seconds)[0]


def collect_runs(dirs: Iterable[str | Path], *, split: str = "test", measure: bool = True, rounds: int = 5,
                 round_seconds: float = 0.2) -> list[dict[str, Any]]:
    """:func:`collect_run` for every folder, queries/s measured for all of them together (``rounds`` rounds over
    every model, never a stored figure; ``measure=False``: stored figures only, marked). Runs with the same folder
    name are told apart by their parent; ``teacher`` names the teacher's row where it is one of the runs."""
    rows, models = [], []
    for d in dirs:
        row, model = _collect(Path(d), split)
        rows.append(row)
        if measure:
            models.append(model)
        del model
    if measure:
        for row, measured in zip(rows, measure_throughput(models, rounds=rounds, round_seconds=round_seconds)):
            row.update(measured)
        models.clear()
    names = [r["run"] for r in rows]
    for r in rows:
        if names.count(r["run"]) > 1:
            r["run"] = f"{Path(r['path']).parent.name}/{r['run']}"
    by_path = {str(Path(r["path"]).resolve()): r["run"] for r in rows}
    for r in rows:
        if r["teacher_path"] in by_path:
            r["teacher"] = by_path[r["teacher_path"]]
    return rows
