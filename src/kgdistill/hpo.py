"""Hyperparameter search with optuna over training recipes or a distillation method's options::

    kgdistill hpo --config base.yaml --space space.yaml --trials 12 --storage sqlite:///study.db
    kgdistill hpo --method kd --teacher runs/teacher --space kd_space.yaml --trials 20 --storage sqlite:///kd.db

The space is a YAML mapping of config keys (``train``: dotted paths of the run config such as ``training.lr`` or
``model.dim``, or their unique field names; a distillation: the method's options such as ``temperature``) to
distributions::

    training.lr: {type: float, low: 1.0e-3, high: 0.3, log: true}
    model.dim: {type: int, low: 16, high: 64, step: 16}
    training.optimizer: {type: categorical, choices: [adam, adagrad]}

Every trial trains one run folder ``OUT/trial-NNNN`` (a distillation: ``OUT/trial-NNNN/`` with its stage folders)
and is scored by the validation MRR of the model it keeps (the test split is never used to select); each
validation during training is reported to optuna, whose pruner (median by default) stops trials that fall behind.
The sampler is TPE by default (``random`` too). Trials are stored in any optuna RDB storage URL (SQLite,
PostgreSQL, MySQL): several worker processes (``--workers``), and several machines pointing at one database, share
the study; re-running the same command continues it until ``--trials`` trials have finished (completed or
pruned), so an interrupted search resumes (a trial cut off by a crash is marked failed once its heartbeat is
stale, and is not counted). At the end of each invocation ``OUT/study.json`` / ``OUT/study.md`` list every trial
(state, parameters, validation and test MRR, epochs, seconds, run folder) and ``OUT/best.yaml`` is the best
configuration, ready to run (``kgdistill train --config OUT/best.yaml``; a distillation's options for
``kgdistill.distill(method, teacher, out, **options)``, its command line in ``study.md``).

A space with an unknown key (close matches named), an empty range, an unknown type or a value the config refuses
is one :class:`~kgdistill.errors.ConfigError` before any trial; so is a study of the same name made with another
space or base configuration.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kgdistill.errors import ConfigError, KGDistillError
from kgdistill.registry import suggest

TYPES = ("float", "int", "categorical")
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "none")
_FIELDS = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
           "categorical": {"type", "choices"}}
#: seconds between a running trial's heartbeats; a trial silent for GRACE seconds is marked failed
HEARTBEAT, GRACE = 15, 60


# ---- the space ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """One searched key and its distribution."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log,  # type: ignore[arg-type]
                                     step=int(self.step or 1))
        return trial.suggest_categorical(self.key, list(self.choices))

    def extremes(self) -> list[Any]:
        """Values the configuration must accept: the bounds, or every choice."""
        if self.type == "categorical":
            return list(self.choices)
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.type == "categorical":
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high, log=self.log)
            if self.step is not None:
                out["step"] = self.step
        return out


def parse_space(data: Any, where: str = "space") -> list[Param]:
    """The parameters of a space mapping (see the module docstring); each format error is one ConfigError."""
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{where}: expected a mapping of config keys to distributions, e.g. "
                          "'training.lr: {type: float, low: 1.0e-3, high: 0.3, log: true}'")
    out = []
    for key, spec in data.items():
        at = f"{where}: {key}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{at}: expected a mapping such as {{type: float, low: 0.01, high: 0.1}}, got {spec!r}")
        kind = str(spec.get("type", "")).lower()
        if kind not in TYPES:
            raise ConfigError(f"{at}: unknown type {spec.get('type')!r}; known: {', '.join(TYPES)}."
                              f"{suggest(kind, list(TYPES))}")
        extra = sorted(set(spec) - _FIELDS[kind])
        if extra:
            raise ConfigError(f"{at}: unknown field {extra[0]!r} for type {kind}; fields: "
                              f"{', '.join(sorted(_FIELDS[kind]))}.{suggest(str(extra[0]), sorted(_FIELDS[kind]))}")
        if kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices:
                raise ConfigError(f"{at}: empty choices (expected a non-empty list, e.g. choices: [adam, adagrad])")
            if any(not isinstance(c, (str, int, float, bool)) and c is not None for c in choices):
                raise ConfigError(f"{at}: choices must be strings, numbers, booleans or null, got {choices!r}")
            if len(set(map(repr, choices))) != len(choices):
                raise ConfigError(f"{at}: choices repeat a value: {choices!r}")
            out.append(Param(str(key), kind, choices=tuple(choices)))
            continue
        bounds = {}
        for name in ("low", "high"):
            value = spec.get(name)
            if isinstance(value, str):
                try:
                    value = float(value)  # YAML reads 1e-3 (no dot) as a string
                except ValueError:
                    pass
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{at}: {name} must be a finite number, got {spec.get(name)!r}")
            if kind == "int" and not float(value).is_integer():
                raise ConfigError(f"{at}: {name} must be an integer for type int, got {value!r}")
            bounds[name] = value
        low, high = bounds["low"], bounds["high"]
        if low > high:
            raise ConfigError(f"{at}: empty range (low {low} > high {high})")
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise ConfigError(f"{at}: log must be true or false, got {log!r}")
        if log and low <= 0:
            raise ConfigError(f"{at}: a log range needs low > 0, got low {low}")
        step = spec.get("step")
        if step is not None:
            if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0 or \
                    (kind == "int" and not float(step).is_integer()):
                raise ConfigError(f"{at}: step must be a positive {'integer' if kind == 'int' else 'number'}, "
                                  f"got {step!r}")
            if log:
                raise ConfigError(f"{at}: step and log cannot be combined")
        out.append(Param(str(key), kind, float(low) if kind == "float" else int(low),
                         float(high) if kind == "float" else int(high), log, step))
    return out


def load_space(path: str | Path) -> list[Param]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: space file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the space ({getattr(err, 'problem', None) or err})") from None
    return parse_space(data, str(path))


# ---- what a trial trains -----------------------------------------------------------------------------------------
def _config_keys(config: Any) -> dict[str, str]:
    """``key as written -> canonical dotted key`` of a run config: ``training.lr`` and the unique name ``lr``."""
    from kgdistill.config import flat_fields

    out = {}
    for name, (section, _f, _tp) in flat_fields(type(config)).items():
        dotted = f"{section}.{name}" if section else name
        out[dotted] = dotted
        out[name] = dotted
    return out


@dataclass
class Search:
    """A search: what each trial trains (``train``: ``base`` a run config; ``distill``: ``base`` the method's
    options, with ``method`` and ``teacher``), the space, where run folders go and the threads of one trial."""

    kind: str
    base: Any
    space: list[Param]
    out: Path
    method: str | None = None
    teacher: str | None = None
    threads: int | None = None
    where: str = "space"
    #: progress bars in each trial (when stderr is a terminal; off by default: optuna logs a line per trial)
    progress: bool = False

    def __post_init__(self) -> None:
        self.out = Path(self.out)

    def check(self) -> None:
        """Every key known and every bound accepted by the configuration: one ConfigError before any trial."""
        if self.kind == "train":
            from kgdistill.validate import validate_config

            keys = _config_keys(self.base)
            for p in self.space:
                canonical = keys.get(p.key.replace("-", "_"))
                if canonical is None:
                    raise ConfigError(f"{self.where}: unknown key {p.key!r} (expected a run config key such as "
                                      f"training.lr or model.dim).{suggest(p.key, list(keys))}")
                if canonical in ("output_dir", "data.dataset", "data.data_dir", "device"):
                    raise ConfigError(f"{self.where}: {p.key} cannot be searched (set it in the base config)")
                for value in p.extremes():
                    try:
                        validate_config(self.train_config({p.key: value}, None))
                    except ConfigError as err:
                        raise ConfigError(f"{self.where}: {p.key} = {value!r}: {err}") from None
        else:
            from kgdistill.distill.method import make_config, methods

            names = [f.name for f in dataclasses.fields(methods.get(self.method).Config)]  # type: ignore[arg-type]
            for p in self.space:
                if p.key.replace("-", "_") not in names:
                    raise ConfigError(f"{self.where}: unknown key {p.key!r}: not an option of "
                                      f"{methods.canonical(self.method)}.{suggest(p.key, names)}")  # type: ignore
                for value in p.extremes():
                    try:
                        make_config(self.method, self.options({p.key: value}))  # type: ignore[arg-type]
                    except ConfigError as err:
                        raise ConfigError(f"{self.where}: {p.key} = {value!r}: {err}") from None

    def options(self, params: dict[str, Any]) -> dict[str, Any]:
        """A distillation's method options: the base ones with ``params`` (a searched ``dims: 16`` is ``[16]``)."""
        out = {**self.base, **params}
        if "dims" in params and not isinstance(params["dims"], (list, tuple)):
            out["dims"] = [params["dims"]]
        return out

    def train_config(self, params: dict[str, Any], run_dir: Path | None) -> Any:
        from kgdistill.config import with_overrides

        overrides: dict[str, Any] = {**params, "progress": self.progress,
                                     "output_dir": str(run_dir) if run_dir else None}
        if self.threads:
            overrides["num_threads"] = self.threads
        return with_overrides(self.base, overrides)

    def fingerprint(self) -> dict[str, Any]:
        """What must not change between the sessions of one study."""
        from kgdistill.config import to_dict

        base = to_dict(self.base) if self.kind == "train" else dict(self.base)
        if self.kind == "train":
            base.pop("output_dir", None)
            base.pop("progress", None)
            base.get("training", {}).pop("num_threads", None)
        return json.loads(json.dumps({"kind": self.kind, "method": self.method, "teacher": self.teacher,
                                      "base": base, "space": {p.key: p.as_dict() for p in self.space}},
                                     default=str))

    def run(self, params: dict[str, Any], run_dir: Path) -> dict[str, Any]:
        """Train one trial; its final metrics (``valid`` / ``test`` per side, ``train_seconds``, ...)."""
        if self.kind == "train":
            from kgdistill import runs

            return runs.train(self.train_config(params, run_dir)).metrics
        from kgdistill.distill.api import distill

        report = distill(self.method, self.teacher, run_dir, progress=self.progress,  # type: ignore[arg-type]
                         num_threads=self.threads, with_teacher_row=False, **self.options(params))
        return {**report.results[-1].metrics, "run_folder": str(report.results[-1].path)}


# ---- optuna ------------------------------------------------------------------------------------------------------
def _optuna() -> Any:
    try:
        import optuna
    except ModuleNotFoundError:
        raise ConfigError("kgdistill hpo needs optuna: pip install 'kgdistill[hpo]'") from None
    return optuna


def open_storage(url: str) -> Any:
    """An optuna RDB storage (heartbeats on, so a trial of a crashed worker is marked failed)."""
    optuna = _optuna()
    if "://" not in url:
        raise ConfigError(f"--storage {url!r}: expected a database URL such as sqlite:///study.db or "
                          "postgresql://user@host/db")
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        if str(path) and not path.resolve().parent.is_dir():
            raise ConfigError(f"--storage {url}: the folder {path.parent} does not exist")
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():  # heartbeats are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT,
                                              grace_period=GRACE)
    except Exception as err:  # noqa: BLE001 - a driver missing, a server down, a bad URL: one line
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"--storage {_masked(url)}: cannot open the study storage ({text[:300]})") from None


def _masked(url: str) -> str:
    """The URL without its password."""
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url


def make_sampler(name: str, seed: int | None, n_trials: int) -> Any:
    optuna = _optuna()
    if name == "tpe":  # a third of the trials (3 to 10) random before TPE models the rest
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(3, n_trials // 3)))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"--sampler {name!r}: known: {', '.join(SAMPLERS)}.{suggest(name, list(SAMPLERS))}")


def make_pruner(name: str, n_trials: int) -> Any:
    optuna = _optuna()
    if name == "median":  # a trial below the median of earlier trials at the same validation is stopped
        return optuna.pruners.MedianPruner(n_startup_trials=min(5, max(2, n_trials // 4)))
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"--pruner {name!r}: known: {', '.join(PRUNERS)}.{suggest(name, list(PRUNERS))}")


class _Reporter:
    """A trace listener (:data:`kgdistill.training.trace.LISTENERS`) that reports every validation MRR of a trial
    to optuna and prunes it when the pruner says so. Stages of a distillation continue the step count."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial
        self.offsets: dict[Path, int] = {}
        self.last = 0
        self.best = -math.inf

    def __call__(self, run_dir: Path, record: dict[str, Any]) -> None:
        if record.get("event") != "validation" or "mrr" not in record:
            return
        if run_dir not in self.offsets:
            self.offsets[run_dir] = self.last
        step = self.offsets[run_dir] + int(record.get("epoch", 0))
        self.last = max(self.last, step)
        mrr = float(record["mrr"])
        self.best = max(self.best, mrr)
        self.trial.report(mrr, step)
        if self.trial.should_prune():
            optuna = _optuna()
            raise optuna.TrialPruned(f"validation MRR {mrr:.4f} at step {step}")


def _objective(search: Search) -> Callable[[Any], float]:
    from kgdistill.tracking import finish_runs
    from kgdistill.training.trace import LISTENERS

    def objective(trial: Any) -> float:
        params = {p.key: p.suggest(trial) for p in search.space}
        run_dir = search.out / f"trial-{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("pid", os.getpid())
        reporter = _Reporter(trial)
        token = LISTENERS.set(LISTENERS.get() + (reporter,))
        start = time.perf_counter()
        finished = False
        try:
            metrics = search.run(params, run_dir)
            finished = True
        except KGDistillError as err:
            trial.set_user_attr("error", str(err))
            raise
        finally:
            LISTENERS.reset(token)
            finish_runs(failed=not finished)  # the trackers' runs of this trial end with it
            trial.set_user_attr("seconds", round(time.perf_counter() - start, 2))
        valid = metrics.get("valid", {}).get("both", {}).get("mrr")
        value = float(valid) if valid is not None else reporter.best
        if not math.isfinite(value):
            raise ConfigError("the trial has no validation MRR: keep 'valid' in evaluation.eval_splits")
        test = metrics.get("test", {}).get("both", {})
        trial.set_user_attr("test_mrr", test.get("mrr"))
        trial.set_user_attr("test_hits@10", test.get("hits@10"))
        trial.set_user_attr("epochs", metrics.get("epochs_done", reporter.last or None))
        if "run_folder" in metrics:
            trial.set_user_attr("run_dir", metrics["run_folder"])
        return value

    return objective


@dataclass
class WorkerSpec:
    """What one worker process needs (picklable: workers are spawned)."""

    search: Search
    storage: str
    study_name: str
    n_trials: int
    sampler: str
    pruner: str
    seed: int | None
    timeout: float | None = None
    worker: int = 0
    threads: int | None = None
    trackers: tuple[str, ...] = ()
    tracker_uri: str | None = None
    tracker_experiment: str | None = None
    training_log_level: int = 0  # the level of the kgdistill.training logger in the parent (0: not set)


def _finished(study: Any) -> int:
    optuna = _optuna()
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def run_worker(spec: WorkerSpec) -> None:
    """Run trials of the study until it holds ``n_trials`` finished ones (or ``timeout`` seconds passed)."""
    import torch

    optuna = _optuna()
    if spec.threads:
        torch.set_num_threads(spec.threads)
    seed = None if spec.seed is None else spec.seed + 1000 * spec.worker
    study = optuna.load_study(study_name=spec.study_name, storage=open_storage(spec.storage),
                              sampler=make_sampler(spec.sampler, seed, spec.n_trials),
                              pruner=make_pruner(spec.pruner, spec.n_trials))
    failures = [0]

    def stop_when_done(study: Any, trial: Any) -> None:
        if trial.state == optuna.trial.TrialState.FAIL:
            failures[0] += 1
        if _finished(study) >= spec.n_trials or failures[0] >= spec.n_trials:
            study.stop()

    if _finished(study) >= spec.n_trials:
        return
    study.optimize(_objective(spec.search), n_trials=None, timeout=spec.timeout, callbacks=[stop_when_done],
                   catch=(KGDistillError,), gc_after_trial=True)


def _spawned_worker(spec: WorkerSpec) -> None:  # the target of a worker process
    from kgdistill.progress import configure_logging

    configure_logging()
    logging.getLogger("kgdistill.training").setLevel(spec.training_log_level)  # as quiet as the parent
    with _tracking(spec):
        run_worker(spec)


def _tracking(spec: WorkerSpec) -> Any:
    """The trackers' session of one worker process (every trial's run folder logged)."""
    from kgdistill.tracking import tracking

    return tracking(list(spec.trackers), uri=spec.tracker_uri, experiment=spec.tracker_experiment)


@dataclass
class StudyResult:
    """The study after a session: its name, the summary rows, the best trial and the files written."""

    study_name: str
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    files: dict[str, Path] = field(default_factory=dict)


def hpo(search: Search, *, storage: str, n_trials: int, study_name: str | None = None, workers: int = 1,
        sampler: str = "tpe", pruner: str = "median", seed: int | None = 0, timeout: float | None = None,
        trackers: Sequence[str] = (), tracker_uri: str | None = None, tracker_experiment: str | None = None
        ) -> StudyResult:
    """Run (or continue) a search; see the module docstring. ``workers``: processes on this machine (this one and
    ``workers - 1`` spawned), all drawing trials from the one study in ``storage``. ``trackers``: names of
    :mod:`kgdistill.tracking` trackers that log every trial's run folder (``tracker_uri``: MLflow's store)."""
    optuna = _optuna()
    if n_trials < 1:
        raise ConfigError(f"--trials {n_trials}: expected an integer ≥ 1")
    if workers < 1:
        raise ConfigError(f"--workers {workers}: expected an integer ≥ 1")
    make_sampler(sampler, seed, n_trials)
    make_pruner(pruner, n_trials)
    search.check()
    name = study_name or default_study_name(search)
    previous = search.out / "study.json"
    if previous.exists():
        try:
            other = json.loads(previous.read_text(encoding="utf-8")).get("study")
        except (OSError, ValueError):
            other = None
        if other is not None and other != name:
            raise ConfigError(f"--out {search.out}: holds the trials of study {other!r}; choose another --out for "
                              f"study {name!r}")
    store = open_storage(storage)
    fingerprint = search.fingerprint()
    try:
        study = optuna.create_study(study_name=name, storage=store, direction="maximize", load_if_exists=True)
    except Exception as err:  # noqa: BLE001 - the database refuses (locked, read-only, an old schema): one line
        raise ConfigError(f"--storage {_masked(storage)}: cannot create or load study {name!r} ({err})") from None
    saved = study.user_attrs.get("kgdistill")
    if saved is None:
        study.set_user_attr("kgdistill", fingerprint)
        study.set_user_attr("out", str(search.out.resolve()))
    elif saved != fingerprint:
        differ = sorted(k for k in fingerprint if fingerprint.get(k) != saved.get(k))
        raise ConfigError(f"study {name!r} in {_masked(storage)} was made with another {' and '.join(differ)}; "
                          "continue it with the same --config, --space, --method and --teacher, or choose another "
                          "--study-name")
    search.out.mkdir(parents=True, exist_ok=True)
    write_summary(study, search, storage)  # claims the folder for this study from the start
    specs = [WorkerSpec(search, storage, name, n_trials, sampler, pruner, seed, timeout, worker=i,
                        threads=search.threads, trackers=tuple(trackers), tracker_uri=tracker_uri,
                        tracker_experiment=tracker_experiment,
                        training_log_level=logging.getLogger("kgdistill.training").level) for i in range(workers)]
    with _tracking(specs[0]):  # trackers made (and their stores reached) before any worker starts
        procs = []
        if workers > 1:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")
            procs = [ctx.Process(target=_spawned_worker, args=(spec,), name=f"kgdistill-hpo-{spec.worker}")
                     for spec in specs[1:]]
            for p in procs:
                p.start()
        try:
            run_worker(specs[0])
        finally:
            for p in procs:
                p.join()
    return write_summary(optuna.load_study(study_name=name, storage=store), search, storage)


def default_study_name(search: Search) -> str:
    return f"{search.method}-{search.out.name}" if search.kind == "distill" else search.out.name


def trial_rows(study: Any) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        seconds = attrs.get("seconds")
        done = t.state.name == "COMPLETE"
        rows.append({"trial": t.number, "state": t.state.name, "value": t.value,
                     "test_mrr": attrs.get("test_mrr"), "epochs": attrs.get("epochs") if done else
                     (max(t.intermediate_values) if t.intermediate_values else None),
                     "seconds": seconds, "params": dict(t.params), "run_dir": attrs.get("run_dir"),
                     "pid": attrs.get("pid"),
                     **({"error": attrs["error"]} if "error" in attrs else {})})
    return rows


def _best(study: Any) -> Any:
    try:
        return study.best_trial
    except ValueError:  # no completed trial yet
        return None


def best_config(search: Search, params: dict[str, Any]) -> tuple[str, str]:
    """``(best.yaml text, command line)`` of the best parameters."""
    if search.kind == "train":
        from kgdistill.config import to_dict

        config = search.train_config(params, None)
        data = to_dict(config)
        data["progress"] = True
        text = yaml.safe_dump(data, sort_keys=False)
        return text, f"kgdistill train --config {search.out / 'best.yaml'} --out runs/best"
    options = search.options(params)
    flags = []
    for key, value in options.items():
        shown = " ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
        flags.append(f"--{key.replace('_', '-')} {shown}")
    command = (f"kgdistill distill --method {search.method} --teacher {search.teacher} --out runs/best-{search.method} "
               + " ".join(flags))
    head = f"# {search.method} options found by kgdistill hpo; run: {command}\n"
    return head + yaml.safe_dump(options, sort_keys=False), command.strip()


def write_summary(study: Any, search: Search, storage: str) -> StudyResult:
    """``study.json``, ``study.md`` and ``best.yaml`` in the search's output folder (all atomic)."""
    from kgdistill.atomicio import atomic_write_json, atomic_write_text
    from kgdistill.tables import format_table

    rows = trial_rows(study)
    best_trial = _best(study)
    best = None
    files = {"json": search.out / "study.json", "markdown": search.out / "study.md"}
    if best_trial is not None:
        text, command = best_config(search, dict(best_trial.params))
        files["best"] = search.out / "best.yaml"
        atomic_write_text(files["best"], text)
        best = {"trial": best_trial.number, "value": best_trial.value, "params": dict(best_trial.params),
                "test_mrr": best_trial.user_attrs.get("test_mrr"), "run_dir": best_trial.user_attrs.get("run_dir"),
                "config": str(files["best"]), "command": command}
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    seconds = sum(r["seconds"] or 0 for r in rows)
    summary = {"study": study.study_name, "storage": _masked(storage), "direction": "maximize",
               "objective": "validation MRR (filtered, both sides) of the kept model", "kind": search.kind,
               "method": search.method, "teacher": search.teacher, "states": counts,
               "trial_seconds": round(seconds, 2), "space": {p.key: p.as_dict() for p in search.space},
               "best": best, "trials": rows}
    atomic_write_json(files["json"], summary)
    keys = [p.key for p in search.space]
    table = [{"trial": r["trial"], "state": r["state"], "valid MRR": r["value"], "test MRR": r["test_mrr"],
              "epochs": r["epochs"], "seconds": None if r["seconds"] is None else f"{r['seconds']:.1f}",
              **{k: _short(r["params"].get(k)) for k in keys}} for r in rows]
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    lines = [f"# Study {study.study_name}", "",
             (f"{len(rows)} trials ({states}), {seconds:.0f} s of trials; objective: validation MRR (the test split "
              "is never used to select)."), ""]
    if best is not None:
        lines += [f"Best: trial {best['trial']}, validation MRR {best['value']:.4f}"
                  + (f", test MRR {best['test_mrr']:.4f}" if best["test_mrr"] is not None else "")
                  + f" ({best['run_dir']}).", "", f"Config: `{best['config']}`; run it: `{best['command']}`", ""]
    lines += [format_table(table, ["trial", "state", "valid MRR", "test MRR", "epochs", "seconds", *keys]), ""]
    atomic_write_text(files["markdown"], "\n".join(lines))
    return StudyResult(study.study_name, rows, best, files)


def _short(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.4g}")
    return value


__all__ = ["PRUNERS", "SAMPLERS", "Param", "Search", "StudyResult", "hpo", "load_space", "open_storage", "parse_space",
           "write_summary"]
