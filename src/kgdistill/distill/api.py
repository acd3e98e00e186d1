"""``distill(method, teacher_dir, out, **options)``: run a method, write its run folders and a summary table."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kgdistill.atomicio import atomic_write_json, atomic_write_text
from kgdistill.config import config_kind
from kgdistill.errors import ConfigError, KGDistillError
from kgdistill.distill.method import make_config, methods, model_family
from kgdistill.distill.stage import SUMMARY_COLUMNS, StageResult
from kgdistill.distributed import DistContext, barrier, broadcast_object, init_distributed
from kgdistill.runs import load_run
from kgdistill.tables import format_table


@dataclass
class DistillReport:
    """Results of one ``distill`` call: the stages, the summary rows (teacher first) and the output folder."""

    method: str
    out: Path
    config: Any
    results: list[StageResult]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def table(self) -> str:
        columns = list(SUMMARY_COLUMNS)
        if any("chain train s" in r for r in self.rows):
            columns.append("chain train s")
        return format_table(self.rows, columns)


def check_teacher_kind(method: str, family: str, teacher_dir: str | Path) -> None:
    """One line when ``method`` (of the ``family`` model kind) cannot distil the run in ``teacher_dir`` (a text method
    on an embedding teacher or the other way round); a folder whose config cannot be read is left to ``load_run``."""
    from kgdistill.runs import read_run_config

    try:
        config = read_run_config(teacher_dir, kind=None)
    except (KGDistillError, OSError):  # load_run reports a missing or broken run folder in its own words
        return
    model = "biencoder" if config_kind(config) == "text" else config.model.model
    kind = model_family(model)
    if kind != family:
        same = [n for n in methods.names() if methods.get(n).family == kind]
        article = "an" if kind == "embedding" else "a"
        raise ConfigError(f"method {method!r} distils {family} models, but {teacher_dir} is {article} {kind} run "
                          f"(model {model!r}); methods for it: {', '.join(same)}")


def distill(method: str, teacher_dir: str | Path, out: str | Path, *, device: str = "cpu", progress: bool = False,
            num_threads: int | None = None, with_teacher_row: bool = True, ctx: DistContext | None = None,
            resume: bool = False, **options: Any) -> DistillReport:
    """Distil the teacher run in ``teacher_dir`` with ``method`` (options: the method's config fields).

    Every stage writes a run folder under ``out``; ``out/summary.json`` and ``out/summary.md`` hold the table.
    Under ``torchrun`` (or with a multi-process ``ctx``; default :func:`~kgdistill.distributed.init_distributed`)
    every stage trains data-parallel, evaluation is sharded and only rank 0 writes; every rank returns the same
    report. ``resume``: continue an interrupted call with the same method and options (finished stages are
    reloaded, the interrupted one continues from its checkpoint, the rest are trained).
    """
    ctx = ctx or init_distributed(device)
    device = ctx.device
    if num_threads:
        torch.set_num_threads(num_threads)
    config = make_config(method, options)
    name = methods.canonical(method)
    impl = methods.get(name)()
    check_teacher_kind(name, impl.family, teacher_dir)
    teacher = load_run(teacher_dir, device=device)
    out = Path(out)
    created = not out.exists()
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    barrier(ctx)
    start = time.perf_counter()
    try:
        results = impl.run(teacher, config, out, device=device, progress=progress and ctx.is_main, ctx=ctx,
                           resume=resume)
    except ConfigError:
        if created and ctx.is_main and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a refused option leaves no empty folder behind
        raise
    rows = broadcast_object([impl.teacher_row(teacher)] if with_teacher_row and ctx.is_main else [], ctx)
    rows += [r.row for r in results]
    report = DistillReport(name, out, config, results, rows)
    if ctx.is_main:
        summary = {"method": name, "teacher": str(teacher_dir), "seconds": round(time.perf_counter() - start, 3),
                   "processes": ctx.world_size, "rows": rows, "run_folders": [str(r.path) for r in results]}
        atomic_write_json(out / "summary.json", summary)
        atomic_write_text(out / "summary.md", report.table() + "\n")
    barrier(ctx)
    return report
