"""One row of facts per run folder: method, model, size, quality, speed, training time, validation curve."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from kgdistill.errors import RunFolderError
from kgdistill.export import describe_model, import_model_plugins, read_run_files
from kgdistill.models.base import KGCModel, load_model

#: Columns of the comparison table: (row key, header).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("run", "run"), ("method", "method"), ("model", "model"), ("dim_layers", "dim/layers"), ("mrr", "MRR"),
    ("hits@1", "H@1"), ("hits@3", "H@3"), ("hits@10", "H@10"), ("parameters", "parameters"),
    ("parameters_nonzero", "non-zero"), ("bytes_on_disk", "bytes"), ("queries_per_second", "queries/s"),
    ("train_seconds", "train s"),
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


def _validation_curve(run_dir: Path) -> list[dict[str, float]]:
    import json

    path = run_dir / "trace.jsonl"
    if not path.exists():
        return []
    curve = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == "validation" and "mrr" in rec and "epoch" in rec:
            curve.append({"epoch": rec["epoch"], "mrr": float(rec["mrr"])})
    # a resumed run may repeat epochs: keep the last record of each
    return sorted({c["epoch"]: c for c in curve}.values(), key=lambda c: c["epoch"])


def collect_run(run_dir: str | Path, *, split: str = "test", measure: bool = True) -> dict[str, Any]:
    """Facts of one run folder (keys of :data:`COLUMNS` plus ``path``, ``split``, ``validation`` …).

    Metrics are the run's own ``metrics.json`` (``split``, falling back to test / valid); ``queries_per_second``,
    ``num_nonzero`` and ``bytes_on_disk`` are read from it when present (distillation runs record them), else
    measured / counted (``measure=False``: queries/s left empty).
    """
    run_dir = Path(run_dir)
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
    qps = metrics.get("queries_per_second")
    if qps is None and measure:
        qps = measure_qps(model, model.num_entities, model.num_relations)
    return {
        "run": run_dir.name, "path": str(run_dir), "method": files["method"],
        "model": described["model"], "model_class": kind, "dim": dim, "layers": layers,
        "dim_layers": dim if layers is None else (f"{dim}/{layers}L" if dim is not None else f"{layers}L"),
        "split": used_split, "mrr": m.get("mrr"), "hits@1": m.get("hits@1"), "hits@3": m.get("hits@3"),
        "hits@10": m.get("hits@10"),
        "parameters": int(metrics.get("num_parameters", model.num_parameters())),
        "parameters_nonzero": int(metrics.get("num_nonzero", model.num_parameters(nonzero=True))),
        "bytes_on_disk": int(metrics.get("bytes_on_disk", _model_files_bytes(run_dir))),
        "queries_per_second": None if qps is None else float(qps),
        "train_seconds": metrics.get("train_seconds", meta.get("train_seconds")),
        "dataset": (files["config"].get("data") or {}).get("dataset"),
        "validation": _validation_curve(run_dir),
    }


def collect_runs(dirs: Iterable[str | Path], *, split: str = "test", measure: bool = True) -> list[dict[str, Any]]:
    """:func:`collect_run` for every folder; runs with the same folder name are told apart by their parent."""
    rows = [collect_run(d, split=split, measure=measure) for d in dirs]
    names = [r["run"] for r in rows]
    for r in rows:
        if names.count(r["run"]) > 1:
            r["run"] = f"{Path(r['path']).parent.name}/{r['run']}"
    return rows
