"""``benchmark(teacher_dir, out, methods, dims, seeds, budget, epochs)``: every method from one teacher at an equal
budget, several seeds, one leaderboard (``kgdistill benchmark`` on the command line).

Each (method, dim, seed) is one :func:`~kgdistill.distill.api.distill` call into ``out/<method>/seed-<s>/`` (with
several ``dims``: ``out/<method>-<dim>/seed-<s>/``) with ``seed=s``. Methods are resolved through the registry
(:data:`~kgdistill.distill.method.methods`), so any registered method takes part; how many stages it trains is read
from its config class:

- a ``target_dim`` field (IterDE): a halving chain from the teacher's dim down to the student dim, one stage a step;
- a ``sparsity`` field (MetaSD): one stage pruning the teacher-shaped model to the non-zeros of the dense student
  (``sparsity = 1 − params(dense-dim) / params(teacher shape)``) unless ``metasd_sparsity`` is given; with a
  ``target_dim`` too (IterDE → MetaSD) the chain stops at twice the student dim and the last step prunes it;
- a ``stage2`` field (DualDE): two stages (one with ``stage2=false``);
- otherwise one stage at the student dim (scratch, KD, KD-Huber, ...).

Budgets (``epochs`` = E, default the teacher's epochs): ``final``: every stage trains E epochs (the final student
gets E, as in the papers); ``total``: the stages share E student epochs: a k-stage chain gives each stage ⌊E/k⌋
(rounded down, so the total never exceeds E; E must be ≥ k), DualDE's two stages get ⌈E/2⌉ and ⌊E/2⌋ (exactly E).
The leaderboard records what each stage was set to and trained (epochs, epochs × training triples).

``out/benchmark.json`` holds the resolved settings; ``resume=True`` continues an interrupted benchmark in ``out``
(finished runs — those with a ``summary.json`` — are read back, an interrupted one continues through the distill
API's ``resume``); a folder holding another benchmark, or other files, is refused.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from kgdistill.distill.api import distill
from kgdistill.distill.leaderboard import Leaderboard, build_leaderboard
from kgdistill.distill.method import make_config, methods, teacher_model, teacher_row, teacher_test_metrics
from kgdistill.distill.stage import make_student
from kgdistill.errors import ConfigError, RunFolderError
from kgdistill.models.base import MODEL_WEIGHTS
from kgdistill.registry import UnknownNameError
from kgdistill.runs import Run, load_run

BUDGETS = ("final", "total")
DEFAULT_METHODS = ("scratch", "kd", "kd-huber", "iterde", "dualde", "metasd")
#: options the benchmark sets itself (from the budget, the dims and the seeds)
CONTROLLED = ("dims", "epochs", "seed", "stage2_epochs", "target_dim")
SETTINGS_FILE = "benchmark.json"


@dataclass(frozen=True)
class MethodPlan:
    """How one method runs at one student dim: its distill options, stages and epochs per stage."""

    method: str
    label: str
    dim: int
    stage_epochs: list[int]
    options: dict[str, Any]
    note: str = ""

    @property
    def stages(self) -> int:
        return len(self.stage_epochs)

    @property
    def planned_epochs(self) -> int:
        return sum(self.stage_epochs)


@dataclass
class _Settings:
    teacher: str
    methods: list[str]
    dims: list[int]
    seeds: int
    budget: str
    epochs: int
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    metasd_sparsity: float | None = None
    teacher_test_mrr: float | None = None  # a teacher retrained in the same folder is another benchmark


def check_teacher(teacher_dir: str | Path, device: str = "cpu") -> Run:
    """The teacher run, which must be a finished run of an embedding model (else one-line error)."""
    path = Path(teacher_dir)
    if not path.is_dir():
        raise RunFolderError(f"--teacher {path}: no such run folder")
    missing = [f for f in ("config.yaml", MODEL_WEIGHTS, "metrics.json") if not (path / f).exists()]
    if missing:
        raise RunFolderError(f"--teacher {path}: not a finished run (missing {', '.join(missing)}); train it to the "
                             f"end first (`kgdistill train --resume {path}`)")
    teacher = load_run(path, device=device)
    teacher_test_metrics(teacher)  # a run trained with eval_splits [valid] is evaluated on test now
    teacher_model(teacher)
    return teacher


def _dense_params(teacher: Run, dim: int) -> int:
    return make_student(teacher_model(teacher), dim, 0).num_parameters()


def plan_method(method: str, teacher: Run, dim: int, budget: str, epochs: int, options: dict[str, Any],
                metasd_sparsity: float | None = None, label: str | None = None) -> MethodPlan:
    """The distill options and the stages of ``method`` with a final student of ``dim`` under ``budget``."""
    from kgdistill.distill.iterde import chain

    name = methods.canonical(method)
    t_dim = teacher_model(teacher).dim
    cls = methods.get(name).Config
    names = {f.name for f in fields(cls)}
    opts = dict(options)
    note = ""
    prunes = "sparsity" in names
    if prunes:
        source = 2 * dim if "target_dim" in names else t_dim
        if metasd_sparsity is None and "sparsity" not in options:
            dense, shaped = _dense_params(teacher, dim), _dense_params(teacher, source)
            opts["sparsity"] = round(1.0 - dense / shaped, 6)
            note = (f"{label or name}: prunes a {source}-dim model at sparsity {opts['sparsity']:.4f} = 1 − "
                    f"params(dense-{dim}) / params({source}-dim) = 1 − {dense:,} / {shaped:,}: its non-zeros match "
                    f"the dense {dim}-dim student's")
        else:
            opts["sparsity"] = options.get("sparsity", metasd_sparsity)
            note = f"{label or name}: prunes a {source}-dim model at the given sparsity {opts['sparsity']}"
    if "target_dim" in names:
        opts["target_dim"] = 2 * dim if prunes else dim
        try:
            k = len(chain(t_dim, make_config(name, opts))) + (1 if prunes else 0)
        except ConfigError as err:
            how = f" (its chain stops at 2 × {dim}, then prunes)" if prunes else ""
            raise ConfigError(f"{name} at dim {dim}{how}: {err}") from None
    elif prunes:
        k = 1
    else:
        opts["dims"] = [dim]
        k = 2 if "stage2" in names and make_config(name, opts).stage2 else 1
    two_stage = "stage2" in names and k == 2
    if budget == "final":
        stage_epochs = [epochs] * k
    elif epochs < k:
        raise ConfigError(f"--epochs {epochs} is below the {k} stages of {name} (budget total gives each stage "
                          f"⌊E/{k}⌋ epochs)")
    elif two_stage:
        stage_epochs = [epochs - epochs // 2, epochs // 2]
    else:
        stage_epochs = [epochs // k] * k
    opts["epochs"] = stage_epochs[0]
    if two_stage:
        opts["stage2_epochs"] = stage_epochs[1]
    make_config(name, opts)  # every option valid for this method (unknown ones named)
    return MethodPlan(name, label or name, dim, stage_epochs, opts, note)


def _canonical_methods(names: list[str]) -> list[str]:
    out = []
    for name in names:
        try:
            canonical = methods.canonical(name)
        except UnknownNameError as err:
            raise ConfigError(str(err)) from None
        if canonical in out:
            raise ConfigError(f"--methods: {canonical!r} is listed twice")
        out.append(canonical)
    if not out:
        raise ConfigError("--methods: name at least one method")
    return out


def _options_for(method: str, method_options: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``method_options["*"]`` (keys the method has) then ``method_options[method]``; controlled keys refused."""
    names = {f.name for f in fields(methods.get(method).Config)}
    out = {k: v for k, v in method_options.get("*", {}).items() if k.replace("-", "_") in names}
    for key, opts in method_options.items():
        if key != "*" and methods.canonical(key) == method:
            out.update(opts)
    for key in out:
        if key.replace("-", "_") in CONTROLLED:
            raise ConfigError(f"option {key!r} of {method} is set by the benchmark (from --dims, --budget, --epochs "
                              f"and --seeds)")
    return {k.replace("-", "_"): v for k, v in out.items()}


def _check_options(method_options: dict[str, dict[str, Any]], chosen: list[str]) -> None:
    for key in method_options:
        if key != "*" and (key not in methods or methods.canonical(key) not in chosen):
            raise ConfigError(f"options given for {key!r}, which is not among the benchmarked methods "
                              f"({', '.join(chosen)})")
    for key in method_options.get("*", {}):
        if not any(key.replace("-", "_") in {f.name for f in fields(methods.get(m).Config)} for m in chosen):
            raise ConfigError(f"option {key!r}: none of the benchmarked methods has it")


def _typed_options(plans: list[MethodPlan]) -> dict[str, dict[str, Any]]:
    """Each plan's distill options as its config holds them (``"0"`` from the command line and ``0`` from Python
    compare equal), keyed by the plan's label."""
    out = {}
    for plan in plans:
        config = make_config(plan.method, plan.options)
        out[plan.label] = {k: getattr(config, k) for k in sorted(plan.options)}
    return out


def make_plans(teacher: Run, method_names: list[str], dims: list[int], budget: str, epochs: int,
               method_options: dict[str, dict[str, Any]], metasd_sparsity: float | None) -> list[MethodPlan]:
    """One plan per (method, dim), in the order given; every error is raised before anything is run."""
    plans = []
    for dim in dims:
        for name in method_names:
            label = name if len(dims) == 1 else f"{name}-{dim}"
            plans.append(plan_method(name, teacher, dim, budget, epochs, _options_for(name, method_options),
                                     metasd_sparsity, label))
    return plans


def _adds_methods(saved: dict[str, Any], settings: dict[str, Any]) -> bool:
    """Whether ``settings`` is the ``saved`` benchmark with more methods: every saved method kept with the same
    options, nothing else changed (``--resume`` then runs only the new methods' runs)."""
    old_methods, new_methods = saved.get("methods") or [], settings.get("methods") or []
    old_options, new_options = saved.get("options") or {}, settings.get("options") or {}
    others = {k for k in set(saved) | set(settings) if k not in ("methods", "options")}
    return (set(old_methods) <= set(new_methods) and all(saved.get(k) == settings.get(k) for k in others)
            and all(old_options.get(m) == new_options.get(m) for m in old_methods))


def prepare_out(out: Path, settings: dict[str, Any], resume: bool) -> None:
    """Refuse an output folder holding another benchmark, this one without ``resume``, or other files; with
    ``resume`` a benchmark may be extended by more methods (the finished runs of the others are kept)."""
    saved_path = out / SETTINGS_FILE
    if saved_path.exists():
        saved = json.loads(saved_path.read_text()).get("settings", {})
        differ = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        if differ and not (resume and _adds_methods(saved, settings)):
            raise ConfigError(f"{out}: holds another benchmark (different {', '.join(differ)}); choose another --out")
        if not resume:
            raise ConfigError(f"{out}: holds this benchmark already; pass --resume to continue it")
    elif out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: not empty and not a benchmark folder; choose another --out")


#: the training settings a leaderboard names as the students' recipe
RECIPE_KEYS = ("training_mode", "optimizer", "lr", "batch_size", "loss", "margin", "num_negatives", "regularizer",
               "regularizer_weight")


def recipe_of(training: dict[str, Any]) -> dict[str, Any]:
    """The recipe fields of a stage's ``config.yaml`` ``training`` section (sLCWA-only ones only in sLCWA)."""
    keys = RECIPE_KEYS if training.get("training_mode") == "slcwa" else \
        [k for k in RECIPE_KEYS if k not in ("loss", "margin", "num_negatives")]
    return {k: training.get(k) for k in keys}


def read_record(run_dir: Path, plan: MethodPlan, seed: int, train_triples: int) -> dict[str, Any]:
    """One finished (method, seed) run: the final student's row, the stages' budget and the summed train time."""
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = summary["rows"]
    stages = []
    for folder in (run_dir / Path(f).name for f in summary["run_folders"]):
        metrics = json.loads((folder / "metrics.json").read_text())
        config = yaml.safe_load((folder / "config.yaml").read_text())
        examples = int(metrics.get("supervised_triples", train_triples))
        done = int(metrics.get("epochs_done", 0))
        stages.append({"stage": folder.name, "epochs": config["training"]["epochs"], "epochs_done": done,
                       "train_triples": examples, "epoch_examples": done * examples,
                       "train_seconds": metrics.get("train_seconds")})
    final = dict(rows[-1])
    final["train s"] = round(sum(float(r.get("train s") or 0.0) for r in rows), 3)
    return {"method": plan.method, "label": plan.label, "dim": plan.dim, "seed": seed, "path": str(run_dir),
            "stage_name": final.pop("row"), "row": final, "stages": stages,
            "recipe": recipe_of(config["training"]),  # the last stage's (the loop ends on it): the final student's
            "student_epochs": sum(s["epochs_done"] for s in stages),
            "epoch_examples": sum(s["epoch_examples"] for s in stages), "wall_seconds": summary.get("seconds")}


def environment(device: str, command: str | None = None) -> dict[str, Any]:
    """Where and when the leaderboard was written (for BENCHMARKS.md: command, date, machine)."""
    import os
    import platform

    import torch

    gpu = torch.cuda.get_device_name(torch.device(device)) if str(device).startswith("cuda") else None
    return {"command": command, "written": time.strftime("%Y-%m-%d %H:%M %Z"), "device": str(device), "gpu": gpu,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads",
            "torch": torch.__version__, "host": platform.node()}


def default_methods() -> list[str]:
    """:data:`DEFAULT_METHODS` that are registered (a method still being added is left out, not an error)."""
    return [m for m in DEFAULT_METHODS if m in methods]


def benchmark(teacher_dir: str | Path, out: str | Path, methods: list[str] | tuple[str, ...] | None = None,
              dims: list[int] | tuple[int, ...] = (32,), seeds: int = 3, budget: str = "final",
              epochs: int | None = None, device: str = "cpu", progress: bool = False,
              method_options: dict[str, dict[str, Any]] | None = None, *, metasd_sparsity: float | None = None,
              resume: bool = False, command: str | None = None) -> Leaderboard:
    """Run every method of ``methods`` (default: :func:`default_methods`) from the teacher run ``teacher_dir``
    for ``seeds`` seeds (1..n) at student ``dims`` under ``budget`` (``final`` | ``total``, ``epochs`` E); write
    and return the leaderboard.

    ``method_options``: ``{method: {option: value}}`` passed to that method's distill call, ``{"*": {...}}`` to
    every method that has the option. ``progress``: log which stage of which method and seed runs, and the time
    left (logger ``kgdistill.benchmark``), and let the runs draw their bars on a terminal. Every input is checked
    before anything is written (:class:`~kgdistill.errors.ConfigError` / :class:`~kgdistill.errors.RunFolderError`,
    one line each). ``command``: the command line, recorded with the leaderboard.
    """
    from kgdistill.distill.benchmark_progress import BenchmarkProgress

    out = Path(out)
    method_options = {k: dict(v) for k, v in (method_options or {}).items()}
    if budget not in BUDGETS:
        raise ConfigError(f"--budget: expected one of {', '.join(BUDGETS)}, got {budget!r}")
    if int(seeds) < 1:
        raise ConfigError(f"--seeds: expected at least 1, got {seeds}")
    chosen = _canonical_methods(list(methods) if methods is not None else default_methods())
    _check_options(method_options, chosen)
    teacher = check_teacher(teacher_dir, device)
    t_dim = teacher_model(teacher).dim
    dims = [int(d) for d in dims]
    bad = [d for d in dims if not 1 <= d < t_dim]
    if not dims or bad:
        raise ConfigError(f"--dims: each student dim must be below the teacher's dim {t_dim} (and ≥ 1), got "
                          f"{', '.join(map(str, bad or dims))}")
    if len(set(dims)) != len(dims):
        raise ConfigError(f"--dims: a dim is listed twice ({', '.join(map(str, dims))})")
    epochs = int(epochs if epochs is not None else teacher.config.training.epochs)
    if epochs < 1:
        raise ConfigError(f"--epochs: expected at least 1, got {epochs}")
    if metasd_sparsity is not None and not 0.0 <= metasd_sparsity < 1.0:
        raise ConfigError(f"--metasd-sparsity: expected a fraction in [0, 1), got {metasd_sparsity}")
    plans = make_plans(teacher, chosen, dims, budget, epochs, method_options, metasd_sparsity)
    settings = asdict(_Settings(str(Path(teacher_dir).resolve()), chosen, dims, int(seeds), budget, epochs,
                                _typed_options(plans), metasd_sparsity,
                                teacher_test_metrics(teacher).get("both", {}).get("mrr")))
    settings = json.loads(json.dumps(settings))  # as read back from the file
    prepare_out(out, settings, resume)

    out.mkdir(parents=True, exist_ok=True)
    saved = out / SETTINGS_FILE
    if not saved.exists():
        saved.write_text(json.dumps({"settings": settings, "plans": [asdict(p) for p in plans],
                                     "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=2))
    assert teacher.dataset is not None
    train_triples = int(teacher.dataset.train.shape[0])
    runs = [(plan, seed) for seed in range(1, int(seeds) + 1) for plan in plans]
    monitor = BenchmarkProgress([(p.label, seed, p.stage_epochs) for p, seed in runs], enabled=progress)
    records = []
    try:
        for i, (plan, seed) in enumerate(runs):
            run_dir = out / plan.label / f"seed-{seed}"
            if (run_dir / "summary.json").exists():
                records.append(read_record(run_dir, plan, seed, train_triples))
                monitor.skip(i)
                continue
            monitor.begin(i, run_dir)
            distill(plan.method, teacher_dir, run_dir, device=device, progress=progress, with_teacher_row=False,
                    resume=resume, seed=seed, **plan.options)
            monitor.end(i)
            records.append(read_record(run_dir, plan, seed, train_triples))
    finally:
        monitor.close()
    board = build_leaderboard(settings, [asdict(p) for p in plans], records, teacher_row(teacher),
                              notes=[p.note for p in plans if p.note], environment=environment(device, command))
    board.write(out)
    return board


__all__ = ["benchmark", "default_methods", "plan_method", "make_plans", "MethodPlan", "check_teacher", "read_record",
           "BUDGETS", "DEFAULT_METHODS", "SETTINGS_FILE"]
