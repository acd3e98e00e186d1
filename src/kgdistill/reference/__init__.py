"""Reference configurations: shipped recipes with the test metrics we measured for them, and a check of a run
against them ("does my installation reproduce the published number?").

A reference is a YAML file with a fully resolved run configuration (``config``: a KGE :class:`~kgdistill.config.
RunConfig` or a text :class:`~kgdistill.text.config.TextRunConfig`, as ``kind`` says), the test metrics measured
for it (``expected``: each ``[value, tolerance]``, filtered ranking, both directions), and where and how they were
measured (``measured``) and where the tolerance comes from (``tolerance_basis``: a measured spread over seeds, or a
stated margin where only one run was made). The shipped ones (``reference/configs/*.yaml``) are the teachers of
``BENCHMARKS.md``; :func:`reference_from_run` makes one from any finished run folder.

    kgdistill reference list
    kgdistill reference run kinship-complex-64 --out runs/ref        # train, then check against the expectation
    kgdistill reference check kinship-complex-64 runs/ref            # check a finished run folder
    kgdistill reference from-run runs/my-run my-ref.yaml             # a finished run as a new reference
"""

from __future__ import annotations

import importlib.resources
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from kgdistill.config import RunConfig, config_kind, from_dict, to_dict
from kgdistill.errors import ConfigError, RunFolderError

KINDS = ("kge", "text")
#: config keys that do not change what a run computes (where it is written, on which device, how it reports)
IGNORED_KEYS = ("output_dir", "device", "progress", "data.data_dir", "data.download", "data.data_url",
                "training.num_threads", "training.log_every", "training.checkpoint_every", "training.keep_checkpoint",
                "training.retain_memory", "evaluation.eval_batch_size", "model.encode_batch_size",
                "distill.cache_teacher")


@dataclass(frozen=True)
class Reference:
    """One shipped (or user-made) recipe and what it should reach on the test split.

    ``expected``: ``{metric: (value, tolerance)}`` for metrics of ``metrics.json``'s ``test`` / ``both`` block
    (``mrr``, ``hits@1``, ``hits@3``, ``hits@10``, ``mr``)."""

    name: str
    kind: str
    description: str
    config: Any
    expected: dict[str, tuple[float, float]]
    measured: str = ""
    tolerance_basis: str = ""
    path: Path | None = None


@dataclass(frozen=True)
class Check:
    """One metric of a run against a reference: ``ok`` when ``|value − expected| ≤ tolerance``."""

    metric: str
    value: float
    expected: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return abs(self.value - self.expected) <= self.tolerance + 1e-12

    def line(self) -> str:
        verdict = "within" if self.ok else "OUTSIDE"
        return (f"{self.metric}: {self.value:.4f} — {verdict} the expected {self.expected:.4f} "
                f"± {self.tolerance:.4f} (difference {self.value - self.expected:+.4f})")


@dataclass
class Verdict:
    """Every check of one run, and the configuration keys where the run differs from the reference (a run of
    another configuration is reported but not judged)."""

    checks: list[Check]
    differences: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def comparable(self) -> bool:
        return not self.differences

    @property
    def ok(self) -> bool:
        return self.comparable and all(c.ok for c in self.checks)

    def lines(self) -> list[str]:
        out = [c.line() for c in self.checks]
        if self.differences:
            out.append("not comparable: the run's configuration differs from the reference at " + ", ".join(
                f"{k} ({a!r} here, {b!r} in the reference)" for k, (a, b) in sorted(self.differences.items())))
        return out


def _config_class(kind: str) -> type:
    if kind == "kge":
        return RunConfig
    if kind == "text":
        from kgdistill.text.config import TextRunConfig

        return TextRunConfig
    raise ConfigError(f"reference kind must be one of {', '.join(KINDS)}, got {kind!r}")


def _shipped_dir() -> Path:
    return Path(str(importlib.resources.files("kgdistill.reference").joinpath("configs")))


def list_references() -> list[str]:
    """Names of the shipped references."""
    return sorted(p.stem for p in _shipped_dir().glob("*.yaml"))


def load_reference(name_or_path: str | Path) -> Reference:
    """A shipped reference by name, or a reference YAML file by path."""
    shipped = _shipped_dir() / f"{name_or_path}.yaml"
    path = shipped if shipped.exists() else Path(name_or_path)
    if not path.exists():
        raise ConfigError(f"no reference named {str(name_or_path)!r} and no such file; shipped: "
                          f"{', '.join(list_references())} (or give the path of a reference .yaml file)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with kind, description, expected, config")
    missing = [k for k in ("kind", "expected", "config") if k not in data]
    if missing:
        raise ConfigError(f"{path}: missing {', '.join(missing)} (a reference has kind, description, expected, "
                          f"measured, tolerance_basis, config)")
    unknown = sorted(set(data) - {"kind", "description", "expected", "measured", "tolerance_basis", "config"})
    if unknown:
        raise ConfigError(f"{path}: unknown keys {', '.join(unknown)}")
    cls = _config_class(str(data["kind"]))
    try:
        config = from_dict(cls, data["config"], where="config.")
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    expected: dict[str, tuple[float, float]] = {}
    for metric, pair in (data["expected"] or {}).items():
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise ConfigError(f"{path}: expected.{metric} must be [value, tolerance], got {pair!r}")
        expected[str(metric)] = (float(pair[0]), float(pair[1]))
    if not expected:
        raise ConfigError(f"{path}: expected lists no metric")
    return Reference(path.stem, str(data["kind"]), str(data.get("description", "")), config, expected,
                     str(data.get("measured", "")), str(data.get("tolerance_basis", "")), path)


def _flat(d: dict[str, Any]) -> dict[str, Any]:
    """``{"training": {"lr": 0.1}, "device": "cpu"}`` → ``{"training.lr": 0.1, "device": "cpu"}`` (sections only:
    mapping-valued options such as ``model.model_options`` stay whole)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k in ("data", "model", "training", "distill", "evaluation"):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


def config_differences(config: Any, reference: Reference) -> dict[str, tuple[Any, Any]]:
    """``{key: (run's value, reference's value)}`` over the keys that change what a run computes."""
    if type(config) is not type(reference.config):
        return {"kind": (type(config).__name__, type(reference.config).__name__)}
    mine, theirs = _flat(to_dict(config)), _flat(to_dict(reference.config))
    return {k: (mine.get(k), theirs.get(k)) for k in sorted(set(mine) | set(theirs))
            if k not in IGNORED_KEYS and mine.get(k) != theirs.get(k)}


def check_metrics(reference: Reference, metrics: dict[str, Any], config: Any | None = None) -> Verdict:
    """Compare ``metrics`` (a run's ``metrics.json``: ``{"test": {"both": {...}}}``) with ``reference``."""
    test = _test_metrics(metrics)
    checks = []
    for metric, (value, tol) in reference.expected.items():
        if metric not in test:
            raise RunFolderError(f"the run's test metrics have no {metric!r} (they have {', '.join(test)})")
        checks.append(Check(metric, float(test[metric]), value, tol))
    return Verdict(checks, config_differences(config, reference) if config is not None else {})


def _test_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The ``test`` / ``both`` block of a run's metrics (filtered, both directions)."""
    test = (metrics.get("test") or {}).get("both")
    if not test:
        raise RunFolderError("the run has no test metrics (metrics.json → test → both); evaluate it on the test "
                             "split")
    return test


def _run_metrics(run_dir: Path) -> dict[str, Any]:
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.exists():
        raise RunFolderError(f"{run_dir}: no metrics.json (not a finished run folder)")
    return json.loads(metrics_path.read_text())


def _read_config(run_dir: Path) -> Any:
    """The run's configuration, of the model kind its folder records (a kind other than the reference's shows as
    a ``kind`` difference in :func:`config_differences`)."""
    from kgdistill.runs import read_run_config

    return read_run_config(run_dir, kind=None)


def check_run(reference: Reference, run_dir: str | Path) -> Verdict:
    """Check the finished run in ``run_dir`` (its ``metrics.json`` and configuration) against ``reference``."""
    run_dir = Path(run_dir)
    return check_metrics(reference, _run_metrics(run_dir), _read_config(run_dir))


def run_reference(reference: Reference, out: str | Path, device: str = "cpu", data_dir: str | None = None,
                  resume: bool = False, progress: bool | None = None) -> tuple[Any, Verdict]:
    """Train ``reference``'s configuration into ``out`` (on ``device``; ``data_dir`` where the dataset lives, which
    does not change the run; ``progress`` overrides the config's bars, drawn only on a terminal) and check the
    result. Returns ``(Run, Verdict)``."""
    config = replace(reference.config, output_dir=str(out), device=device)
    if progress is not None:
        config = replace(config, progress=progress)
    if data_dir is not None:
        config = replace(config, data=replace(config.data, data_dir=data_dir))
    if reference.kind == "text":
        from kgdistill.text.trainer import resume_text, train_text

        run = resume_text(out) if resume else train_text(config)
    else:
        from kgdistill.runs import resume as resume_kge
        from kgdistill.runs import train

        run = resume_kge(out) if resume else train(config)
    return run, check_run(reference, run.path)


def reference_from_run(run_dir: str | Path, tolerance: float, description: str = "", measured: str = "",
                       tolerance_basis: str = "", metrics: tuple[str, ...] = ("mrr",)
                       ) -> dict[str, Any]:
    """A reference (as a YAML-ready mapping) from a finished run folder: its configuration and its test metrics,
    each of ``metrics`` with ``tolerance``."""
    run_dir = Path(run_dir)
    config = _read_config(run_dir)
    kind = config_kind(config)
    test = _test_metrics(_run_metrics(run_dir))
    data = to_dict(config)
    for key in ("output_dir", "device", "progress"):
        data.pop(key, None)
    return {"kind": kind, "description": description, "measured": measured, "tolerance_basis": tolerance_basis,
            "expected": {m: [round(float(test[m]), 4), tolerance] for m in metrics if m in test}, "config": data}


def write_reference(data: dict[str, Any], path: str | Path) -> Path:
    from kgdistill.atomicio import atomic_write_text

    path = Path(path)
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False, width=120))
    return path


__all__ = ["Reference", "Check", "Verdict", "list_references", "load_reference", "check_metrics", "check_run",
           "run_reference", "reference_from_run", "write_reference", "config_differences"]
